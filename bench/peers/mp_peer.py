#!/usr/bin/env python3
"""Peer benchmark: Python's own process pools running dspex's trivial function.

    python3 mp_peer.py --kind pool|executor --workers W --duration S \
        --payload N [--inflight K] [--warmup S] [--time-limit S] [--run-id R] \
        [--sleep-ms MS]

kind "pool" is multiprocessing.Pool.apply_async, kind "executor" is
concurrent.futures.ProcessPoolExecutor.submit; both with W processes (fork
start method, Linux's default) running echo(payload) -> {"payload": payload},
the same work as the dspex worker's "echo" command; with --sleep-ms each
task first waits that long (the I/O-bound scenario: an LM call's wait, as
the dspex mock LM's latency_ms). The driver keeps K
submissions outstanding (default 4W, as the dspex target's "4W clients"):
each completion callback frees a slot and the main thread refills it.

Prints exactly one JSON line on stdout:
  {"kind", "workers", "inflight", "payload_bytes", "requests", "errors",
   "seconds", "requests_per_s", "latency_us": {"p50","p90","p99","p999","max","mean"},
   "cdf_us": [200 quantiles], "python", "start_method", "ok": true}
or {"ok": false, "error": "..."} with a non-zero exit.

Hygiene: the pool is always shut down (close/join, terminate on error);
every pool process asks Linux for SIGKILL when this process dies
(PR_SET_PDEATHSIG) and so does this process for its parent; a watchdog ends
everything at --time-limit no matter what. Standard library only.
"""

import argparse
import json
import multiprocessing
import os
import signal
import sys
import threading
import time

EXIT_ERROR = 1
EXIT_TIME_LIMIT = 3


def echo(payload):
    # The benchmark's trivial function: keep it free of work.
    return {"payload": payload}


def wait_then_echo(payload, sleep_s):
    time.sleep(sleep_s)
    return {"payload": payload}


def _set_parent_death_signal():
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(int(signal.SIGKILL)),
                   ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    except Exception:
        pass


def _pool_process_init(expected_parent):
    # Runs in each pool process: die with the driver, even by SIGKILL.
    _set_parent_death_signal()
    if os.getppid() != expected_parent:
        os._exit(0)
    # Ctrl-C belongs to the driver, which shuts the pool down in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _quantiles(sorted_values, points):
    n = len(sorted_values)
    if n <= points:
        return list(sorted_values)
    last = n - 1
    return [sorted_values[round(last * i / (points - 1))] for i in range(points)]


def _rank(sorted_values, q):
    # Nearest rank, as the C++ side (bench/report.cpp) computes it.
    n = len(sorted_values)
    if n == 0:
        return 0.0
    import math
    idx = math.ceil(q * n)
    return sorted_values[max(0, min(idx - 1, n - 1))]


class Driver:
    """Keeps `inflight` submissions outstanding and records each latency."""

    def __init__(self, submit, inflight, payload):
        self.submit = submit          # submit(t0) -> registers self.complete
        self.inflight = inflight
        self.payload = payload
        self.slots = threading.Semaphore(inflight)
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.completed = 0
            self.errors = 0
            self.latencies_ns = []
            self.last_done = None

    def complete(self, t0, ok):
        now = time.perf_counter_ns()
        with self.lock:
            if ok:
                self.completed += 1
                self.latencies_ns.append(now - t0)
            else:
                self.errors += 1
            self.last_done = now
        self.slots.release()

    def run(self, seconds):
        """Submit until `seconds` pass, then wait for every outstanding one."""
        start = time.perf_counter_ns()
        deadline = start + int(seconds * 1e9)
        slots = self.slots
        submit = self.submit
        while time.perf_counter_ns() < deadline:
            if slots.acquire(timeout=0.05):
                submit(time.perf_counter_ns())
        # Drain: take every slot back, i.e. every submission completed.
        for _ in range(self.inflight):
            slots.acquire()
        for _ in range(self.inflight):
            slots.release()
        return start


def run_pool(ctx, workers, payload, inflight, warmup, duration, sleep_s=0.0):
    pool = ctx.Pool(processes=workers, initializer=_pool_process_init,
                    initargs=(os.getpid(),))
    finished = False
    try:
        driver = None
        expected = len(payload)

        def submit(t0):
            def done(result):
                try:
                    ok = len(result["payload"]) == expected
                except Exception:
                    ok = False
                driver.complete(t0, ok)

            def failed(exc):
                driver.complete(t0, False)
            if sleep_s > 0:
                pool.apply_async(wait_then_echo, (payload, sleep_s), callback=done,
                                 error_callback=failed)
            else:
                pool.apply_async(echo, (payload,), callback=done, error_callback=failed)

        driver = Driver(submit, inflight, payload)
        result = measure(driver, warmup, duration)
        finished = True
        return result
    finally:
        if finished:
            pool.close()      # let the processes finish and exit on their own
        else:
            pool.terminate()  # an error or SIGTERM: stop them now
        pool.join()


