"""Entry point: python3 -m dspex_worker --worker-id ID --run-id RUNID [options].

Exit codes: 0 clean stop (EOF, SIGTERM, shutdown command, host gone);
1 internal error; 2 bad command line or an inbound frame above
--max-frame-bytes; 3 a --handlers module failed to load or clashed with a
built-in command. Fault injection exits with whatever it was asked for.

A worker that cannot start as configured (exit 3) logs one line and answers
the host's first request (its init ping) with error type "invalid_config"
and the same line, e.g. "handler module 'my_cmds' failed to import:
ModuleNotFoundError: No module named 'my_cmds'", which the host reports as
the pool's start error: a config error, not a crash to restart and log.
"""

import os
import sys

# Read before anything slow: if the host dies during our start-up we are
# re-parented, and only a ppid taken this early can show it.
_PPID_AT_START = os.getppid()

EXIT_INTERNAL_ERROR = 1
EXIT_STARTUP_FAILED = 3


class StartupError(Exception):
    """The worker cannot start as configured; str() is one line for people."""

    def __init__(self, message, traceback_text=""):
        super().__init__(message)
        self.traceback_text = traceback_text


def _import_failure(module, exc):
    """One line: the module, the exception, and where in user code it rose
    (the innermost frame outside the import machinery and this package;
    none when the module itself was not found)."""
    import importlib
    import traceback
    text = str(exc)
    line = (f"handler module {module!r} failed to import: {type(exc).__name__}"
            + (f": {text}" if text else ""))
    line = " ".join(line.split())  # a multi-line message stays one line
    skip = tuple(os.path.join(os.path.dirname(os.path.abspath(f)), "")
                 for f in (importlib.__file__, __file__))
    where = None
    for frame in traceback.extract_tb(exc.__traceback__):
        name = frame.filename
        if not name.startswith("<") and not name.startswith(skip):
            where = f"{name}:{frame.lineno}"
    if where and not isinstance(exc, SyntaxError):  # its text names the line
        line += f" (at {where})"
    return StartupError(line, traceback.format_exc())


def _refuse_start(in_fd, out_fd, max_frame_bytes, error):
    """Answers the host's first request (the init ping) with the reason."""
    from dspex_worker.protocol import (Channel, ProtocolError, decode_request,
                                       encode_failure, request_id_of)
    channel = Channel(in_fd, out_fd, max_frame_bytes)
    try:
        payload = channel.read_frame()
        if payload is None:
            return
        try:
            request_id = decode_request(payload)[0]
        except ProtocolError:
            request_id = request_id_of(bytes(payload)) or 0
        channel.write_frame(encode_failure(request_id, "invalid_config", str(error),
                                           error.traceback_text))
    except (OSError, EOFError, ValueError):
        pass  # the host is gone or broke the stream: the exit code says it


def parse_args(argv):
    import argparse

    from dspex_worker.protocol import DEFAULT_MAX_FRAME_BYTES

    parser = argparse.ArgumentParser(prog="python3 -m dspex_worker",
                                     description="dspex Python worker")
    parser.add_argument("--worker-id", required=True)
    # Unused by the worker: it sits in argv so the host can find leftover
    # processes of one run with pgrep -f.
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--handlers", action="append", default=[],
                        help="comma-separated modules that register commands")
    parser.add_argument("--fault-injection", action="store_true",
                        help="enable the fault_* commands")
    parser.add_argument("--max-frame-bytes", type=positive_int,
                        default=DEFAULT_MAX_FRAME_BYTES)
    parser.add_argument("--mode", choices=("pool", "single"), default="pool")
    parser.add_argument("--max-concurrency", type=positive_int, default=1,
                        help="requests run at once (sync ones on request "
                             "threads started as needed, async ones on the "
                             "event loop)")
    parser.add_argument("--parent-pid", type=positive_int, default=None,
                        help="exit at once unless this is our parent")
    parser.add_argument("--limits", type=_limits, default={},
                        help="hard limits, e.g. memory_mb=256,cpu_seconds=5,"
                             "open_files=256,processes=64")
    options = parser.parse_args(argv)
    options.handlers = [name.strip() for item in options.handlers
                        for name in item.split(",") if name.strip()]
    return options


