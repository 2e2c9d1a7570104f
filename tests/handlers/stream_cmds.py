"""Handlers the C++ stream and cancellation tests load (tests/test_streams.cpp)."""

import asyncio
import time

from dspex_worker import Cancelled, command


def _mark(path, text):
    if path:
        with open(path, "a") as f:
            f.write(text + "\n")


@command("count")
def count(args, ctx):
    """Yields {"i": 0..n-1}, pausing `pause_s` between chunks; returns the total."""
    for i in range(args.get("n", 3)):
        yield {"i": i}
        if args.get("pause_s"):
            time.sleep(args["pause_s"])
    return {"total": args.get("n", 3)}


@command("blobs")
def blobs(args, ctx):
    """Yields `n` strings of `size` "x"s (str chunks: worker.py's fast path); returns n."""
    for _ in range(args.get("n", 3)):
        yield "x" * args.get("size", 64)
    return {"total": args.get("n", 3)}


@command("ablobs")
async def ablobs(args, ctx):
    """blobs as an async generator (the event loop's stream path); returns None."""
    for _ in range(args.get("n", 3)):
        await asyncio.sleep(0)
        yield "x" * args.get("size", 64)


@command("acount")
async def acount(args, ctx):
    await asyncio.sleep(args.get("s", 0))
    return {"slept": args.get("s", 0)}


@command("spin")
def spin(args, ctx):
    """A pure-Python loop that never ends by itself; `finally` marks the file."""
    _mark(args.get("marker"), "started")
    n = 0
    try:
        while True:
            n += 1
    finally:
        _mark(args.get("marker"), "finally")


@command("stuck_in_c")
def stuck_in_c(args, ctx):
    """Blocks in one C call: cancellation cannot reach it (the hard path)."""
    time.sleep(args.get("s", 30))
    return "woke"


@command("bad_chunk")
def bad_chunk(args, ctx):
    """Writes a chunk frame out of order (seq 5 first), as a broken worker would."""
    import json
    frame = json.dumps({"id": ctx.request_id if not args.get("other_id") else 987654321,
                        "type": "chunk", "seq": 5, "data": 1}).encode()
    ctx.worker.channel.write_frame(frame)
    return "sent"


@command("pid")
def pid(args, ctx):
    import os
    return os.getpid()
