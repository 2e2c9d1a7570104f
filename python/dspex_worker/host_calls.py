"""Calls from a handler into its host (protocol 3): what ctx.call sends,
and the calls in flight that the protocol thread answers.

A call is registered (a number K, unique in this worker) before its frame
is written, so its result can never arrive first. Exactly one of these
settles it, under the lock: its result frame; its own timeout or the
request's deadline (HostCallError command_timeout); the request's cancel
(Cancelled in a thread, CancelledError on a loop); the end of its request;
the end of the host's input. The ones that give up on a call the host still
runs (timeout, cancel) send {"type":"cancel_call","call":K}; a call whose
frame is not written yet gets it right after its frame. The waiter is a
threading.Event (a thread) or a future of the running loop, resolved with
call_soon_threadsafe.
"""

import functools
import math
import threading
import time

from .log import log
from .protocol import encode_cancel_call, encode_host_call
from .registry import SAME, Cancelled, HostCallError

_TARGET_KINDS = ("pool:", "fn:")
_CANCELLED = (False, None)      # the request was cancelled


class _Pending:
    """One call in flight: outcome is (True, result) or (False, a
    HostCallError, or None when the request was cancelled)."""

    __slots__ = ("call", "ctx", "outcome", "event", "loop", "future", "timer",
                 "sent", "cancel_when_sent")

    def __init__(self, call, ctx, loop):
        self.call = call
        self.ctx = ctx
        self.outcome = None
        self.loop = loop
        self.event = threading.Event() if loop is None else None
        self.future = None if loop is None else loop.create_future()
        self.timer = None
        self.sent = False
        self.cancel_when_sent = False


class HostCalls:
    """The calls this worker's handlers wait on."""

    def __init__(self, channel):
        self.channel = channel
        self._lock = threading.Lock()
        self._pending = {}            # K -> _Pending
        self._next = 0
        self.total = 0                # calls sent
        self.results_ignored = 0      # results for a call not in flight
        self._closed = False          # the host's input ended

    def in_flight(self):
        return len(self._pending)

    # -- a handler's side ------------------------------------------------------

    def call_sync(self, ctx, target, command, args, timeout, session):
        """Send a call and wait for it in this thread: its outcome."""
        p = self._start(ctx, target, command, args, timeout, session, None)
        limit, why = _limit(p, target, command, timeout)
        if limit is None:
            p.event.wait()
        elif not p.event.wait(max(0.0, limit - time.monotonic())):
            self._abandon(p, (False, HostCallError("command_timeout", why)))
        return p.outcome

    def call_async(self, ctx, loop, target, command, args, timeout, session):
        """Send a call from a coroutine on `loop`: a future of its result."""
        p = self._start(ctx, target, command, args, timeout, session, loop)
        p.future.add_done_callback(functools.partial(self._future_done, p))
        limit, why = _limit(p, target, command, timeout)
        if limit is not None:
            p.timer = loop.call_later(
                max(0.0, limit - time.monotonic()), self._abandon, p,
                (False, HostCallError("command_timeout", why)))
        return p.future

    def _start(self, ctx, target, command, args, timeout, session, loop):
        _check(target, command, args, timeout, session)
        with self._lock:
            self._next += 1
            call = self._next
        try:
            frame = encode_host_call(
                ctx.request_id, call, target, command, {} if args is None else args,
                None if timeout is None else math.ceil(timeout * 1000),
                None if session is SAME else session, session is not SAME)
        except (TypeError, ValueError, RecursionError) as exc:
            raise HostCallError(
                "invalid_request",
                f"args of the call to {target} {command!r} cannot be sent as JSON: "
                f"{type(exc).__name__}: {exc}") from None
        limit = self.channel.max_frame_bytes
        if len(frame) > limit:
            raise HostCallError(
                "invalid_request",
                f"the call to {target} {command!r} is a frame of {len(frame)} bytes, "
                f"above the limit of {limit} bytes")
        p = _Pending(call, ctx, loop)
        with self._lock:
            closed = self._closed
            if not closed and not ctx.cancelled:
                self._pending[call] = p
                if ctx.pending_calls is None:
                    ctx.pending_calls = {}
                ctx.pending_calls[call] = p
                self.total += 1
        if closed:
            raise HostCallError("cancelled", "the host closed the worker's input")
        # Its request may have ended or been cancelled meanwhile (they set
        # their flag, then look at pending_calls: one of the two sees it).
        if ctx.cancelled or ctx.ended:
            self._abandon(p, _CANCELLED)
            if ctx.cancelled:
                raise _cancelled(ctx, loop)
            raise HostCallError(
                "invalid_request",
                f"request {ctx.request_id} has ended: its ctx cannot call the host")
        try:
            self.channel.write_frame(frame)
        except BrokenPipeError:
            self._abandon(p, _CANCELLED)
            raise HostCallError("cancelled",
                                "the host closed the worker's protocol output") from None
        with self._lock:
            p.sent = True
            late = p.cancel_when_sent
        if late:                      # given up on while its frame was written
            self._send_cancel(call)
        return p

    def _future_done(self, p, future):
        if p.timer is not None:
            p.timer.cancel()
        if future.cancelled():        # its task was cancelled
            self._abandon(p, _CANCELLED)

    # -- settling a call -------------------------------------------------------

    def _take(self, p, outcome):
        """Settle p (under the lock); False when something else did first."""
        if self._pending.pop(p.call, None) is None:
            return False
        p.ctx.pending_calls.pop(p.call, None)
        p.outcome = outcome
        return True

    def _abandon(self, p, outcome):
        """Give up on p: cancel_call when the host has it."""
        with self._lock:
            if not self._take(p, outcome):
                return
            send = p.sent
            p.cancel_when_sent = not send
        if send:
            self._send_cancel(p.call)
        _wake(p)

    def settle(self, call, outcome, malformed=False):
        """The protocol thread: call K's result frame (outcome (True, R) or
        (False, (class, message))), or a HostCallError for a malformed one."""
        ok, value = outcome
        if not ok and not isinstance(value, HostCallError):
            value = HostCallError(*value)
        with self._lock:
            p = self._pending.get(call)
            if p is None:
                if not malformed:
                    self.results_ignored += 1
                return
            self._take(p, (ok, value))
        _wake(p)

    def cancel_request(self, ctx):
        """The protocol thread: ctx's request was cancelled."""
        with self._lock:
            pending = list(ctx.pending_calls.values()) if ctx.pending_calls else ()
        for p in pending:
            self._abandon(p, _CANCELLED)

    def end_request(self, ctx):
        """ctx's request was answered: its calls still in flight fail (the
        host cancels them itself and sends no result)."""
        self._fail_all(ctx, "request {} ended before call {} was answered")

    def close(self):
        """The host's input ended: no result will come."""
        with self._lock:
            self._closed = True
        self._fail_all(None, "the host closed the worker's input before call {1} was answered")

    def _fail_all(self, ctx, message):
        with self._lock:
            pending = [p for p in (self._pending.values() if ctx is None
                                   else (ctx.pending_calls or {}).values())]
            for p in pending:
                self._take(p, (False, HostCallError(
                    "cancelled", message.format(p.ctx.request_id, p.call))))
        for p in pending:
            _wake(p)

    def _send_cancel(self, call):
        try:
            self.channel.write_frame(encode_cancel_call(call))
        except BrokenPipeError:
            log(f"protocol output closed by the host (cancel_call {call})")