def _limits(text):
    from dspex_worker import limits
    return limits.parse(text)


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def build_registry(options):
    import importlib

    from dspex_worker.commands import BUILTIN_COMMANDS
    from dspex_worker.lm import LM_COMMANDS
    from dspex_worker.programs import PROGRAM_COMMANDS
    from dspex_worker.registry import CommandRegistry, user_registry

    registry = CommandRegistry()
    registry.include(BUILTIN_COMMANDS)
    registry.include(PROGRAM_COMMANDS)
    registry.include(LM_COMMANDS)
    if options.fault_injection:
        from dspex_worker.faults import FAULT_COMMANDS
        registry.include(FAULT_COMMANDS)

    if options.handlers:
        from dspex_worker import hygiene
        # -m puts the cwd on sys.path, but not under -P / PYTHONSAFEPATH.
        cwd = os.getcwd()
        if cwd not in sys.path:
            sys.path.insert(0, cwd)
        for module in options.handlers:
            try:
                importlib.import_module(module)
            except BaseException as exc:  # SyntaxError, a SystemExit in it
                if hygiene.termination_requested():
                    raise
                raise _import_failure(module, exc) from None
    # Shadowing a built-in (say, ping, which health checks rely on) is refused.
    try:
        registry.include(user_registry)
    except ValueError as exc:
        raise StartupError(f"a handler module shadows a built-in command: {exc}") from None
    return registry


def main(argv=None, ppid_at_start=None):
    """ppid_at_start: the parent's pid as seen first (a worker forked by the
    fork server passes the server's; a spawned one uses the module's)."""
    from dspex_worker import hygiene
    from dspex_worker.log import log, set_worker_id

    # First, before any user code can print: make the protocol fds private.
    try:
        in_fd, out_fd = hygiene.isolate_stdio()
    except OSError as exc:
        log(f"cannot take over stdin/stdout: {exc}")
        return EXIT_INTERNAL_ERROR
    hygiene.install_signal_handlers()
    hygiene.set_parent_death_signal()

    options = parse_args(argv)
    set_worker_id(options.worker_id)
    first_ppid = _PPID_AT_START if ppid_at_start is None else ppid_at_start
    if hygiene.parent_is_gone(first_ppid, options.parent_pid):
        log("parent died before start-up finished; exiting")
        return 0
    if options.limits:
        # Before any handler module is imported: user code starts limited.
        from dspex_worker import limits
        try:
            limits.apply(options.limits)
        except (OSError, ValueError) as exc:
            log(f"cannot set limits {options.limits}: {exc}")
            return EXIT_INTERNAL_ERROR

    try:
        registry = build_registry(options)
    except StartupError as exc:
        log(str(exc))
        _refuse_start(in_fd, out_fd, options.max_frame_bytes, exc)
        return EXIT_STARTUP_FAILED
    except Exception:
        import traceback
        log("failed to load command handlers:\n" + traceback.format_exc().rstrip())
        return EXIT_STARTUP_FAILED

    from dspex_worker.protocol import Channel
    from dspex_worker.worker import Worker
    worker = Worker(worker_id=options.worker_id, run_id=options.run_id,
                    mode=options.mode,
                    channel=Channel(in_fd, out_fd, options.max_frame_bytes),
                    registry=registry, fault_injection=options.fault_injection,
                    max_concurrency=options.max_concurrency)
    try:
        code = worker.serve()
    except SystemExit as exc:  # SIGTERM
        code = exc.code if isinstance(exc.code, int) else 0
    except Exception:
        import traceback
        log("internal error:\n" + traceback.format_exc().rstrip())
        code = EXIT_INTERNAL_ERROR
    hygiene.prepare_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
