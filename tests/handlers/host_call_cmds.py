"""Handlers the C++ host-call tests load (tests/test_host_calls.cpp)."""

from dspex_worker import HostCallError, command


def _call(ctx, args):
    return ctx.call(args["target"], args["command"], args.get("args"),
                    timeout=args.get("timeout"))


@command("call")
def call(args, ctx):
    """Makes one host call; its result, or the error's class and message."""
    try:
        return {"ok": _call(ctx, args)}
    except HostCallError as e:
        return {"error": e.error_class, "message": e.message}


@command("acall")
async def acall(args, ctx):
    try:
        return {"ok": await ctx.call(args["target"], args["command"], args.get("args"))}
    except HostCallError as e:
        return {"error": e.error_class, "message": e.message}


@command("nest")
def nest(args, ctx):
    """Calls itself on pool args.pool until n reaches 0: the innermost result."""
    if args["n"] == 0:
        return {"bottom": True}
    try:
        return ctx.call("pool:" + args["pool"], "nest", {"n": args["n"] - 1, "pool": args["pool"]})
    except HostCallError as e:
        return {"error": e.error_class, "message": e.message}


@command("session_of")
def session_of(args, ctx):
    return ctx.session_id


@command("twice")
def twice(args, ctx):
    """Two calls: the first's failure does not stop the second."""
    out = []
    for target in (args["first"], args["second"]):
        try:
            out.append({"ok": ctx.call(target, args["command"], args.get("args"))})
        except HostCallError as e:
            out.append({"error": e.error_class})
    return out
