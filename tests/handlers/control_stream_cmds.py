"""Handlers the control socket's stream tests load (tests/test_control_stream.cpp)."""

from dspex_worker import command


@command("blob")
def blob(args, ctx):
    """Yields `n` chunks, each a string of `size` bytes; returns n."""
    chunk = "x" * args.get("size", 65536)
    for _ in range(args.get("n", 1)):
        yield chunk
    return args.get("n", 1)
