"""Command registry: the names a worker answers to, and the @command decorator.

Users add commands from their own modules (loaded with --handlers):

    from dspex_worker import command

    @command("add")
    def add(args, ctx):
        return {"sum": args["a"] + args["b"]}

A handler takes (args, ctx) and returns a JSON-able result. It may also be
a generator function (each value it yields is one chunk of a stream), an
`async def` coroutine or an async generator, which run on the worker's
event loop (worker.py). Any exception it raises becomes a failed reply
carrying the exception's class name, message and traceback; the worker
keeps serving.

@command("name", inline=True) marks a handler that never waits (no I/O, no
locks held by others, microseconds of CPU). With --max-concurrency N > 1 such
a command runs on the protocol thread instead of being handed to a request
thread: the hand-off costs more than the handler (two thread wake-ups and GIL
transfers, ~10 us in CPython), and a health ping answers even while every
request thread waits on an LM. A handler that does wait must not be inline:
it would hold up every request behind it. A generator or async handler is
never inline (it is dispatched as usual even when marked).
"""

import inspect
import sys
import threading


class CommandRegistry:
    """A table of command name -> handler(args, ctx).

    Each built-in module keeps its own table; the worker merges the tables it
    enables (fault commands only with --fault-injection) and then the user
    table, refusing a user command that would shadow a built-in.
    """

    def __init__(self):
        self._handlers = {}
        self._inline = set()

    def command(self, name=None, *, inline=False):
        """Decorator registering a handler; bare @command uses the function name."""
        if callable(name):
            return self.command(None)(name)

        def register(fn):
            self.register(name or fn.__name__, fn, inline=inline)
            return fn
        return register

    def register(self, name, handler, *, inline=False):
        if not isinstance(name, str) or not name:
            raise ValueError(f"command name must be a non-empty string, got {name!r}")
        if not callable(handler):
            raise TypeError(f"handler for command {name!r} is not callable")
        existing = self._handlers.get(name)
        if existing is not None and existing is not handler:
            raise ValueError(
                f"command {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}")
        self._handlers[name] = handler
        if inline:
            self._inline.add(name)

    def include(self, other):
        """Add every command of another registry; a name clash is an error."""
        for name, handler in other._handlers.items():
            self.register(name, handler, inline=name in other._inline)

    def inline_names(self):
        """The commands that run on the protocol thread (see inline above)."""
        return frozenset(name for name in self._inline
                         if not is_special(self._handlers[name]))

    def get(self, name):
        return self._handlers.get(name)

    def names(self):
        return sorted(self._handlers)

    def __contains__(self, name):
        return name in self._handlers

    def __len__(self):
        return len(self._handlers)


# Where @command (the public decorator) puts user commands. A worker is one
# process serving one host, so one user table per process is the natural scope.
user_registry = CommandRegistry()


def command(name=None, *, inline=False):
    """Register a user command: @command("name") def handler(args, ctx): ..."""
    return user_registry.command(name, inline=inline)


def is_special(handler):
    """True for a generator function, an async def or an async generator."""
    return (inspect.isgeneratorfunction(handler) or is_async(handler))


def is_async(handler):
    """True for a handler that runs on the worker's event loop."""
    return inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler)


class Cancelled(BaseException):
    """Raised in a sync handler's thread when its request is cancelled.

    A BaseException, like asyncio.CancelledError, so that a handler's
    `except Exception` does not swallow it; `finally` blocks run. The
    request is answered "cancelled" whatever the handler does after it.
    """


class HostCallError(Exception):
    """A host call (ctx.call) failed: error_class is the dspex error class
    ("worker_crashed", "command_timeout", "invalid_request", "python_error",
    "node_down", "cancelled", ...), message says why; str() is
    "CLASS: message". An Exception: a handler may catch it and go on."""

    def __init__(self, error_class, message=""):
        super().__init__(error_class, message)
        self.error_class = error_class
        self.message = message

    def __str__(self):
        return f"{self.error_class}: {self.message}"


