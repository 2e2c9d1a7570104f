"""Handlers the hard-limit and containment tests load (tests/test_limits.cpp,
tests/test_contained_trees.cpp)."""

import os
import resource
import subprocess
import sys
import time

from dspex_worker import command

_MIB = 1024 * 1024


@command("rlimits")
def rlimits(args, ctx):
    """The worker's own limits (soft, hard), -1 for unlimited."""
    def get(which):
        return [-1 if v == resource.RLIM_INFINITY else v for v in resource.getrlimit(which)]
    return {"pid": os.getpid(),
            "as": get(resource.RLIMIT_AS), "cpu": get(resource.RLIMIT_CPU),
            "nofile": get(resource.RLIMIT_NOFILE), "nproc": get(resource.RLIMIT_NPROC)}


@command("grow")
def grow(args, ctx):
    """Allocates and touches `mb_per_s` MiB a second (in 10 steps a second)
    until `max_mb`, then returns; a limit is meant to stop it first."""
    rate, top = args.get("mb_per_s", 50), args.get("max_mb", 2000)
    held = []
    step = max(1, rate // 10)
    while len(held) * step < top:
        block = bytearray(step * _MIB)
        block[::4096] = b"\x01" * len(range(0, len(block), 4096))
        held.append(block)
        time.sleep(0.1)
    return {"held_mb": len(held) * step}


@command("burn")
def burn(args, ctx):
    """Spins on the CPU for `seconds` of wall time."""
    end = time.monotonic() + args.get("seconds", 10)
    n = 0
    while time.monotonic() < end:
        n += 1
    return {"n": n}


@command("open_many")
def open_many(args, ctx):
    """Opens /dev/null `n` times; reports how many it got before EMFILE."""
    fds = []
    try:
        for _ in range(args.get("n", 100)):
            fds.append(os.open(os.devnull, os.O_RDONLY))
        return {"opened": len(fds), "error": None}
    except OSError as exc:
        return {"opened": len(fds), "error": exc.errno}
    finally:
        for fd in fds:
            os.close(fd)


def _detached_fork():
    """os.fork + setsid + fork: a daemon that is nobody's child but init's
    (or a subreaper's). Returns its pid, read from a pipe."""
    r, w = os.pipe()
    first = os.fork()
    if first == 0:
        try:
            os.setsid()
            second = os.fork()
            if second == 0:
                os.close(r)
                os.write(w, str(os.getpid()).encode())
                os.close(w)
                # A plain sleep with no host to lose: only a kill ends it.
                os.execvp("sleep", ["sleep", "1000"])
            os._exit(0)
        except BaseException:
            os._exit(1)
    os.close(w)
    pid = int(os.read(r, 32) or b"0")
    os.close(r)
    os.waitpid(first, 0)
    return pid


@command("escape")
def escape(args, ctx):
    """Starts two children that try to outlive the worker: a setsid()
    grandchild (fork, setsid, fork) and a Popen(start_new_session=True) one.
    Returns both pids."""
    forked = _detached_fork()
    popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"],
                             start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"pid": os.getpid(), "forked": forked, "popen": popen.pid}
