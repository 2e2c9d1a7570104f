"""Hard limits of one worker process (config worker.limits, --limits).

Set by the worker itself right after its command line is read and before
any handler module is imported, on both start paths: a spawned worker, and
one forked by the fork server (a fork inherits the server's limits, so they
are set in the child, after the fork). Soft and hard limit are both set, so
user code cannot raise them again. RLIMIT_CPU's hard limit sits a second
above the soft one: the kernel sends SIGXCPU first (the host reports
cpu_limit), SIGKILL only if that signal is caught and the spinning goes on.
See bridge/process_limits.hpp for what each limit means and its caveats.
"""

import resource

_RLIMITS = {
    "memory_mb": (resource.RLIMIT_AS, 1024 * 1024),
    "cpu_seconds": (resource.RLIMIT_CPU, 1),
    "open_files": (resource.RLIMIT_NOFILE, 1),
    "processes": (resource.RLIMIT_NPROC, 1),
}

# Set when --limits names memory_mb: a MemoryError is then the limit's doing.
memory_limited = False


def parse(text):
    """'memory_mb=256,cpu_seconds=5' -> {"memory_mb": 256, ...}; ValueError
    for an unknown key or a value that is not a positive integer."""
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in _RLIMITS:
            raise ValueError(f"unknown limit {item!r} (known: {', '.join(_RLIMITS)})")
        number = int(value)
        if number <= 0:
            raise ValueError(f"limit {key} must be positive, not {number}")
        out[key] = number
    return out


def apply(limits):
    """Sets each limit; a limit above the current hard one (which only a
    privileged process may raise) is clamped to it. Returns the values set,
    in the resource's own unit, for the log."""
    global memory_limited
    applied = {}
    for key, value in limits.items():
        which, unit = _RLIMITS[key]
        soft = value * unit
        hard = soft + 1 if which == resource.RLIMIT_CPU else soft
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        resource.setrlimit(which, (soft, hard))
        applied[key] = soft
    memory_limited = "memory_mb" in limits
    return applied