def _wake(p):
    if p.future is None:
        p.event.set()
        return
    try:
        p.loop.call_soon_threadsafe(_resolve, p.future, p.outcome)
    except RuntimeError:              # that loop is closed: nobody waits
        pass


def _resolve(future, outcome):
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    elif value is None:
        future.cancel()
    else:
        future.set_exception(value)


def _cancelled(ctx, loop):
    message = f"request {ctx.request_id} was cancelled"
    if loop is None:
        return Cancelled(message)
    import asyncio
    return asyncio.CancelledError(message)


def _limit(p, target, command, timeout):
    """When the wait ends ((None, None): never), and the message then."""
    limit = why = None
    if timeout is not None:
        limit = time.monotonic() + timeout
        why = f"call {p.call} to {target} {command!r} got no answer within {timeout} s"
    deadline = p.ctx.deadline
    if deadline is not None and (limit is None or deadline < limit):
        limit = deadline
        why = (f"the deadline of request {p.ctx.request_id} passed during call "
               f"{p.call} to {target} {command!r}")
    return limit, why


def _check(target, command, args, timeout, session):
    if (not isinstance(target, str) or not target.startswith(_TARGET_KINDS)
            or not target.partition(":")[2]):
        raise HostCallError("invalid_request",
                            f'target must be "pool:NAME" or "fn:NAME", not {target!r}')
    if not isinstance(command, str) or not command:
        raise HostCallError("invalid_request",
                            f"command must be a non-empty string, not {command!r}")
    if args is not None and not isinstance(args, dict):
        raise HostCallError("invalid_request",
                            f"args must be a dict or None, not {type(args).__name__}")
    if timeout is not None and (type(timeout) not in (int, float) or not timeout > 0
                                or math.isinf(timeout)):
        raise HostCallError("invalid_request",
                            f"timeout must be a number of seconds > 0, not {timeout!r}")
    if session is not SAME and session is not None and not isinstance(session, str):
        raise HostCallError("invalid_request",
                            f"session must be SAME, None or a string, not {session!r}")
