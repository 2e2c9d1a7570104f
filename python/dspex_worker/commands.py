"""Built-in commands every worker answers: health, stats, lifecycle, echo."""

import sys

from .registry import CommandRegistry

BUILTIN_COMMANDS = CommandRegistry()
builtin = BUILTIN_COMMANDS.command

_PYTHON_VERSION = sys.version.split()[0]


@builtin("ping", inline=True)
def ping(args, ctx):
    worker = ctx.worker
    return {"status": "ok", "worker_id": worker.worker_id, "pid": worker.pid,
            "python_version": _PYTHON_VERSION, "uptime_s": worker.uptime_s(),
            "mode": worker.mode}


@builtin("echo", inline=True)
def echo(args, ctx):
    # The benchmark's trivial function: keep it free of work.
    return {"payload": args.get("payload")}


@builtin("get_stats", inline=True)
def get_stats(args, ctx):
    worker = ctx.worker
    return {"worker_id": worker.worker_id, "pid": worker.pid,
            "requests": worker.requests, "errors": worker.errors,
            "uptime_s": worker.uptime_s(),
            "programs": worker.programs.count(),
            "sessions": worker.session_count(),
            "last_activity": worker.last_activity,
            "lm": worker.lm.name if worker.lm is not None else None,  # the default
            "mode": worker.mode}


@builtin("shutdown")
def shutdown(args, ctx):
    # The loop exits once this reply is written, so the host always gets it.
    ctx.worker.stop_after_reply = True
    return {"status": "shutting_down"}


@builtin("cleanup_session")
def cleanup_session(args, ctx):
    # Without an explicit argument, clean the session the request runs in.
    session_id = args.get("session_id", ctx.session_id)
    if session_id is not None and not isinstance(session_id, str):
        raise TypeError("session_id must be a string or null")
    return {"cleaned": ctx.worker.drop_session(session_id),
            "session_id": session_id}


@builtin("list_commands", inline=True)
def list_commands(args, ctx):
    return {"commands": ctx.worker.registry.names()}
