"""Built-in commands every worker answers: health, stats, lifecycle, echo.

Every built-in refuses an argument key it does not take (InvalidArgs, error
type "invalid_args", naming the key and the accepted ones); echo takes any.
"""

import sys

from .registry import NO_ARGS, CommandRegistry, check_args

# The wire protocol this worker speaks (worker.py: chunk, ack, cancel;
# host_calls.py: call, result, cancel_call).
PROTOCOL_VERSION = 3

BUILTIN_COMMANDS = CommandRegistry()
builtin = BUILTIN_COMMANDS.command

_PYTHON_VERSION = sys.version.split()[0]


@builtin("ping", inline=True)
def ping(args, ctx):
    if args:
        check_args("ping", args, NO_ARGS)
    worker = ctx.worker
    return {"status": "ok", "worker_id": worker.worker_id, "pid": worker.pid,
            "python_version": _PYTHON_VERSION, "uptime_s": worker.uptime_s(),
            "mode": worker.mode, "protocol": PROTOCOL_VERSION}


@builtin("echo", inline=True)
def echo(args, ctx):
    # Its whole args, whatever keys they hold (the benchmark's trivial
    # function, {"payload": ...}: keep it free of work).
    return args


@builtin("get_stats", inline=True)
def get_stats(args, ctx):
    if args:
        check_args("get_stats", args, NO_ARGS)
    worker = ctx.worker
    return {"worker_id": worker.worker_id, "pid": worker.pid,
            "requests": worker.requests, "errors": worker.errors,
            "uptime_s": worker.uptime_s(),
            "programs": worker.programs.count(),
            "sessions": worker.session_count(),
            "last_activity": worker.last_activity,
            "lm": worker.lm.name if worker.lm is not None else None,  # the default
            "mode": worker.mode,
            "in_flight": worker.in_flight(), "threads": worker.threads,
            "cancelled": worker.cancelled,
            "cancels_ignored": worker.cancels_ignored,
            "bad_control_frames": worker.bad_control_frames,
            "host_calls": worker.host_calls.in_flight(),
            "host_calls_total": worker.host_calls.total,
            "host_call_results_ignored": worker.host_calls.results_ignored}


@builtin("shutdown")
def shutdown(args, ctx):
    check_args("shutdown", args, NO_ARGS)
    # The loop exits once this reply is written, so the host always gets it.
    ctx.worker.stop_after_reply = True
    return {"status": "shutting_down"}


_CLEANUP_ARGS = frozenset({"session_id"})


@builtin("cleanup_session")
def cleanup_session(args, ctx):
    check_args("cleanup_session", args, _CLEANUP_ARGS)
    # Without an explicit argument, clean the session the request runs in.
    session_id = args.get("session_id", ctx.session_id)
    if session_id is not None and not isinstance(session_id, str):
        raise TypeError("session_id must be a string or null")
    return {"cleaned": ctx.worker.drop_session(session_id),
            "session_id": session_id}


@builtin("list_commands", inline=True)
def list_commands(args, ctx):
    if args:
        check_args("list_commands", args, NO_ARGS)
    return {"commands": ctx.worker.registry.names()}
