"""Bounded memory: a worker keeps nothing of a session after cleanup_session.

The host sends cleanup_session to every worker when a session ends or
expires. Two rounds of many unique sessions, each leaving programs and
session state behind until its cleanup: the worker's RSS after round 2 must
stay close to its RSS after round 1 (round 1 warms up the interpreter's
allocator), and its stats must show no session and no program.
"""

import os
import tempfile
import textwrap

from worker_harness import WorkerTestCase

SESSIONS_PER_ROUND = 3000
# Per session, far more than what an id costs: a leak of it shows plainly.
STATE_BYTES = 2048

HANDLERS = """
    from dspex_worker import command

    @command("remember")
    def remember(args, ctx):
        ctx.session_state["blob"] = "x" * args["size"]
        return {"ok": True}
"""


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class SessionMemoryTest(WorkerTestCase):
    def setUp(self):
        self._dir = tempfile.TemporaryDirectory()
        self.addCleanup(self._dir.cleanup)
        with open(os.path.join(self._dir.name, "memory_handlers.py"), "w") as module:
            module.write(textwrap.dedent(HANDLERS))

    def run_round(self, worker, prefix):
        for i in range(SESSIONS_PER_ROUND):
            sid = f"{prefix}-{i}"
            worker.call("create_program", {"id": "p", "signature": "question -> answer"},
                        session_id=sid)
            worker.call("remember", {"size": STATE_BYTES}, session_id=sid)
            # As the pool sends it: the session in the request and in args.
            cleaned = worker.call("cleanup_session", {"session_id": sid}, session_id=sid)
            self.assertEqual(cleaned["cleaned"], 1)
        stats = worker.call("get_stats")
        self.assertEqual((stats["sessions"], stats["programs"]), (0, 0))
        return rss_kb(worker.pid)

    def test_cleaned_sessions_leave_nothing_behind(self):
        worker = self.start_worker("--handlers", "memory_handlers", cwd=self._dir.name)
        after1 = self.run_round(worker, "a")
        after2 = self.run_round(worker, "b")
        # 3000 leaked sessions would be > 6 MB here.
        self.assertLess(after2 - after1, 1024,
                        f"worker RSS grew from {after1} kB to {after2} kB")
