"""dspex_worker: the Python side of dspex, run as `python3 -m dspex_worker`.

User modules loaded with --handlers add commands through the decorator
exported here:

    from dspex_worker import command

    @command("greet")
    def greet(args, ctx):
        return {"hello": args.get("name", "world"), "worker": ctx.worker_id}

    @command("count")                 # a stream: one chunk per yield
    def count(args, ctx):
        for i in range(args["n"]):
            yield i
        return {"total": args["n"]}

    @command("agent")                 # calls back into the host
    def agent(args, ctx):
        return ctx.call("pool:search", "lookup", {"q": args["q"]}, timeout=5)

    @command("answer")                # the session's LM, no stored program
    def answer(args, ctx):
        return predict(ctx, "question -> answer", {"question": args["q"]})
"""

from .programs import predict
from .registry import (SAME, Cancelled, CommandContext, HostCallError, InvalidArgs,
                       check_args, command)

__all__ = ["command", "Cancelled", "CommandContext", "HostCallError", "InvalidArgs",
           "SAME", "check_args", "predict"]
__version__ = "0.1.0"
