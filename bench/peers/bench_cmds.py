"""Handlers of `dspex-bench streams`, `dspex-bench host_calls` and
`dspex-bench chaos --scenarios stream`, loaded by the bench's pools
(worker.handler_paths: this directory, worker.handlers: ["bench_cmds"]).
Standard library only; each is the smallest handler of its kind, so a
figure measures dspex, not the handler.
"""

import asyncio
import time

from dspex_worker import command

# bench_spin's finally: token -> time.monotonic_ns() (CLOCK_MONOTONIC, the
# host's steady_clock), read back by bench_finally_at.
_finally_at = {}


@command("bench_echo")
def bench_echo(args, ctx):
    """A unary handler on a request thread: the payload back."""
    return {"payload": args["payload"]}


@command("bench_first")
def bench_first(args, ctx):
    """A generator that yields the payload at once, as one chunk."""
    yield {"payload": args["payload"]}


@command("bench_chunks")
def bench_chunks(args, ctx):
    """n chunks, each the same string (args "data")."""
    data = args["data"]
    n = args["n"]
    for _ in range(n):
        yield data
    return {"n": n}


@command("bench_spin")
def bench_spin(args, ctx):
    """Yields "started", then spins in pure Python until cancelled; its
    finally records when it ran. Gives up after args "limit_s" (10 s)."""
    token = args["token"]
    limit = time.monotonic() + args.get("limit_s", 10.0)
    x = 0
    try:
        yield "started"
        while True:
            x += 1
            if x % 200000 == 0 and time.monotonic() > limit:
                return "not cancelled"
    finally:
        _finally_at[token] = time.monotonic_ns()


@command("bench_finally_at")
def bench_finally_at(args, ctx):
    """When bench_spin's finally ran for this token (ns), or None."""
    return _finally_at.pop(args["token"], None)


@command("bench_async_wait")
async def bench_async_wait(args, ctx):
    """I/O-bound on the event loop: awaits args "seconds"."""
    await asyncio.sleep(args["seconds"])
    return {"waited": args["seconds"]}


@command("bench_thread_wait")
def bench_thread_wait(args, ctx):
    """I/O-bound on a request thread: blocks args "seconds"."""
    time.sleep(args["seconds"])
    return {"waited": args["seconds"]}


@command("bench_stream")
def bench_stream(args, ctx):
    """Chaos: n chunks {"k": key, "i": i}, pause_s apart, then {"k", "n"}."""
    key = args["key"]
    n = args["n"]
    pause = args.get("pause_s", 0)
    for i in range(n):
        yield {"k": key, "i": i}
        if pause:
            ctx.sleep(pause)
    return {"k": key, "n": n}


@command("bench_call_loop")
def bench_call_loop(args, ctx):
    """Host calls (dspex-bench host_calls): args "n" calls of "command" with
    "args" on "target", one after the other; each one's time in ns
    (time.perf_counter_ns around ctx.call). A failed call fails the request."""
    target, name, call_args = args["target"], args["command"], args["args"]
    times = []
    for _ in range(args["n"]):
        t0 = time.perf_counter_ns()
        ctx.call(target, name, call_args)
        times.append(time.perf_counter_ns() - t0)
    return times
