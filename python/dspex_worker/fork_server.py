"""The fork server: python3 -m dspex_worker.fork_server --run-id R --parent-pid P
[--preload a,b] [--socket-fd 3].

One per pool. It imports the worker package and the preload modules once,
freezes the heap (gc.freeze, so the collector does not touch, and so copy,
the shared pages in every child), and from then on only forks workers on
request: the shape of CPython's multiprocessing forkserver, written for our
protocol. A worker forked here starts in about a millisecond with every
preload already imported.

The host talks to it over one SOCK_SEQPACKET socket (fd 3): one JSON message
per packet.
  server -> host  {"op": "ready", "pid": P}          once, after the imports
                  {"op": "init_failed", "error": E}  then exit code 3
  host -> server  {"op": "fork", "req": N, "argv": [...], "env": {...}}
                  with three descriptors (SCM_RIGHTS): the worker's stdin,
                  stdout and stderr, which the host created close-on-exec
  server -> host  {"op": "forked", "req": N, "pid": P}
                  {"op": "fork_failed", "req": N, "error": E}
                  {"op": "exit", "pid": P, "status": RAW}  the raw waitpid status
EOF on the socket means the host is gone: the server exits, and its children
die with it (their parent-death signal).

It stays single-threaded: a fork copies only the calling thread, so a thread
a preload left running would be missing (with whatever locks it held) in every
child. Such a preload is refused with a clear error.

Its command line carries "dspex_worker" and "--run-id R". A forked worker
would keep it (/proc/PID/cmdline is the inherited argv memory); it rewrites
that memory with its own worker command line (set_title), which carries the
run id as well, so the host's leftover reaping by run id finds the workers as
well as the server, and ps shows which worker is which.
"""

import os
import sys

_PPID_AT_START = os.getppid()

EXIT_STARTUP_FAILED = 3
_MAX_MESSAGE = 1 << 20


def parse_args(argv):
    import argparse
    parser = argparse.ArgumentParser(prog="python3 -m dspex_worker.fork_server")
    # Unused here: it sits in argv (ours and every forked child's) for pgrep -f.
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--preload", action="append", default=[])
    parser.add_argument("--socket-fd", type=int, default=3)
    options = parser.parse_args(argv)
    options.preload = [m.strip() for item in options.preload
                       for m in item.split(",") if m.strip()]
    return options


def _send(sock, message):
    import json
    sock.send(json.dumps(message).encode())


def _native_threads():
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def warm_up(preload):
    """Imports what every worker needs, then the preload modules.

    Returns None, or the reason to refuse (a message for the host)."""
    import importlib
    import threading
    import traceback
    # What the worker's main imports before it serves: import it once here.
    import dspex_worker.__main__  # noqa: F401
    import dspex_worker.commands  # noqa: F401
    import dspex_worker.lm  # noqa: F401
    import dspex_worker.programs  # noqa: F401
    import dspex_worker.protocol  # noqa: F401
    import dspex_worker.registry  # noqa: F401
    import dspex_worker.worker  # noqa: F401
    import dspex_worker.faults  # noqa: F401
    cwd = os.getcwd()
    if cwd not in sys.path:  # as the worker does for its handler modules
        sys.path.insert(0, cwd)
    for name in preload:
        try:
            importlib.import_module(name)
        except BaseException:
            return (f"preload module {name!r} failed to import:\n"
                    + traceback.format_exc().rstrip())
    others = [t.name for t in threading.enumerate()
              if t is not threading.main_thread()]
    if others or _native_threads() > 1:
        names = ", ".join(others) if others else "native threads"
        return ("preload left threads running (" + names + "); a fork copies "
                "only one thread, so the fork server refuses to start. Start "
                "those threads lazily, in the worker, instead of at import.")
    return None


def _option(argv, name):
    for i, a in enumerate(argv[:-1]):
        if a == name:
            return argv[i + 1]
    return None


