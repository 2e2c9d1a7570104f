"""The request loop and the state one worker process keeps between requests.

The protocol thread (the main thread) reads every frame, so a cancel or an
ack is seen while handlers run. Commands that change what later requests
see (STATE_COMMANDS) run on it in arrival order: a request read after them
runs with their effect, which is what the host's replay before a request
relies on. So do inline commands (registry.py: ping, echo, get_stats, ...),
whose hand-off would cost more than they do. Every other request is a Call:
a sync handler (a generator too) runs on a request thread, started when
none is idle, reused, ended after IDLE_THREAD_S idle; an `async def` or
async generator runs on the worker's one event loop, in its own thread
started on first use. At most max_concurrency Calls run at once (the host
keeps at most that many in flight); more wait, in arrival order. A Call
writes its own chunks and reply (the channel serializes writes; ids tell
replies apart).

A cancel frame cancels an async handler's task; a sync handler gets
Cancelled raised in its thread (PyThreadState_SetAsyncExc), but only while
that request's own code runs there, at most once, and a pending one is
cleared when that code returns (_Slot, _in_window); a suspended generator
is closed. Every cancelled request is answered with error type "cancelled".
ctx.call (host_calls.py) steps out of that window while it sends and waits:
a cancel wakes its wait, and it raises Cancelled itself.
Nothing a handler does (raise, sys.exit, return something unencodable) may
break the loop; only SIGTERM, EOF, the shutdown command and an
unrecoverable framing error end it.
"""

import collections
import functools
import os
import queue
import sys
import threading
import time
import types

from . import hygiene, limits
from .host_calls import HostCalls
from .log import log
from .programs import ProgramStore
from .protocol import (HEADER_BYTES, JOIN_BYTES, FrameTooLarge,
                       MalformedControl, ProtocolError, Request,
                       TruncatedFrame, decode_message, encode_chunk,
                       encode_failure, encode_str, encode_success)
from .registry import (NO_REPLY, SAME, Cancelled, CommandContext, HostCallError,
                       InvalidArgs, is_async)

# Exit codes, as the host sees them.
EXIT_OK = 0
EXIT_FRAME_TOO_LARGE = 2

# Run on the protocol thread, in arrival order (see above).
STATE_COMMANDS = frozenset({"configure_lm", "create_program", "delete_program",
                            "cleanup_session", "shutdown"})

# The GIL's switch interval in a worker (see serve).
SWITCH_INTERVAL_S = 0.001

# A request thread idle this long ends (a burst of 1000 leaves no 1000 threads).
IDLE_THREAD_S = 30.0

_GENERATOR = types.GeneratorType
_ASYNC_RESULTS = (types.CoroutineType, types.AsyncGeneratorType)
_CANCELLED_STEP = (None, None)
# A stream's byte window when the host sent none: no bound by bytes.
_NO_BYTE_WINDOW = 1 << 62