def run_executor(ctx, workers, payload, inflight, warmup, duration):
    from concurrent.futures import ProcessPoolExecutor
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                   initializer=_pool_process_init,
                                   initargs=(os.getpid(),))
    try:
        driver = None
        expected = len(payload)

        def done(future):
            try:
                ok = len(future.result()["payload"]) == expected
            except BaseException:
                ok = False
            driver.complete(future.t0, ok)

        def submit(t0):
            future = executor.submit(echo, payload)
            future.t0 = t0
            future.add_done_callback(done)

        driver = Driver(submit, inflight, payload)
        return measure(driver, warmup, duration)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def measure(driver, warmup, duration):
    if warmup > 0:
        driver.run(warmup)  # starts every process, fills caches
        warmup_requests = driver.completed
        driver.reset()
    else:
        warmup_requests = 0
    start = driver.run(duration)
    with driver.lock:
        end = driver.last_done or time.perf_counter_ns()
        latencies = sorted(driver.latencies_ns)
        completed, errors = driver.completed, driver.errors
    seconds = (end - start) / 1e9
    us = [x / 1000.0 for x in latencies]
    return {
        "requests": completed,
        "errors": errors,
        "seconds": seconds,
        "requests_per_s": completed / seconds if seconds > 0 else 0.0,
        "warmup_requests": warmup_requests,
        "latency_us": {
            "p50": _rank(us, 0.50), "p90": _rank(us, 0.90), "p99": _rank(us, 0.99),
            "p999": _rank(us, 0.999),
            "max": us[-1] if us else 0.0, "mean": sum(us) / len(us) if us else 0.0,
        },
        "cdf_us": _quantiles(us, 200),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("pool", "executor"), required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds")
    parser.add_argument("--payload", type=int, default=64, help="payload bytes")
    parser.add_argument("--inflight", type=int, default=0, help="outstanding submissions (default 4W)")
    parser.add_argument("--warmup", type=float, default=0.3, help="unmeasured seconds first")
    parser.add_argument("--time-limit", type=float, default=0.0,
                        help="hard limit in seconds (default duration + warmup + 30)")
    # Unused: it sits in argv so the host can find this run's processes.
    parser.add_argument("--run-id", default="")
    parser.add_argument("--sleep-ms", type=float, default=0.0,
                        help="each task waits this long first (kind pool)")
    options = parser.parse_args(argv)
    if options.workers < 1 or options.payload < 0 or options.duration <= 0:
        parser.error("workers >= 1, payload >= 0 and duration > 0 are required")
    if options.inflight <= 0:
        options.inflight = 4 * options.workers
    if options.time_limit <= 0:
        options.time_limit = options.duration + options.warmup + 30.0
    return options


def _arm_time_limit(seconds):
    """Ends the run at `seconds` whatever state it is in."""
    def expire():
        try:
            _emit({"ok": False, "error": f"time limit of {seconds:.1f} s reached"})
        finally:
            for child in multiprocessing.active_children():
                try:
                    child.kill()
                except Exception:
                    pass
            os._exit(EXIT_TIME_LIMIT)
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def _on_sigterm(signum, frame):
    raise SystemExit(EXIT_ERROR)  # unwinds through the pool's cleanup


def main(argv=None):
    _set_parent_death_signal()
    options = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _arm_time_limit(options.time_limit)
    ctx = multiprocessing.get_context("fork")
    payload = "x" * options.payload
    try:
        if options.kind == "pool":
            result = run_pool(ctx, options.workers, payload, options.inflight,
                              options.warmup, options.duration, options.sleep_ms / 1000.0)
        else:
            result = run_executor(ctx, options.workers, payload, options.inflight,
                                  options.warmup, options.duration)
    except Exception as exc:
        _emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return EXIT_ERROR
    result.update({
        "ok": True,
        "kind": "mp_pool" if options.kind == "pool" else "process_pool_executor",
        "workers": options.workers,
        "inflight": options.inflight,
        "payload_bytes": options.payload,
        "python": sys.version.split()[0],
        "start_method": "fork",
        "sleep_ms": options.sleep_ms,
    })
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
