"""--max-concurrency N: up to N requests run at once behind one protocol
thread, on request threads started when none is idle and reused. Replies
leave in any order (ids tell them apart), state commands apply in arrival
order before the requests read after them, and frames never interleave."""

import os
import tempfile
import textwrap
import unittest

from worker_harness import WorkerTestCase

INLINE_HANDLERS = """
    import threading
    from dspex_worker import command

    @command("where", inline=True)
    def where(args, ctx):
        return {"thread": threading.current_thread().name}
"""


class ConcurrencyTest(WorkerTestCase):
    def test_n_requests_run_at_once_and_reply_out_of_order(self):
        worker = self.start_worker("--fault-injection", "--max-concurrency", "4")
        gather = {"command": "fault_gather", "args": {"parties": 2, "timeout_s": 10, "name": "g"}}
        # 1 can only return once 3 is inside too; 2 overtakes it meanwhile.
        worker.send(dict(gather, id=1))
        worker.send({"id": 2, "command": "echo", "args": {"payload": "e"}})
        self.assertEqual(worker.read_frame(timeout=10)["id"], 2)
        worker.send(dict(gather, id=3))
        replies = [worker.read_frame(timeout=10) for _ in range(2)]
        self.assertEqual(sorted(r["id"] for r in replies), [1, 3])
        self.assertTrue(all(r["success"] for r in replies))
        self.assertNotEqual(replies[0]["result"]["thread"], replies[1]["result"]["thread"])

    def test_inline_commands_answer_while_every_request_thread_waits(self):
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, "inline_handlers.py"), "w") as module:
                module.write(textwrap.dedent(INLINE_HANDLERS))
            worker = self.start_worker("--fault-injection", "--max-concurrency", "2",
                                       "--handlers", "inline_handlers",
                                       cwd=folder)
            # Both request threads wait for a third party that never comes.
            gather = {"command": "fault_gather", "args": {"parties": 3, "timeout_s": 3, "name": "i"}}
            worker.send(dict(gather, id=1))
            worker.send(dict(gather, id=2))
            worker.send({"id": 3, "command": "ping"})
            worker.send({"id": 4, "command": "where"})
            # Queued behind them, the inline commands would only answer after both.
            self.assertEqual(worker.read_frame(timeout=10)["id"], 3)
            reply = worker.read_frame(timeout=10)
            self.assertEqual(reply["id"], 4)
            self.assertEqual(reply["result"]["thread"], "MainThread")
            waited = [worker.read_frame(timeout=10) for _ in range(2)]
            self.assertEqual(sorted(r["id"] for r in waited), [1, 2])
            self.assertTrue(all(r["error"]["type"] == "BrokenBarrierError" for r in waited))

    def test_one_at_a_time_without_the_flag(self):
        worker = self.start_worker("--fault-injection")
        for i in (1, 2):
            worker.send({"id": i, "command": "fault_gather",
                         "args": {"parties": 2, "timeout_s": 0.3, "name": "solo"}})
        for _ in (1, 2):
            reply = worker.read_frame(timeout=10)
            self.assertFalse(reply["success"])
            self.assertEqual(reply["error"]["type"], "BrokenBarrierError")

    def test_request_threads_start_lazily_and_are_reused(self):
        worker = self.start_worker("--fault-injection", "--max-concurrency", "1000")
        self.assertEqual(worker.call("get_stats")["threads"], 0)
        for i in range(5):
            self.assertEqual(worker.call("fault_echo", {"payload": i}), {"payload": i})
        self.assertEqual(worker.call("get_stats")["threads"], 1)
        gather = {"command": "fault_gather", "args": {"parties": 3, "timeout_s": 10, "name": "l"}}
        for i in range(3):
            worker.send(dict(gather, id=10 + i))
        replies = [worker.read_frame(timeout=10) for _ in range(3)]
        self.assertTrue(all(r["success"] for r in replies), replies)
        self.assertEqual(len({r["result"]["thread"] for r in replies}), 3)
        self.assertEqual(worker.call("get_stats")["threads"], 3)

    def test_state_commands_apply_before_later_requests(self):
        worker = self.start_worker("--max-concurrency", "8")
        next_id = 1
        for round_ in range(10):
            model = f"m{round_}"
            frames = [
                {"command": "configure_lm", "args": {"provider": "mock", "model": model}},
                {"command": "create_program",
                 "args": {"id": f"p{round_}", "signature": "q -> a", "replace": True}},
                {"command": "execute_program",
                 "args": {"program_id": f"p{round_}", "inputs": {"q": "x"}}},
            ]
            ids = []
            for f in frames:  # all written before any reply is read
                f.update({"id": next_id, "session_id": "s"})
                ids.append(next_id)
                next_id += 1
                worker.send(f)
            replies = {}
            for _ in frames:
                reply = worker.read_frame(timeout=10)
                replies[reply["id"]] = reply
            self.assertTrue(all(r["success"] for r in replies.values()), replies)
            self.assertEqual(replies[ids[2]]["result"]["lm"], f"mock/{model}")

    def test_mock_latency_ms_waits_on_request_threads(self):
        worker = self.start_worker("--max-concurrency", "4")
        worker.call("configure_lm", {"provider": "mock", "latency_ms": 300})
        worker.call("create_program", {"id": "p", "signature": "q -> a"})
        for i in range(4):
            worker.send({"id": 100 + i, "command": "execute_program",
                         "args": {"program_id": "p", "inputs": {"q": str(i)}}})
        replies = [worker.read_frame(timeout=10) for _ in range(4)]
        self.assertTrue(all(r["success"] for r in replies))
        error = worker.error("configure_lm", {"provider": "mock", "latency_ms": -1})
        self.assertEqual(error["type"], "ValueError")


if __name__ == "__main__":
    unittest.main()