class Call(CommandContext):
    """The ctx of a request that runs off the protocol thread, and what its
    cancel and acks act on."""

    __slots__ = ("name", "args", "handler", "on_loop", "slot",
                 "async_sent", "acked", "credit", "waiter", "task",
                 "pending_calls", "ended", "answered_cancelled",
                 "window_bytes", "sent_bytes", "acked_bytes", "sent_ends",
                 "ends_base")

    def __init__(self, worker, request, handler, on_loop):
        super().__init__(worker, request.id, request.session_id,
                         _deadline(request), request.stream)
        self.name = request.command
        self.args = request.args
        self.handler = handler
        self.on_loop = on_loop
        self.slot = None                  # the request thread it runs on
        self.async_sent = False           # Cancelled was raised in it
        self.acked = -1                   # the last chunk the host took
        # The byte window (the request's "stream_bytes"; docs/architecture.md
        # "Streams and cancellation"): chunk s goes while s <= acked + stream
        # and sent_bytes - acked_bytes < window_bytes. sent_ends[i]: the
        # sent_bytes total through chunk ends_base + i, for the acks to come
        # (appended before the chunk is written, so its ack finds it).
        self.window_bytes = request.stream_bytes or _NO_BYTE_WINDOW
        self.sent_bytes = 0               # chunk frame bodies written
        self.acked_bytes = 0              # ... of them through chunk `acked`
        self.sent_ends = [] if request.stream else None
        self.ends_base = 0
        self.credit = threading.Condition() if request.stream else None
        self.waiter = None                # a loop future an ack resolves
        self.task = None
        self.pending_calls = None         # K -> its host call in flight
        self.ended = False                # answered: no more host calls
        self.answered_cancelled = False   # its reply is "cancelled"

    def call(self, target, command, args=None, *, timeout=None, session=SAME):
        """Call `command` on the host's target ("pool:NAME" or "fn:NAME");
        its result, or HostCallError. Blocks a thread; on an event loop it
        returns a future (`await ctx.call(...)`). docs/handlers.md."""
        asyncio = sys.modules.get("asyncio")
        loop = None if asyncio is None else asyncio._get_running_loop()
        host_calls = self.worker.host_calls
        if loop is not None:
            return host_calls.call_async(self, loop, target, command, args,
                                         timeout, session)
        slot = self.slot
        if slot is not None and slot.ident != threading.get_ident():
            slot = None               # a thread of the handler's own
        # Reopened after the call only if it was open: a generator's finally
        # run by close() calls from outside its window, and must leave it
        # closed (a cancel raised there would land in the worker's code).
        reopen = slot is not None and slot.running is self
        if slot is not None and not _enter(slot, self, stepping_out=True):
            raise Cancelled(f"request {self.request_id} was cancelled")
        try:
            ok, value = host_calls.call_sync(self, target, command, args,
                                             timeout, session)
        finally:
            if reopen:                # cancelled meanwhile: raised below
                _enter(slot, self)
        if self.cancelled:
            raise Cancelled(f"request {self.request_id} was cancelled")
        if ok:
            return value
        raise value


class _Slot:
    """A request thread, and the Call whose own code runs on it now
    (running, under lock): the only place a cancel may raise Cancelled."""

    __slots__ = ("lock", "ident", "running")

    def __init__(self):
        self.lock = threading.Lock()
        self.ident = threading.get_ident()
        self.running = None


def _raise_in(thread_ident, exc_type):
    """Cancelled raised in that thread at its next bytecode (None: clear a
    pending one)."""
    import ctypes
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_ident),
        None if exc_type is None else ctypes.py_object(exc_type))


def _enter(slot, call, stepping_out=False):
    """Open the window (stepping_out: close it while the call's own code
    waits on a host call); False when the request is cancelled already."""
    with slot.lock:
        if call.cancelled:
            return False
        slot.running = None if stepping_out else call
        return True


def _leave(slot, call):
    with slot.lock:
        slot.running = None
        if call.async_sent:
            _raise_in(slot.ident, None)


def _in_window(slot, call, fn, arg1, arg2=None):
    """fn(arg1[, arg2]) where a cancel may raise Cancelled: (True, value),
    (False, exception), or _CANCELLED_STEP. Cancelled lands at most once per
    request and only between _enter and _leave, so it lands inside one of
    the two try blocks below, never in the caller's code."""
    step = _CANCELLED_STEP
    try:
        if _enter(slot, call):
            try:
                step = (True, fn(arg1) if arg2 is None else fn(arg1, arg2))
            except Cancelled as exc:
                # The handler's own raise, unless ours was sent: then ours
                # may still be pending (the handler raised before a bytecode
                # that delivers it), and _leave below, inside this try,
                # takes it in.
                step = _CANCELLED_STEP if call.async_sent else (False, exc)
            except BaseException as exc:
                step = (False, exc)
            _leave(slot, call)
    except Cancelled:
        _leave(slot, call)
        step = _CANCELLED_STEP
    return step


def _deadline(request):
    timeout_ms = request.timeout_ms
    return None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0


def _drain(gen):
    """A generator called without a stream: its return value, else the list
    of what it yielded."""
    values = []
    append = values.append
    while True:
        try:
            append(next(gen))
        except StopIteration as stop:
            return values if stop.value is None else stop.value


def _close(gen):
    try:
        gen.close()
    except BaseException as exc:  # its finally raised: the reply is decided
        log(f"closing a cancelled generator raised {type(exc).__name__}: {exc}")


