"""Fault injection: commands that make this worker fail in one precise way each.

Registered only when the worker starts with --fault-injection; otherwise
they are unknown commands, so a production pool cannot be crashed by a
request. The host's chaos tests and benchmarks drive them to prove that each
failure is detected, classified and recovered from.
"""

import os
import sys
import threading
import time

from .protocol import encode_success
from .registry import NO_REPLY, CommandRegistry, check_args

FAULT_COMMANDS = CommandRegistry()


def fault(name, *accepted):
    """Registers a fault command taking the argument keys `accepted` only;
    any other key is refused (invalid_args) before the fault happens."""
    keys = frozenset(accepted)

    def register(fn):
        def strict(args, ctx):
            if args:
                check_args(name, args, keys)
            return fn(args, ctx)
        strict.__name__ = strict.__qualname__ = fn.__name__
        strict.__module__ = fn.__module__
        strict.__doc__ = fn.__doc__
        strict.accepted_args = keys
        FAULT_COMMANDS.register(name, strict)
        return fn
    return register

_GARBAGE = b"\xff\xfe garbage "
_MIB = 1024 * 1024


def _int_arg(args, key, default, low, high):
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _number_arg(args, key, default, low):
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ValueError(f"{key} must be a number >= {low}, got {value!r}")
    return value


@fault("fault_exit", "code")
def fault_exit(args, ctx):
    # os._exit: no reply, no cleanup, exactly the requested status.
    os._exit(_int_arg(args, "code", 1, 0, 255))


@fault("fault_abort")
def fault_abort(args, ctx):
    _disable_core_dumps()
    os.abort()


def _disable_core_dumps():
    # A chaos run aborts workers by the hundred; core files would fill the disk.
    try:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (ImportError, ValueError, OSError):
        pass


@fault("fault_hang")
def fault_hang(args, ctx):
    # time.sleep is interrupted by our SIGTERM handler (it raises), so a hung
    # worker still stops on SIGTERM, and of course on SIGKILL.
    while True:
        time.sleep(3600)


@fault("fault_sleep", "seconds")
def fault_sleep(args, ctx):
    seconds = _number_arg(args, "seconds", 1.0, 0)
    time.sleep(seconds)
    return {"slept_s": seconds}


_gatherings = {}
_gatherings_lock = threading.Lock()


@fault("fault_gather", "parties", "timeout_s", "name")
def fault_gather(args, ctx):
    """Returns once `parties` requests of the same `name` are inside at the
    same time (proof of max_concurrency without a clock); a BrokenBarrierError
    after timeout_s when they never are (requests served one at a time)."""
    parties = _int_arg(args, "parties", 2, 1, 1024)
    timeout = _number_arg(args, "timeout_s", 10.0, 0)
    name = str(args.get("name", ""))
    with _gatherings_lock:
        barrier = _gatherings.get(name)
        if barrier is None or barrier.parties != parties or barrier.broken:
            barrier = _gatherings[name] = threading.Barrier(parties)
    barrier.wait(timeout)
    return {"parties": parties, "thread": threading.current_thread().name}


@fault("fault_garbage", "bytes")
def fault_garbage(args, ctx):
    """Write raw bytes that are not a frame, then reply as usual.

    The garbage comes first, so the host reads it as a frame header (0xfffe...
    announces ~4 GiB: a FrameTooLarge on any sane limit).
    """
    count = _int_arg(args, "bytes", 64, 1, 64 * _MIB)
    garbage = (_GARBAGE * (count // len(_GARBAGE) + 1))[:count]
    ctx.worker.channel.write_raw(garbage)
    return {"garbage_bytes": count}


@fault("fault_oversized", "length")
def fault_oversized(args, ctx):
    """Announce a frame of `length` bytes, send a few, and never finish it."""
    length = _int_arg(args, "length", 0xFFFFFFFF, 0, 0xFFFFFFFF)
    ctx.worker.channel.write_raw(length.to_bytes(4, "big") + b"x" * min(16, length))
    return NO_REPLY


@fault("fault_print", "text")
def fault_print(args, ctx):
    """Write to stdout every way user code might; the stream must survive."""
    text = str(args.get("text", "fault_print"))
    print(text)
    print(text, file=sys.__stdout__, flush=True)
    os.write(1, (text + "\n").encode("utf-8", "replace"))
    return {"printed": text}


@fault("fault_alloc", "mb", "hold")
def fault_alloc(args, ctx):
    """Allocate and touch `mb` MiB; with "hold": true, keep it (a leak)."""
    mb = _int_arg(args, "mb", 1, 0, 1 << 20)
    block = bytearray(mb * _MIB)
    # bytearray(n) may map zero pages lazily; touch one byte per page so the
    # memory is really resident.
    block[::4096] = b"\x01" * len(range(0, len(block), 4096))
    if args.get("hold"):
        ctx.worker.held_memory.append(block)
    return {"allocated_mb": mb,
            "held_mb": sum(len(b) for b in ctx.worker.held_memory) // _MIB}


@fault("fault_partial")
def fault_partial(args, ctx):
    """Die in the middle of writing a reply: half a valid frame, then exit(1)."""
    payload = encode_success(ctx.request_id, {"partial": "x" * 256})
    frame = len(payload).to_bytes(4, "big") + payload
    ctx.worker.channel.write_raw(frame[:len(frame) // 2])
    os._exit(1)


@fault("fault_raise", "message")
def fault_raise(args, ctx):
    raise RuntimeError(str(args.get("message", "injected failure")))


@fault("fault_echo", "payload")
def fault_echo(args, ctx):
    return {"payload": args.get("payload")}


@fault("fault_nest", "depth")
def fault_nest(args, ctx):
    """Return a list nested `depth` deep: deeper than the host's
    max_json_depth (the host fails the request with result_too_deep), or
    too deep for Python's json to encode (an error reply)."""
    depth = _int_arg(args, "depth", 1000, 1, 1 << 20)
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value
