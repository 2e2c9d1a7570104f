// A run id names one host run: "h<pid>-<start ticks>". Every worker carries
// it on its command line, so a later run can tell its own workers from the
// leftovers of a host that died (say by SIGKILL before the parent-death
// signal existed, or when a worker escaped it) and stop only those.
#pragma once

#include <functional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace dspex::bridge {

/// This process's run id (computed once).
const std::string& host_run_id();

/// True when `run_id` names a host process that is still alive (same pid
/// and same start time, so a recycled pid does not count).
bool run_is_alive(const std::string& run_id);

/// Finds processes whose command line contains `marker` (e.g. "dspex_worker")
/// and "--run-id R", or whose environment carries a scope of run R
/// (process_scope.hpp: what workers started), where R has our form and
/// names a dead run, and SIGKILLs them. A run id of another form is never touched. Returns how
/// many were stopped. Processes of live runs (other hosts, tests in
/// parallel) are never touched.
int reap_leftovers(const std::string& marker = "dspex_worker");

/// Calls `f(pid)` for every process in /proc, this one included: the one
/// /proc walk that every scan of processes (reaping, tests, the bench) shares.
void for_each_pid(const std::function<void(pid_t)>& f);

/// The command line of `pid`, one string an argument; empty when the
/// process is gone or not readable.
std::vector<std::string> process_cmdline(pid_t pid);

} // namespace dspex::bridge
