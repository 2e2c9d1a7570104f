"""Terse logging to stderr, each line prefixed "[dspex_worker ID]".

stderr is the only channel the host leaves for diagnostics; the protocol fds
never carry log text. Only unusual events are logged: the request loop is the
benchmark's hot path and 256 workers must not flood the host's log.
"""

import sys

_prefix = "[dspex_worker ?] "


def set_worker_id(worker_id):
    global _prefix
    _prefix = f"[dspex_worker {worker_id}] "


def log(message):
    try:
        sys.stderr.write(_prefix + message + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        # A closed stderr must not turn a diagnostic into a crash.
        pass
