"""The request loop and the state one worker process keeps between requests.

With max_concurrency 1 (the default) requests are served strictly one at a
time, in arrival order: read a frame, run its handler, write its reply.
With N > 1 this thread keeps reading and hands each request to one of N
request threads, which writes its reply itself (the channel serializes
writes; replies may leave out of order, ids tell them apart). Commands that
change what later requests see (STATE_COMMANDS) still run on the protocol
thread, in arrival order: a request read after them runs with their effect,
which is what the host's replay before a request relies on. So do inline
commands (registry.py: ping, echo, get_stats, ...), whose hand-off to a
request thread would cost more than they do. Nothing a
handler does (raise, sys.exit, return something unencodable) may break the
loop; only SIGTERM, EOF, the shutdown command and an unrecoverable framing
error end it.
"""

import os
import queue
import threading
import time

from . import hygiene
from .log import log
from .programs import ProgramStore
from .protocol import (FrameTooLarge, ProtocolError, TruncatedFrame,
                       decode_request, encode_failure, encode_success)
from .registry import NO_REPLY, CommandContext, InvalidArgs

# Exit codes, as the host sees them.
EXIT_OK = 0
EXIT_FRAME_TOO_LARGE = 2

# Run on the protocol thread even with max_concurrency > 1 (see above).
STATE_COMMANDS = frozenset({"configure_lm", "create_program", "delete_program",
                            "cleanup_session", "shutdown"})


