"""Process hygiene: how the worker ends, and what it cannot be tricked into."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

from worker_harness import (RUN_ID, WorkerTestCase, frame, pid_is_gone,
                            wait_until, worker_env)

# A handler module exercising the ways user code misuses stdin/stdout.
MISBEHAVING_HANDLERS = textwrap.dedent("""
    import os, subprocess, sys, threading, time
    from dspex_worker import command

    @command("noisy")
    def noisy(args, ctx):
        print("print to stdout")
        sys.stdout.write("sys.stdout.write\\n")
        sys.stdout.flush()
        os.write(1, b"os.write to fd 1\\n")
        subprocess.run([sys.executable, "-c", "print('child stdout')"], check=True)
        return {"ok": True}

    @command("read_stdin")
    def read_stdin(args, ctx):
        data = sys.stdin.read()
        raw = os.read(0, 100)
        try:
            input()
            eof = False
        except EOFError:
            eof = True
        return {"stdin": data, "fd0": raw.decode(), "input_eof": eof}

    @command("spawn_sleeper")
    def spawn_sleeper(args, ctx):
        child = subprocess.Popen(["sleep", "30"])
        return {"pid": child.pid}

    @command("leave_thread")
    def leave_thread(args, ctx):
        threading.Thread(target=time.sleep, args=(60,)).start()
        return {"ok": True}
""")


class HygieneTestCase(WorkerTestCase):
    @classmethod
    def setUpClass(cls):
        cls._dir = tempfile.TemporaryDirectory()
        with open(os.path.join(cls._dir.name, "misbehaving.py"), "w") as module:
            module.write(MISBEHAVING_HANDLERS)

    @classmethod
    def tearDownClass(cls):
        cls._dir.cleanup()

    def start_misbehaving(self):
        return self.start_worker("--handlers", "misbehaving", cwd=self._dir.name)


class ExitTest(WorkerTestCase):
    def test_eof_exits_zero_promptly(self):
        worker = self.start_worker()
        worker.call("ping")
        started = time.monotonic()
        worker.close_stdin()
        self.assertExitCode(worker, 0)
        self.assertLess(time.monotonic() - started, 2.0)

    def test_eof_before_any_request(self):
        worker = self.start_worker()
        worker.close_stdin()
        self.assertExitCode(worker, 0)

    def test_eof_mid_frame_exits_zero(self):
        for partial in (b"\x00\x00", frame({"id": 1, "command": "ping"})[:-5]):
            with self.subTest(partial=partial):
                worker = self.start_worker()
                worker.send_raw(partial)
                worker.close_stdin()
                self.assertExitCode(worker, 0)
                self.assertEqual(worker.read_until_eof(), b"")

    def test_sigterm_while_idle_exits_zero(self):
        worker = self.start_worker()
        worker.call("ping")  # handlers are installed once it answers
        worker.signal(signal.SIGTERM)
        self.assertExitCode(worker, 0)

    def test_sigterm_during_a_request_exits_zero(self):
        worker = self.start_worker("--fault-injection")
        worker.call("ping")
        worker.send({"id": 1, "command": "fault_sleep", "args": {"seconds": 30}})
        time.sleep(0.2)
        worker.signal(signal.SIGTERM)
        self.assertExitCode(worker, 0)

    def test_sigint_is_ignored(self):
        worker = self.start_worker()
        worker.call("ping")
        worker.signal(signal.SIGINT)
        time.sleep(0.1)
        self.assertTrue(worker.alive())
        self.assertEqual(worker.call("ping")["status"], "ok")

    def test_shutdown_replies_then_exits_zero(self):
        worker = self.start_worker()
        self.assertEqual(worker.call("shutdown"), {"status": "shutting_down"})
        self.assertExitCode(worker, 0)
        self.assertEqual(worker.read_until_eof(), b"")

    def test_starts_and_serves_with_stderr_closed(self):
        worker = self.start_worker("--fault-injection", preexec_fn=lambda: os.close(2))
        self.assertEqual(worker.call("fault_print", {"text": "nowhere"}),
                         {"printed": "nowhere"})
        self.assertEqual(worker.call("ping")["status"], "ok")
        worker.close_stdin()
        self.assertExitCode(worker, 0)

    def test_bad_command_line_exits_two(self):
        worker = self.start_worker("--max-frame-bytes", "zero")
        self.assertExitCode(worker, 2)

    @unittest.skipUnless(sys.platform.startswith("linux"), "PR_SET_PDEATHSIG is Linux-only")
    def test_worker_dies_with_its_parent(self):
        """SIGKILL the worker's parent while the worker's input stays open.

        The test keeps the write end of the worker's stdin, so EOF cannot be
        what ends it: only the parent-death signal can.
        """
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        parent_code = textwrap.dedent(f"""
            import subprocess, sys, time
            worker = subprocess.Popen(
                [sys.executable, "-m", "dspex_worker", "--worker-id", "orphan",
                 "--run-id", {RUN_ID!r}], stdin={in_r}, stdout={out_w})
            print(worker.pid, flush=True)
            time.sleep(60)
        """)
        parent = subprocess.Popen([sys.executable, "-c", parent_code],
                                  stdout=subprocess.PIPE, env=worker_env(),
                                  pass_fds=(in_r, out_w))
        os.close(in_r)
        os.close(out_w)
        worker_pid = None
        try:
            worker_pid = int(parent.stdout.readline())
            # Once it answers, its death signal is armed.
            os.write(in_w, frame({"id": 1, "command": "ping"}))
            with os.fdopen(out_r, "rb", closefd=False) as out:
                self.assertGreater(len(out.read(4)), 0)
            parent.kill()
            parent.wait(5)
            self.assertTrue(wait_until(lambda: pid_is_gone(worker_pid), 5),
                            "worker outlived its parent")
        finally:
            if worker_pid is not None and not pid_is_gone(worker_pid):
                os.kill(worker_pid, signal.SIGKILL)
            parent.kill()
            parent.wait(5)
            parent.stdout.close()
            os.close(in_w)
            os.close(out_r)


class StdioTest(HygieneTestCase):
    def test_prints_and_child_output_go_to_stderr(self):
        worker = self.start_misbehaving()
        self.assertEqual(worker.call("noisy"), {"ok": True})
        self.assertEqual(worker.call("echo", {"payload": "after"}), {"payload": "after"})
        worker.close_stdin()
        self.assertExitCode(worker, 0)
        stderr = worker.stderr_text()
        for text in ("print to stdout", "sys.stdout.write", "os.write to fd 1", "child stdout"):
            self.assertIn(text, stderr)

    def test_handler_reading_stdin_sees_eof_and_the_stream_survives(self):
        worker = self.start_misbehaving()
        result = worker.call("read_stdin")
        self.assertEqual(result, {"stdin": "", "fd0": "", "input_eof": True})
        self.assertEqual(worker.call("ping")["status"], "ok")

    def test_grandchild_does_not_hold_the_protocol_pipe(self):
        worker = self.start_misbehaving()
        sleeper = worker.call("spawn_sleeper")["pid"]
        try:
            worker.close_stdin()
            self.assertExitCode(worker, 0)
            # EOF on the worker's stdout proves no one else holds its write end.
            self.assertEqual(worker.read_until_eof(timeout=2), b"")
        finally:
            os.kill(sleeper, signal.SIGKILL)

    def test_leftover_non_daemon_thread_does_not_block_exit(self):
        worker = self.start_misbehaving()
        worker.call("leave_thread")
        worker.close_stdin()
        self.assertExitCode(worker, 0, timeout=5)


if __name__ == "__main__":
    unittest.main()