def _memory_range(index):
    """Two addresses from /proc/self/stat: fields index and index + 1 after
    the command name (45: the argv block, 47: the environment block)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[index]), int(fields[index + 1])


def set_title(argv):
    """Shows the worker's own command line in /proc/PID/cmdline (ps, pgrep,
    the host's leftover reaping), written over the inherited argv memory.

    A fork keeps the server's command line, which names the run but not the
    worker. The full worker command line is used when it fits, else a short
    one with the package, the run id and the worker id; else the server's
    stays (it carries the run id too). Best effort: False when not possible.
    """
    full = [sys.executable, "-m", "dspex_worker"] + list(argv)
    short = ["dspex_worker", "--run-id", _option(argv, "--run-id") or "?",
             "--worker-id", _option(argv, "--worker-id") or "?"]
    try:
        start, end = _memory_range(45)  # arg_start, arg_end
        for args in (full, short):
            title = b"\0".join(a.encode() for a in args) + b"\0"
            if len(title) <= end - start:
                fd = os.open("/proc/self/mem", os.O_RDWR)
                try:
                    os.pwrite(fd, title.ljust(end - start, b"\0"), start)
                finally:
                    os.close(fd)
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def set_environ_entry(key, value):
    """Writes `value` over the value of `key` in this process's initial
    environment block (env_start..env_end in /proc/self/stat), in place.
    Only a value of the same length fits (scopes have a fixed width).
    Best effort: False when not possible."""
    try:
        start, end = _memory_range(47)  # env_start, env_end
        fd = os.open("/proc/self/mem", os.O_RDWR)
        try:
            block = os.pread(fd, end - start, start)
            prefix = b"\0" + key.encode() + b"="
            at = (b"\0" + block).find(prefix)
            if at < 0:
                return False
            at += len(prefix) - 1  # the value's offset in the block
            old_end = block.find(b"\0", at)
            new = value.encode()
            if (old_end if old_end >= 0 else len(block)) - at != len(new):
                return False
            os.pwrite(fd, new, start + at)
            return True
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return False


def child_main(server_pid, fds, request, sock, sync_w):
    """In the forked child: become a worker exactly as a spawned one starts."""
    import random
    import signal
    from dspex_worker import hygiene
    # First: die with the fork server, and check it did not die before that.
    hygiene.set_parent_death_signal()
    if os.getppid() != server_pid:
        os._exit(0)
    set_title(request.get("argv", []))
    # Only now may the host learn our pid: the death signal is armed and the
    # command line names this worker (and its run) for anyone who looks.
    os.write(sync_w, b"1")
    os.close(sync_w)
    # The server's signal state is not the worker's.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP,
                signal.SIGPIPE, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    # Python ignores SIGPIPE at start-up; a spawned worker has it ignored too.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    # The protocol descriptors, where a spawned worker finds them.
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    # Every other inherited descriptor goes: the server's socket (a worker
    # holding it would keep the server's EOF from ever coming) and its wake-up
    # pipe. Detach the Python objects first, so none closes a reused number.
    sock.detach()
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536)
    for k, v in request.get("env", {}).items():
        os.environ[k] = v
    # What /proc/PID/environ shows of us (and of children we fork without
    # an exec) is the server's environment block: our scope goes over the
    # server's there, so the host's sweeps find what we start.
    scope = request.get("env", {}).get("DSPEX_SCOPE")
    if scope:
        set_environ_entry("DSPEX_SCOPE", scope)
    random.seed()  # never the server's sequence (os.register_at_fork does too)
    argv = list(request.get("argv", []))
    sys.argv = ["dspex_worker"] + argv
    from dspex_worker.__main__ import main
    code = 1
    try:
        code = main(argv, ppid_at_start=server_pid)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        code = 1
    # Not back into the server's loop: run what interpreter exit would run.
    try:
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code if isinstance(code, int) else 1)


def serve(sock, server_pid):
    import json
    import select
    import signal
    import socket

    # SIGCHLD wakes the loop through a pipe; children are reaped in the loop.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.siginterrupt(signal.SIGCHLD, False)

    children = set()
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            ready = []
        if wake_r in ready:
            try:
                while os.read(wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        # Reap every exited child and relay its raw status.
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            _send(sock, {"op": "exit", "pid": pid, "status": status})
        if sock not in ready:
            continue
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 8)
        except InterruptedError:
            continue
        if not data:
            return 0  # the host is gone: our children follow (parent-death signal)
        try:
            request = json.loads(data)
        except ValueError:
            request = {}
        req = request.get("req")
        if request.get("op") != "fork" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            _send(sock, {"op": "fork_failed", "req": req,
                         "error": "expected a fork request with three descriptors"})
            continue
        sys.stderr.flush()
        sync_r, sync_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds + [sync_r, sync_w]:
                os.close(fd)
            _send(sock, {"op": "fork_failed", "req": req, "error": str(exc)})
            continue
        if pid == 0:
            child_main(server_pid, fds, request, sock, sync_w)
        for fd in fds:
            os.close(fd)
        os.close(sync_w)
        try:
            os.read(sync_r, 1)  # the child's go-ahead, or EOF when it died first
        except OSError:
            pass
        os.close(sync_r)
        children.add(pid)
        # Before any exit of it can be relayed: the loop reaps only after this.
        _send(sock, {"op": "forked", "req": req, "pid": pid})


def main(argv=None):
    import gc
    import socket
    from dspex_worker import hygiene
    from dspex_worker.log import log, set_worker_id

    set_worker_id("fork_server")
    hygiene.set_parent_death_signal()
    options = parse_args(sys.argv[1:] if argv is None else argv)
    if hygiene.parent_is_gone(_PPID_AT_START, options.parent_pid):
        return 0
    import signal
    # The host stops us with EOF or SIGTERM; Ctrl-C is the host's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        sock = socket.socket(fileno=options.socket_fd)
        os.set_inheritable(options.socket_fd, False)
    except OSError as exc:
        log(f"fd {options.socket_fd} is not the host's socket: {exc}")
        return EXIT_STARTUP_FAILED
    failure = warm_up(options.preload)
    if failure:
        log(failure)
        try:
            _send(sock, {"op": "init_failed", "error": failure})
        except OSError:
            pass
        return EXIT_STARTUP_FAILED
    gc.freeze()
    server_pid = os.getpid()
    _send(sock, {"op": "ready", "pid": server_pid})
    try:
        return serve(sock, server_pid)
    except (BrokenPipeError, ConnectionResetError):
        return 0


if __name__ == "__main__":
    sys.exit(main())
