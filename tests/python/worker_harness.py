"""Test harness: spawn the real worker (python3 -m dspex_worker) and speak frames.

Every read has a timeout, and every worker is killed and reaped in cleanup, so
a broken worker fails a test instead of hanging the suite or leaking a process.
"""

import json
import os
import select
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

PYTHON_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "python"))
# In every worker's argv, so a leftover from this suite is easy to spot.
RUN_ID = f"pytest-{os.getpid()}"
DEFAULT_TIMEOUT = 5.0

_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY",
               "all_proxy", "ALL_PROXY")


def worker_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = PYTHON_DIR
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Deterministic built-in predictor even on a machine where dspy exists.
    env["DSPEX_DISABLE_DSPY"] = "1"
    # The LM tests talk to a stub on 127.0.0.1; no proxy may intercept that.
    for name in _PROXY_VARS:
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("OPENAI_API_KEY", None)
    if extra:
        env.update(extra)
    return env


def frame(obj_or_bytes):
    payload = obj_or_bytes if isinstance(obj_or_bytes, bytes) else \
        json.dumps(obj_or_bytes).encode("utf-8")
    return len(payload).to_bytes(4, "big") + payload


class WorkerProcess:
    def __init__(self, *flags, worker_id="t1", cwd=None, env=None, preexec_fn=None):
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dspex_worker", "--worker-id", worker_id,
             "--run-id", RUN_ID, *flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            cwd=cwd, env=env or worker_env(), bufsize=0, preexec_fn=preexec_fn)
        self.pid = self.proc.pid
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        self._buf = bytearray()
        self._next_id = 1

    # -- writing -------------------------------------------------------------

    def send_raw(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view):]

    def send(self, obj_or_bytes):
        self.send_raw(frame(obj_or_bytes))

    def close_stdin(self):
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    # -- reading -------------------------------------------------------------

    def _fill(self, deadline):
        """Read what is available; returns False on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("worker did not answer in time")
        ready, _, _ = select.select([self._out], [], [], remaining)
        if not ready:
            raise TimeoutError("worker did not answer in time")
        chunk = os.read(self._out, 1 << 20)
        if not chunk:
            return False
        self._buf += chunk
        return True

    def read_exact(self, n, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while len(self._buf) < n:
            if not self._fill(deadline):
                raise EOFError(f"worker stdout closed after {len(self._buf)} of {n} bytes")
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def read_until_eof(self, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def read_frame(self, timeout=DEFAULT_TIMEOUT):
        length = int.from_bytes(self.read_exact(4, timeout), "big")
        return json.loads(self.read_exact(length, timeout).decode("utf-8"))

    def assert_no_output(self, wait_s=0.2):
        ready, _, _ = select.select([self._out], [], [], wait_s)
        if ready or self._buf:
            raise AssertionError("worker wrote unexpected output")

    # -- requests -------------------------------------------------------------

    def request(self, command, args=None, session_id=None, timeout=DEFAULT_TIMEOUT):
        request_id = self._next_id
        self._next_id += 1
        self.send({"id": request_id, "command": command, "args": args or {},
                   "session_id": session_id})
        reply = self.read_frame(timeout)
        if reply.get("id") != request_id:
            raise AssertionError(f"reply id {reply.get('id')} != request id {request_id}: {reply}")
        return reply

    def call(self, command, args=None, session_id=None, timeout=DEFAULT_TIMEOUT):
        """request() that expects success and returns the result."""
        reply = self.request(command, args, session_id, timeout)
        if not reply.get("success"):
            raise AssertionError(f"{command} failed: {reply.get('error')}")
        return reply["result"]

    def error(self, command, args=None, session_id=None, timeout=DEFAULT_TIMEOUT):
        """request() that expects failure and returns the error object."""
        reply = self.request(command, args, session_id, timeout)
        if reply.get("success") is not False:
            raise AssertionError(f"{command} unexpectedly succeeded: {reply}")
        return reply["error"]

    def stream(self, command, args=None, session_id=None, window=8,
               timeout=DEFAULT_TIMEOUT):
        """A streaming request, each chunk acked as it is read: (the chunks'
        data in order, the final reply)."""
        request_id = self._next_id
        self._next_id += 1
        self.send({"id": request_id, "command": command, "args": args or {},
                   "session_id": session_id, "stream": window})
        chunks = []
        while True:
            message = self.read_frame(timeout)
            if message.get("id") != request_id:
                raise AssertionError(f"frame for id {message.get('id')} during {request_id}: {message}")
            if message.get("type") != "chunk":
                return chunks, message
            if message["seq"] != len(chunks):
                raise AssertionError(f"chunk seq {message['seq']} after {len(chunks)} chunks")
            chunks.append(message["data"])
            self.send({"type": "ack", "id": request_id, "seq": message["seq"]})

    # -- process ----------------------------------------------------------------

    def wait(self, timeout=DEFAULT_TIMEOUT):
        return self.proc.wait(timeout)

    def signal(self, signum):
        self.proc.send_signal(signum)

    def alive(self):
        return self.proc.poll() is None

    def stderr_text(self):
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(DEFAULT_TIMEOUT)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if not stream.closed:
                    stream.close()
            self._stderr.close()


class WorkerTestCase(unittest.TestCase):
    """Base class: start_worker() returns a worker that is always cleaned up."""

    def start_worker(self, *flags, **kwargs):
        worker = WorkerProcess(*flags, **kwargs)
        self.addCleanup(worker.stop)
        return worker

    def assertExitCode(self, worker, expected, timeout=DEFAULT_TIMEOUT):
        try:
            code = worker.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"worker still running after {timeout} s")
        self.assertEqual(code, expected, worker.stderr_text())


class HandlerModuleTestCase(WorkerTestCase):
    """Workers that load handler modules written for the test: MODULES maps
    a file name ("my_handlers.py") to its source (dedented)."""

    MODULES = {}

    @classmethod
    def setUpClass(cls):
        cls._dir = tempfile.TemporaryDirectory()
        for name, source in cls.MODULES.items():
            with open(os.path.join(cls._dir.name, name), "w") as module:
                module.write(textwrap.dedent(source))

    @classmethod
    def tearDownClass(cls):
        cls._dir.cleanup()

    def start_with(self, handlers, *flags, **kwargs):
        """A worker with --handlers `handlers`, run in the modules' folder."""
        return self.start_worker("--handlers", handlers, *flags,
                                 cwd=self._dir.name, **kwargs)


def pid_is_gone(pid):
    """True when pid no longer runs (a zombie awaiting its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

