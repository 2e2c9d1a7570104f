"""Process hygiene: keep the protocol stream private and never outlive the host.

The Elixir bridge this replaces lost its stream to stray prints and left
orphans behind when the host died; each function here closes one of those
holes. All of it runs before any user code is imported.
"""

import os
import signal
import sys
import threading

_termination_requested = False


def isolate_stdio():
    """Move the protocol to private fds and make fds 0/1 harmless.

    Returns (in_fd, out_fd). Afterwards fd 0 is /dev/null (input() and
    sys.stdin.read() see EOF instead of stealing request bytes) and fd 1 is a
    copy of fd 2 (print(), os.write(1, ...) and child processes' stdout land
    on stderr instead of corrupting frames). os.dup returns non-inheritable
    fds, so subprocesses started by user code cannot hold the protocol pipe
    open and delay the EOF that tells us the host is gone.
    """
    _ensure_stderr()
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    # A host using async pipes may have left the description non-blocking;
    # the worker's loop is written for blocking reads and writes.
    os.set_blocking(in_fd, True)
    os.set_blocking(out_fd, True)

    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)

    sys.stdin = open(os.devnull, "r")
    sys.stdout = sys.stderr
    return in_fd, out_fd


def _ensure_stderr():
    # A host may spawn us with fd 2 closed. Fill it first: otherwise os.dup
    # below could hand out fd 2 for the protocol, and fd 1 would have nothing
    # to point at.
    try:
        os.fstat(2)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
        if fd != 2:
            os.dup2(fd, 2)
            os.close(fd)
    if sys.stderr is None:  # Python leaves it None when fd 2 was closed
        sys.stderr = open(2, "w", buffering=1, closefd=False,
                          errors="backslashreplace")


def _on_sigterm(signum, frame):
    global _termination_requested
    _termination_requested = True
    # Raising (rather than only setting the flag) interrupts a blocked read or
    # a sleeping handler; PEP 475 would otherwise resume them.
    raise SystemExit(0)


def install_signal_handlers():
    signal.signal(signal.SIGTERM, _on_sigterm)
    # The host owns Ctrl-C: it stops its workers itself, in order. A worker
    # dying on the terminal's SIGINT would look like a crash to the supervisor.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def termination_requested():
    return _termination_requested


def set_parent_death_signal():
    """Ask Linux to SIGKILL us when the host dies. Returns True on success.

    Note: the kernel fires this when the *thread* that forked us exits, so the
    host must spawn workers from a long-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        # c_ulong: prctl is variadic and the kernel reads full-width args.
        return libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG),
                          ctypes.c_ulong(int(signal.SIGKILL)),
                          ctypes.c_ulong(0), ctypes.c_ulong(0),
                          ctypes.c_ulong(0)) == 0
    except Exception:
        return False


def parent_is_gone(ppid_at_start, expected_ppid=None):
    """True when the host died before the death signal was armed.

    A changed ppid means we were re-parented. A bare "ppid == 1" test is not
    used: a host running as a container's PID 1 is a legitimate parent 1.
    """
    ppid = os.getppid()
    if expected_ppid is not None and ppid != expected_ppid:
        return True
    return ppid != ppid_at_start


def prepare_exit(code, grace_s=2.0):
    """Make sure the process really ends soon after the main loop returns.

    A user handler may have left non-daemon threads running, or registered
    an atexit hook that blocks; interpreter shutdown would wait forever and
    leave an orphan. A daemon watchdog forces the exit after a grace period.
    """
    # A second SIGTERM during shutdown now kills at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    timer = threading.Timer(grace_s, os._exit, args=(code,))
    timer.daemon = True
    timer.start()