class _Same:
    __slots__ = ()

    def __repr__(self):
        return "SAME"


SAME = _Same()
"""ctx.call(..., session=SAME), the default: the request's own session."""


class CommandContext:
    """What a handler knows about its call.

    worker_id, session_id and request_id describe the call; state is a dict
    private to this worker that handlers may keep data in between calls;
    session_state is a dict for this session only, dropped by cleanup_session.
    cancelled turns True when the host cancels the request; deadline is the
    caller's deadline in time.monotonic() seconds (None: none); stream is
    the credit window when what a generator yields reaches the caller as
    chunks (None: a unary call); sleep() waits and returns early on cancel;
    call() calls the host (a pool or a function of the node).
    """

    __slots__ = ("worker", "request_id", "session_id", "deadline", "stream",
                 "cancelled", "_event")

    def __init__(self, worker, request_id, session_id, deadline=None, stream=None):
        self.worker = worker
        self.request_id = request_id
        self.session_id = session_id
        self.deadline = deadline
        self.stream = stream
        self.cancelled = False
        self._event = None

    def sleep(self, seconds):
        """Wait `seconds`, or less when the request is cancelled.

        On the worker's event loop (an async handler) it returns
        asyncio.sleep(seconds): `await ctx.sleep(s)`, cancelled with the task.
        """
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and asyncio._get_running_loop() is not None:
            return asyncio.sleep(seconds)
        if self.cancelled:
            return None
        event = self._event
        if event is None:
            event = self._event = threading.Event()
        # The canceller sets cancelled, then the event: one of the two is
        # seen here whatever the order.
        if not self.cancelled:
            event.wait(seconds)
        return None

    def call(self, target, command, args=None, *, timeout=None, session=SAME):
        """Call the host (worker.py, Call.call); not from a command that runs
        on the protocol thread, which is the one that reads the answer."""
        raise HostCallError(
            "invalid_request",
            "ctx.call is not available in an inline or state command (it runs "
            "on the protocol thread, which reads the host's answer)")

    def _wake(self):
        event = self._event
        if event is not None:
            event.set()

    @property
    def worker_id(self):
        return self.worker.worker_id

    @property
    def state(self):
        return self.worker.user_state

    @property
    def session_state(self):
        return self.worker.session_state(self.session_id)


class InvalidArgs(ValueError):
    """The caller's arguments are not what the command takes.

    Its reply carries error type "invalid_args" (not the class name), which
    the host hands its caller as invalid_request: the caller's error, never
    a worker fault. Built-in commands raise it for an argument key they do
    not take (check_args); handlers may raise it too.
    """

    error_type = "invalid_args"


def check_args(command, args, accepted, hints=None):
    """Refuses any key of args outside `accepted` (a frozenset).

    The InvalidArgs names each unknown key and lists the accepted ones, so a
    misspelled option fails loudly instead of silently falling back to a
    default. hints maps a likely wrong key to the right one ("api_base" ->
    "base_url").
    """
    if accepted.issuperset(args):
        return
    unknown = sorted(k for k in args if k not in accepted)
    names = ", ".join(repr(k) for k in unknown)
    noun = "argument" if len(unknown) == 1 else "arguments"
    message = f"{command}: unknown {noun} {names}"
    for key in unknown:
        if hints and key in hints:
            message += f" (use {hints[key]!r} instead of {key!r})"
    if accepted:
        message += "; accepted: " + ", ".join(sorted(accepted))
    else:
        message += f"; {command} takes no arguments"
    raise InvalidArgs(message)


NO_ARGS = frozenset()


class _NoReply:
    """Returned by a handler that has already written (or will never write)
    its reply itself; only fault injection needs this."""

    __slots__ = ()

    def __repr__(self):
        return "NO_REPLY"


NO_REPLY = _NoReply()