class Worker:
    def __init__(self, *, worker_id, run_id, mode, channel, registry,
                 fault_injection=False, max_concurrency=1):
        self.worker_id = worker_id
        self.run_id = run_id
        self.mode = mode
        self.channel = channel
        self.registry = registry
        self.fault_injection = fault_injection
        self.max_concurrency = max_concurrency
        self.pid = os.getpid()

        self.programs = ProgramStore()
        # LMs per session (configure_lm in a session), and the default one
        # (configure_lm without a session: the host's pool default) for
        # anonymous requests and sessions that configured none.
        self.lm = None
        self._session_lms = {}        # session_id -> LM client
        self.lm_configured = {}       # session_id (None: default) -> configure_lm calls
        self.user_state = {}          # ctx.state
        self._session_states = {}     # session_id -> ctx.session_state
        self.held_memory = []         # fault_alloc with "hold": a deliberate leak

        self.requests = 0             # counted on the protocol thread
        self.errors = 0               # counted by request threads too: locked
        self._errors_lock = threading.Lock()
        self.started_monotonic = time.monotonic()
        self.last_activity = time.time()
        self.stop_after_reply = False  # set by the shutdown command

    # -- state helpers used by commands ---------------------------------------

    def _count_error(self):
        with self._errors_lock:
            self.errors += 1

    def uptime_s(self):
        return time.monotonic() - self.started_monotonic

    def session_state(self, session_id):
        state = self._session_states.get(session_id)
        if state is None:  # setdefault: two request threads get one dict
            state = self._session_states.setdefault(session_id, {})
        return state

    def set_lm(self, session_id, lm):
        if session_id is None:
            self.lm = lm
        else:
            self._session_lms[session_id] = lm
        self.lm_configured[session_id] = self.lm_configured.get(session_id, 0) + 1

    def lm_for(self, session_id):
        """The session's own LM, else the default one (None: no LM)."""
        return self._session_lms.get(session_id, self.lm)

    def drop_session(self, session_id):
        """Forget a session's programs, LM and state; returns programs removed."""
        self._session_states.pop(session_id, None)
        if session_id is not None:
            self._session_lms.pop(session_id, None)
            self.lm_configured.pop(session_id, None)
        return self.programs.drop_session(session_id)

    def session_count(self):
        ids = set(self.programs.session_ids())
        ids.update(self._session_lms)
        # list(): one step under the GIL, while request threads add states
        ids.update(sid for sid, state in list(self._session_states.items()) if state)
        ids.discard(None)
        return len(ids)

    # -- the loop ------------------------------------------------------------

    def _next_frame(self, read_frame):
        """(payload, None), or (None, exit code) when the input ended or broke."""
        try:
            payload = read_frame()
        except FrameTooLarge as exc:
            log(f"fatal: {exc}; exiting")
            self._write_quietly(encode_failure(0, "FrameTooLarge", str(exc)))
            return None, EXIT_FRAME_TOO_LARGE
        except TruncatedFrame as exc:
            log(f"{exc}; host gone, exiting")
            return None, EXIT_OK
        if payload is None:
            return None, EXIT_OK
        return payload, None

    def serve(self):
        """Serve until EOF, shutdown or a fatal framing error; returns the exit code."""
        if self.max_concurrency > 1:
            return self._serve_concurrently()
        channel = self.channel
        read_frame = channel.read_frame
        write_frame = channel.write_frame
        handle = self.handle
        while True:
            payload, code = self._next_frame(read_frame)
            if payload is None:
                return code

            reply = handle(payload)
            if reply is not None:
                try:
                    write_frame(reply)
                except BrokenPipeError:
                    log("protocol output closed by the host; exiting")
                    return EXIT_OK
            if self.stop_after_reply or hygiene.termination_requested():
                return EXIT_OK

    def _serve_concurrently(self):
        read_frame = self.channel.read_frame
        on_this_thread = STATE_COMMANDS | self.registry.inline_names()
        jobs = queue.SimpleQueue()
        # Daemon threads: a handler stuck in Python must not hold the exit.
        for n in range(self.max_concurrency):
            threading.Thread(target=self._request_thread, args=(jobs,),
                             name=f"dspex-request-{n}", daemon=True).start()
        while True:
            payload, code = self._next_frame(read_frame)
            if payload is None:
                return code
            request = self.decode(payload)
            if isinstance(request, bytes):  # a protocol error's reply
                self._write_quietly(request)
            elif request[1] in on_this_thread:
                self._reply(self.run(*request))
            else:
                jobs.put(request)
            if self.stop_after_reply or hygiene.termination_requested():
                return EXIT_OK

    def _request_thread(self, jobs):
        while True:
            self._reply(self.run(*jobs.get()))

    def _reply(self, reply):
        if reply is None:
            return
        try:
            self.channel.write_frame(reply)
        except BrokenPipeError:
            log("protocol output closed by the host")

    def handle(self, payload):
        """Turn one request frame into one reply frame (None: no reply)."""
        request = self.decode(payload)
        if isinstance(request, bytes):
            return request
        return self.run(*request)

    def decode(self, payload):
        """(id, command, args, session_id), or the reply to a bad frame."""
        self.requests += 1
        self.last_activity = time.time()
        try:
            return decode_request(payload)
        except ProtocolError as exc:
            # InvalidRequest included: the caller's input, answered to its
            # request (not logged: a caller must not fill the log).
            self._count_error()
            if exc.error_type == "ProtocolError":
                log(f"protocol error: {exc}")
            return encode_failure(exc.request_id, exc.error_type, str(exc))

    def run(self, request_id, name, args, session_id):
        """Run one decoded request; its reply frame (None: no reply)."""
        handler = self.registry.get(name)
        if handler is None:
            self._count_error()
            return encode_failure(request_id, "UnknownCommand",
                                  self._unknown_message(name))

        try:
            result = handler(args, CommandContext(self, request_id, session_id))
        except BaseException as exc:
            # SIGTERM arrives as SystemExit and must still end the worker; any
            # other SystemExit/KeyboardInterrupt is the handler's own doing and
            # is reported like any exception (SIGINT is ignored, so it cannot
            # be a real Ctrl-C).
            if hygiene.termination_requested():
                raise
            self._count_error()
            return _failure_from_exception(request_id, exc)

        if result is NO_REPLY:
            return None
        try:
            reply = encode_success(request_id, result)
        except Exception as exc:  # RecursionError included: a result nested too deep
            self._count_error()
            return _failure_from_exception(
                request_id, exc,
                f"result of command {name!r} cannot be sent as JSON: {exc}")
        if len(reply) > self.channel.max_frame_bytes:
            # The host would refuse it and lose the stream; a small classified
            # error keeps both sides in step.
            self._count_error()
            return encode_failure(
                request_id, "FrameTooLarge",
                f"reply of {len(reply)} bytes to {name!r} exceeds the limit of "
                f"{self.channel.max_frame_bytes} bytes")
        return reply

    def _unknown_message(self, name):
        message = f"unknown command {name!r}"
        if name.startswith("fault_") and not self.fault_injection:
            message += " (fault commands need --fault-injection)"
        return message

    def _write_quietly(self, frame):
        try:
            self.channel.write_frame(frame)
        except OSError:
            pass


def _failure_from_exception(request_id, exc, message=None):
    if isinstance(exc, InvalidArgs):
        # The caller's mistake, named in the message: no traceback to show.
        return encode_failure(request_id, InvalidArgs.error_type, str(exc))
    import traceback  # only failures pay for it
    if message is None:
        message = _exception_message(exc)
    return encode_failure(request_id, type(exc).__name__, message,
                          traceback.format_exc())


def _exception_message(exc):
    # str(KeyError("x")) is "'x'": show the message itself, not its repr.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)