async def _collect(agen):
    return [value async for value in agen]


def _wake(future):
    if not future.done():
        future.set_result(None)


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
        self.cancelled = 0            # requests answered "cancelled" (locked)
        self.cancels_ignored = 0      # cancels for an id not in flight (or crossing its reply)
        self.bad_control_frames = 0   # malformed cancel/ack frames, ignored
        self._errors_lock = threading.Lock()
        self.host_calls = HostCalls(channel)  # ctx.call in flight

        self._calls = {}              # request id -> Call in flight
        self._kinds = {}              # handler -> runs on the event loop
        # Admission: at most max_concurrency Calls run, the rest wait.
        self._admit = threading.Lock()
        self._all_done = threading.Condition(self._admit)
        self._active = 0
        self._waiting = collections.deque()
        # Request threads: started when none is idle, reused.
        self._jobs = queue.SimpleQueue()
        self._pool_lock = threading.Lock()
        self._idle = 0
        self.threads = 0
        self._threads_started = 0
        # The event loop of async handlers, started on first use.
        self._loop = None
        self._loop_lock = threading.Lock()
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

    def in_flight(self):
        return len(self._calls)

    # -- the protocol thread -------------------------------------------------

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
        # A frame read while a handler computes waits for the GIL up to the
        # switch interval (5 ms by default), and so does the Cancelled it
        # raises: 1 ms keeps a cancel prompt. It costs nothing while the
        # protocol thread sleeps in its read, the common case.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        read_frame = self.channel.read_frame
        write_frame = self.channel.write_frame
        here = STATE_COMMANDS | self.registry.inline_names()
        get_handler = self.registry.get
        while True:
            payload, code = self._next_frame(read_frame)
            if payload is None:
                if code == EXIT_OK:
                    self.host_calls.close()
                    self._drain()
                return code
            try:
                request = decode_message(payload)
            except MalformedControl as exc:
                self.bad_control_frames += 1
                log(f"ignored a malformed control frame: {exc}")
                if exc.call is not None:  # its call fails: no answer will come
                    self.host_calls.settle(exc.call, (False, HostCallError(
                        exc.error_class, f"malformed result frame: {exc}")), True)
                continue
            except ProtocolError as exc:
                reply = self._bad_request(exc)
            else:
                if type(request) is not Request:
                    self._control(request)
                    continue
                self.requests += 1
                self.last_activity = time.time()
                name = request.command
                handler = get_handler(name)
                if handler is None:
                    self._count_error()
                    reply = encode_failure(request.id, "UnknownCommand",
                                           self._unknown_message(name))
                elif name in here:
                    reply = self.run(handler, request)
                else:
                    self._submit(request, handler)
                    continue
            if reply is not None:
                try:
                    write_frame(reply)
                except BrokenPipeError:
                    log("protocol output closed by the host; exiting")
                    return EXIT_OK
            if self.stop_after_reply or hygiene.termination_requested():
                return EXIT_OK

    def _bad_request(self, exc):
        # InvalidRequest included: the caller's input, answered to its
        # request (not logged: a caller must not fill the log).
        self.requests += 1
        self.last_activity = time.time()
        self._count_error()
        if exc.error_type == "ProtocolError":
            log(f"protocol error: {exc}")
        return encode_failure(exc.request_id, exc.error_type, str(exc))

    def run(self, handler, request):
        """Run a request on this thread (state and inline commands); its
        reply frame (None: no reply)."""
        # No chunks from here (ctx.stream None): a generator is drained.
        ctx = CommandContext(self, request.id, request.session_id,
                             _deadline(request))
        try:
            result = handler(request.args, ctx)
            if type(result) is _GENERATOR:
                result = _drain(result)
        except BaseException as exc:
            # SIGTERM arrives as SystemExit and must still end the worker; any
            # other SystemExit/KeyboardInterrupt is the handler's own doing and
            # is reported like any exception (SIGINT is ignored, so it cannot
            # be a real Ctrl-C).
            if hygiene.termination_requested():
                raise
            return self._failure(request.id, exc)
        return self._result_reply(request.id, request.command, result)

    def _control(self, frame):
        kind, request_id, seq = frame
        if kind == "result":          # request_id: the host call's K
            self.host_calls.settle(request_id, seq)
            return
        if kind == "ack":
            call = self._calls.get(request_id)
            if call is not None and call.stream:
                self._ack(call, seq)
            return
        # Under _admit, as _finish takes the call out: a cancel that crosses
        # a reply decided already is counted ignored there.
        with self._admit:
            call = self._calls.get(request_id)
            live = call is not None and not call.cancelled
            if live:
                call.cancelled = True
            else:
                self.cancels_ignored += 1
        if live:
            self._cancel(call)

    def _ack(self, call, seq):
        if seq <= call.acked:
            return
        credit = call.credit
        with credit:
            ends = call.sent_ends
            # Chunks this ack takes; an ack past what was sent (a host's
            # mistake) takes what was.
            taken = min(seq + 1 - call.ends_base, len(ends))
            if taken > 0:
                call.acked_bytes = ends[taken - 1]
                del ends[:taken]
                call.ends_base += taken
            call.acked = seq
            credit.notify()
        waiter = call.waiter
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    def _cancel(self, call):
        """Stop a Call: whatever it runs ends with the reply "cancelled"."""
        # First, before slot.running is looked at below: the stream loop's
        # lock-free window (_stream) relies on this order.
        call.cancelled = True
        call._wake()                  # ctx.sleep returns
        self.host_calls.cancel_request(call)  # ctx.call raises Cancelled
        credit = call.credit
        if credit is not None:
            with credit:
                credit.notify()       # a stream waiting for credit stops
        with self._admit:
            waiting = call in self._waiting
            if waiting:
                self._waiting.remove(call)
        if waiting:                   # never started: answered here
            self._calls.pop(call.request_id, None)
            self._reply(self._cancelled_reply(call))
            return
        if call.on_loop:
            loop = self._loop         # None: not begun, and it checks first
            if loop is not None:
                loop.call_soon_threadsafe(self._cancel_task, call)
        slot = call.slot
        if slot is not None:
            with slot.lock:
                if slot.running is call and not call.async_sent:
                    call.async_sent = True
                    _raise_in(slot.ident, Cancelled)

    def _drain(self):
        """EOF: the Calls in flight end and answer as usual; streams, which no
        ack can reach any more, are cancelled."""
        for call in list(self._calls.values()):
            if call.stream and not call.cancelled:
                self._cancel(call)
        with self._admit:
            while self._active or self._waiting:
                self._all_done.wait()

    # -- Calls: admission, answer -----------------------------------------------

    def _submit(self, request, handler):
        on_loop = self._kinds.get(handler)
        if on_loop is None:
            on_loop = self._kinds[handler] = is_async(handler)
        call = Call(self, request, handler, on_loop)
        self._calls[request.id] = call
        with self._admit:
            if self._active >= self.max_concurrency:
                self._waiting.append(call)
                return
            self._active += 1
        self._start(call)

    def _start(self, call):
        if call.on_loop:
            self._on_loop(self._begin_async, call)
        else:
            self._to_thread(call)

    def _finish(self, call, reply, thread_idle=None):
        """Answer a Call (reply None: no reply) and start the waiting Call
        admitted in its place. A request thread (thread_idle given) gets a
        sync one back to run itself; else it is counted idle before the
        slot and the reply are released, so the request they let in finds
        it idle instead of starting another thread."""
        call.ended = True             # then pending_calls: see HostCalls._start
        if call.pending_calls:
            self.host_calls.end_request(call)
        with self._admit:
            self._calls.pop(call.request_id, None)
            if call.cancelled and not call.answered_cancelled:
                self.cancels_ignored += 1  # it crossed the reply
            if self._waiting:
                following = self._waiting.popleft()
            else:
                following = None
                self._active -= 1
                if not self._active:
                    self._all_done.notify_all()
            # Idle before the slot is free: a request admitted now finds it.
            if thread_idle is not None and (following is None or following.on_loop):
                thread_idle()
        if following is not None and (thread_idle is None or following.on_loop):
            self._start(following)
            following = None
        if reply is not None:
            self._reply(reply)
        return following

    def _reply(self, reply):
        try:
            self.channel.write_frame(reply)
        except BrokenPipeError:
            log("protocol output closed by the host")

    def _cancelled_reply(self, call):
        call.answered_cancelled = True
        with self._errors_lock:
            self.cancelled += 1
        return encode_failure(call.request_id, "cancelled",
                              f"request {call.request_id} was cancelled")

    def _failure(self, request_id, exc, message=None):
        self._count_error()
        return _failure_from_exception(request_id, exc, message)

    def _result_reply(self, request_id, name, result):
        if result is NO_REPLY:
            return None
        try:
            reply = encode_success(request_id, result)
        except Exception as exc:  # RecursionError included: a result nested too deep
            return self._failure(
                request_id, exc,
                f"result of command {name!r} cannot be sent as JSON: {exc}")
        return self._fits(reply, request_id, f"reply to {name!r}")

    def _fits(self, frame, request_id, what):
        if len(frame) <= self.channel.max_frame_bytes:
            return frame
        # The host would refuse it and lose the stream; a small classified
        # error keeps both sides in step.
        self._count_error()
        return encode_failure(
            request_id, "FrameTooLarge",
            f"{what} of {len(frame)} bytes exceeds the limit of "
            f"{self.channel.max_frame_bytes} bytes")

    def _chunk(self, call, seq, value):
        """Write chunk seq; None, or the failure reply that ends the stream."""
        try:
            frame = encode_chunk(call.request_id, seq, value)
        except Exception as exc:
            return self._failure(
                call.request_id, exc,
                f"chunk {seq} of command {call.name!r} cannot be sent as JSON: {exc}")
        if len(frame) > self.channel.max_frame_bytes:
            return self._fits(frame, call.request_id, f"chunk {seq} of {call.name!r}")
        ends = call.sent_ends
        if ends is not None:          # before the write: its ack may be quick
            call.sent_bytes += len(frame)
            ends.append(call.sent_bytes)
        self._write_chunk(call, frame)
        return None

    def _write_chunk(self, call, frame):
        try:
            self.channel.write_frame(frame)
        except BrokenPipeError:
            log("protocol output closed by the host")
            call.cancelled = True     # nobody takes the rest

    # -- sync handlers: request threads ------------------------------------------

    def _to_thread(self, call):
        with self._pool_lock:
            start = not self._idle
            if start:
                self.threads += 1
                self._threads_started += 1
                number = self._threads_started
            else:
                self._idle -= 1
        self._jobs.put(call)
        if start:
            # Daemon threads: a handler stuck in Python must not hold the exit.
            threading.Thread(target=self._request_thread,
                             name=f"dspex-request-{number}", daemon=True).start()

    def _request_thread(self):
        slot = _Slot()
        jobs = self._jobs
        while True:
            try:
                try:
                    call = jobs.get(timeout=IDLE_THREAD_S)
                except queue.Empty:
                    with self._pool_lock:
                        if self._idle:  # no Call was promised to an idle thread
                            self._idle -= 1
                            self.threads -= 1
                            return
                    continue
                while call is not None:
                    call = self._run_sync(slot, call)
            except Cancelled:  # by design never here; the thread must survive it
                log("a cancel landed outside its handler; ignored")

    def _thread_idle(self):
        with self._pool_lock:
            self._idle += 1

    def _run_sync(self, slot, call):
        """Run a sync Call on this request thread and answer it; returns the
        waiting sync Call this thread runs next (None: it is idle)."""
        call.slot = slot
        ok, result = _in_window(slot, call, call.handler, call.args, call)
        gen = result if ok and type(result) is _GENERATOR else None
        if gen is not None and not call.stream:
            ok, result = _in_window(slot, call, _drain, gen)
        if call.cancelled or ok is None:
            if gen is not None:
                _close(gen)
            reply = self._cancelled_reply(call)
        elif ok is False:
            reply = self._failure(call.request_id, result)
        elif gen is not None and call.stream:
            reply = self._stream(slot, call, gen)
        elif ok and type(result) in _ASYNC_RESULTS:
            # A sync function that returned a coroutine (a wrapper): the loop
            # runs and answers it.
            call.on_loop = True
            self._on_loop(self._begin_async, call, result)
            self._thread_idle()
            return None
        else:
            reply = self._result_reply(call.request_id, call.name, result)
        return self._finish(call, reply, self._thread_idle)

    def _stream(self, slot, call, gen):
        """Send what gen yields as chunks; the final reply. _in_window,
        _chunk and Channel.write_frame unrolled: this loop is the worker's
        cost per chunk, and the calls they take cost as much as the chunk's
        own encode and write. A str value (a token) skips the encoder's
        Python-level encode()."""
        seq = 0
        window = call.stream
        window_bytes = call.window_bytes
        sent = 0                      # call.sent_bytes, kept here meanwhile
        sent_end = call.sent_ends.append
        request_id = call.request_id
        channel = self.channel
        limit = min(channel.max_frame_bytes, JOIN_BYTES)  # larger: _chunk
        # Bound once: `lock.acquire()` would build a method object per call.
        write_acquire = channel.write_lock.acquire
        write_release = channel.write_lock.release
        out_fd = channel.out_fd
        write = os.write
        head = f'{{"id":{request_id},"type":"chunk","seq":'
        while True:
            ok = None                 # None: cancelled (_CANCELLED_STEP)
            # The window around next(gen) without slot.lock while nobody
            # cancels: a lock costs as much as a chunk's write on CPython
            # 3.11 (its acquire parses arguments and reads the clock). Safe
            # because _cancel sets call.cancelled before it looks at
            # slot.running under the lock, and each step below is atomic
            # under the GIL: when call.cancelled is still False after
            # slot.running is back to None, no cancel can raise for this
            # window any more; when it is True, _leave waits on the lock
            # for a cancel that may be raising and clears what it raised.
            # A Cancelled that lands anywhere in this try is caught below.
            # (This leans on the GIL: a free-threaded build needs the lock.)
            try:
                slot.running = call
                if not call.cancelled:
                    try:
                        value = next(gen)
                        ok = True
                    except Cancelled as exc:  # as in _in_window
                        ok, value = (None if call.async_sent else False), exc
                    except BaseException as exc:
                        ok, value = False, exc
                slot.running = None
                if call.cancelled:
                    _leave(slot, call)
            except Cancelled:
                _leave(slot, call)
                ok = None
            if call.cancelled or ok is None:
                break
            if not ok:
                if isinstance(value, StopIteration):
                    return self._result_reply(request_id, call.name, value.value)
                return self._failure(request_id, value)
            if ((seq > call.acked + window or sent - call.acked_bytes >= window_bytes)
                    and not self._wait_credit(call, seq, sent)):
                break
            try:
                if type(value) is str:  # as encode_chunk writes it
                    frame = f'{head}{seq},"data":{encode_str(value)}}}'.encode()
                else:
                    frame = encode_chunk(request_id, seq, value)
            except Exception:
                frame = None          # _chunk classifies it
            if frame is not None and len(frame) <= limit:
                size = len(frame)
                sent += size
                sent_end(sent)        # before the write: its ack may be quick
                data = size.to_bytes(HEADER_BYTES, "big") + frame
                try:                  # Channel.write_frame; no Cancelled
                    write_acquire()   # can land here (slot.running is None)
                    try:
                        written = write(out_fd, data)
                        if written != len(data):
                            channel.write_rest_locked(data, written)
                    finally:
                        write_release()
                except BrokenPipeError:
                    log("protocol output closed by the host")
                    call.cancelled = True  # nobody takes the rest
            else:
                call.sent_bytes = sent
                failure = self._chunk(call, seq, value)
                sent = call.sent_bytes
                if failure is not None:
                    _close(gen)
                    return failure
            seq += 1
        _close(gen)
        return self._cancelled_reply(call)

    def _wait_credit(self, call, seq, sent):
        """Block until chunk seq may be sent, `sent` bytes of chunks gone
        before it; False when cancelled first."""
        call.sent_bytes = sent        # the stream loop's local, for _no_credit
        credit = call.credit
        with credit:
            while self._no_credit(call, seq) and not call.cancelled:
                credit.wait()
        return not call.cancelled

    @staticmethod
    def _no_credit(call, seq):
        return (seq > call.acked + call.stream
                or call.sent_bytes - call.acked_bytes >= call.window_bytes)

    # -- async handlers: the event loop ----------------------------------------

    def _on_loop(self, fn, *args):
        loop = self._loop
        if loop is None:
            loop = self._start_loop()
        loop.call_soon_threadsafe(fn, *args)

    def _start_loop(self):
        with self._loop_lock:
            if self._loop is None:
                import asyncio
                loop = asyncio.new_event_loop()
                loop.set_exception_handler(_log_loop_error)
                threading.Thread(target=_run_loop, args=(loop,),
                                 name="dspex-asyncio", daemon=True).start()
                self._loop = loop
            return self._loop

    def _begin_async(self, call, obj=None):
        """On the loop: start the Call's task (obj: a coroutine or async
        generator a sync function returned)."""
        if call.cancelled:
            if type(obj) is types.CoroutineType:
                obj.close()
            self._finish(call, self._cancelled_reply(call))
            return
        if obj is None:
            try:
                obj = call.handler(call.args, call)
            except BaseException as exc:
                self._finish(call, self._failure(call.request_id, exc))
                return
        task = self._loop.create_task(self._run_async(call, obj))
        call.task = task
        task.add_done_callback(functools.partial(self._async_done, call))

    async def _run_async(self, call, obj):
        if type(obj) is types.AsyncGeneratorType:
            if call.stream:
                return await self._async_stream(call, obj)
            result = await _collect(obj)
        elif type(obj) is types.CoroutineType or hasattr(obj, "__await__"):
            result = await obj
        else:
            result = obj              # a value: nothing to await
        return self._result_reply(call.request_id, call.name, result)

    async def _async_stream(self, call, agen):
        seq = 0
        try:
            while not call.cancelled:
                try:
                    value = await agen.__anext__()
                except StopAsyncIteration:
                    return self._result_reply(call.request_id, call.name, None)
                if self._no_credit(call, seq):
                    await self._async_credit(call, seq)
                failure = self._chunk(call, seq, value)
                if failure is not None:
                    return failure
                seq += 1
            return None               # answered "cancelled" by _async_done
        finally:
            await agen.aclose()

    async def _async_credit(self, call, seq):
        no_credit = self._no_credit
        while no_credit(call, seq):
            call.waiter = self._loop.create_future()
            try:
                if no_credit(call, seq):  # an ack may have come between
                    await call.waiter
            finally:
                call.waiter = None

    def _async_done(self, call, task):
        if call.cancelled:
            reply = self._cancelled_reply(call)
        elif task.cancelled():        # it cancelled itself: an error, not a cancel
            import asyncio
            reply = self._failure(call.request_id, asyncio.CancelledError(
                f"the task of request {call.request_id} was cancelled "
                "without a cancel from the host"))
        elif task.exception() is not None:
            reply = self._failure(call.request_id, task.exception())
        else:
            reply = task.result()
        self._finish(call, reply)

    def _cancel_task(self, call):
        task = call.task
        if task is not None:
            task.cancel()

    # -- helpers ---------------------------------------------------------------

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


def _run_loop(loop):
    import asyncio
    asyncio.set_event_loop(loop)
    loop.run_forever()


def _log_loop_error(loop, context):
    exc = context.get("exception")
    log(f"event loop: {context.get('message')}"
        + (f": {type(exc).__name__}: {exc}" if exc is not None else ""))


def _failure_from_exception(request_id, exc, message=None):
    if isinstance(exc, InvalidArgs):
        # The caller's mistake, named in the message: no traceback to show.
        return encode_failure(request_id, InvalidArgs.error_type, str(exc))
    if isinstance(exc, MemoryError) and limits.memory_limited:
        # worker.limits memory_mb did this: the host answers out_of_memory
        # and replaces this worker (its heap may be left fragmented).
        return encode_failure(request_id, "out_of_memory",
                              f"the handler ran out of memory (worker.limits memory_mb): "
                              f"{_exception_message(exc) or 'MemoryError'}")
    import traceback  # only failures pay for it
    if message is None:
        message = _exception_message(exc)
    return encode_failure(request_id, type(exc).__name__, message,
                          "".join(traceback.format_exception(
                              type(exc), exc, exc.__traceback__)))


def _exception_message(exc):
    # str(KeyError("x")) is "'x'": show the message itself, not its repr.
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)
