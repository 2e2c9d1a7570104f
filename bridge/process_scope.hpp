// A process scope: the mark every process a worker starts carries, so that
// nothing it starts outlives it (docs/operations.md "Contained process
// trees").
//
// Each process the host starts (a worker, a fork server, a supervised
// program) gets DSPEX_SCOPE=<run id>/<sequence> in its environment; every
// descendant inherits it, whatever it does to its session, process group or
// parent (setsid(), a double fork, Popen(start_new_session=True)): the
// kernel never reparents an environment. When the process has been reaped,
// its scope is swept: every process still carrying it is SIGKILLed. A later
// run's leftover reaping (host_run.hpp) sweeps the scopes of dead runs, for
// what a host killed by SIGKILL could not sweep itself.
//
// Why an environment mark, not a child subreaper or a cgroup: a subreaper
// keeps orphans in the worker's tree only while the worker lives (the host
// SIGKILLs stuck workers, and then they reparent to init all the same) and
// must reap zombies it cannot tell from the children user code waits for; a
// cgroup per worker needs a delegated cgroup v2 subtree, which a host does
// not always have. The mark's limit: a descendant that replaces its whole
// environment (execve with env={}) or rewrites it in memory is not found.
//
// Scopes have a fixed width (the sequence is zero-padded), so that a worker
// forked by the fork server can write its own over the server's in its
// inherited environment block (python/dspex_worker/fork_server.py), which is
// what /proc/PID/environ shows of it and of its fork-only children.
#pragma once

#include <string>
#include <sys/types.h>

namespace dspex::bridge {

/// The environment variable that carries the scope.
inline constexpr const char* scope_variable = "DSPEX_SCOPE";

/// A scope not used before by this run: "<run id>/<10-digit sequence>".
std::string new_scope();

/// The scope in the environment `pid` started with (/proc/PID/environ);
/// empty when it has none or cannot be read.
std::string scope_of(pid_t pid);

/// The run id a scope names ("h123-456" of "h123-456/0000000007").
std::string run_of_scope(const std::string& scope);

/// SIGKILLs every process (but this one) carrying exactly `scope`, in
/// passes until one finds none (a descendant may fork while the sweep
/// runs); returns how many were killed. One /proc pass costs about a
/// millisecond per hundred processes.
int sweep_scope(const std::string& scope);

} // namespace dspex::bridge
