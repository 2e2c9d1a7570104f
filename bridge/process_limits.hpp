// Hard limits on one worker process (config worker.limits): the kernel's
// rlimits, set by the worker itself before any handler module is imported
// (python/dspex_worker/limits.py), on both start paths (spawned, and forked
// by the fork server: a fork inherits the server's limits, so they are set
// in the child after the fork). 0 means "not set": the host's own limit
// stays. Soft and hard limit are both set, so that user code cannot raise
// them again; the CPU limit's hard one sits a second above its soft one, so
// that the kernel sends SIGXCPU (reported as cpu_limit) before SIGKILL.
//
//   memory_mb    RLIMIT_AS: the address space, not the resident set. An
//                allocation past it fails (Python raises MemoryError, which
//                the worker reports as out_of_memory). Why not cgroup v2
//                memory.max: see docs/operations.md "Hard limits".
//   cpu_seconds  RLIMIT_CPU: CPU time over the worker's whole life (not per
//                request); at the limit the kernel sends SIGXCPU.
//   open_files   RLIMIT_NOFILE: descriptors; past it open() fails (EMFILE).
//   processes    RLIMIT_NPROC: counted per real user id, over every process
//                and thread of that user on the machine (the host, the other
//                workers); not enforced for root (CAP_SYS_RESOURCE).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dspex::bridge {

struct process_limits {
  std::uint64_t memory_mb = 0;
  std::uint64_t cpu_seconds = 0;
  std::uint64_t open_files = 0;
  std::uint64_t processes = 0;

  bool any() const noexcept { return memory_mb || cpu_seconds || open_files || processes; }

  /// The worker's command-line option: {"--limits", "memory_mb=256,cpu_seconds=5"};
  /// empty when no limit is set.
  std::vector<std::string> worker_args() const;
};

/// The smallest values that leave a Python worker able to start (its
/// interpreter, its threads and its protocol descriptors); config
/// validation refuses less.
inline constexpr std::uint64_t min_memory_mb = 64;
inline constexpr std::uint64_t min_open_files = 16;

} // namespace dspex::bridge
