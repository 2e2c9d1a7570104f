// Worker recycling: a pool retires a worker that has served enough, grown
// too big or lived too long, and starts a fresh one in its place, as
// gunicorn's max_requests, Celery's worker_max_tasks_per_child /
// worker_max_memory_per_child and multiprocessing's maxtasksperchild do. A
// leak in Python code then costs at most one worker's limit.
//
//   max_requests    requests a worker serves, then it goes (a lease counts
//                   as one). 0: off
//   max_rss_mb      resident set of the worker's process (/proc/PID/statm),
//                   sampled on the pool's recycle tick (every 200 ms), not
//                   per request. 0: off
//   max_age_ms      how long a worker lives. 0: off
//   recycle_jitter  fraction in [0, 1): each worker's request and age limits
//                   are drawn uniformly from [limit * (1 - jitter), limit],
//                   so workers started together do not all go together. The
//                   limits are never exceeded (a cap stays a cap); RSS is
//                   measured, so it needs none.
//
// Only an idle worker is recycled: when it checks in (its last request
// answered) or, for age and RSS, on the tick while it sits idle. A busy
// worker over its request or age limit finishes what it serves first. A
// busy worker over max_rss_mb is not recycled but killed on the tick, its
// callers answered out_of_memory (a handler still growing would not stop by
// itself): the pool's replaced.out_of_memory, not recycled_rss. The pool retires it
// on the deliberate path (pool.hpp): terminate_child, restart_child, no
// restart intensity spent, counted in status "replaced" as
// recycled_requests, recycled_rss or recycled_age. Its supervisor stops it
// gracefully (the shutdown command, EOF, SIGTERM, SIGKILL): an idle worker
// is not stuck, and its Python code may have cleanup to run.
#pragma once

#include <caf/atom.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <random>

namespace dspex {

/// The pool's recycle tick (age and RSS of idle workers).
using recycle_atom = caf::atom_constant<caf::atom("recycle")>;

struct recycle_config {
  std::uint64_t max_requests = 0;
  std::uint64_t max_rss_mb = 0;
  std::chrono::milliseconds max_age{0};
  double jitter = 0.1;

  bool enabled() const { return max_requests > 0 || max_rss_mb > 0 || max_age.count() > 0; }
  /// Age and RSS need a periodic look; max_requests alone does not.
  bool needs_tick() const { return max_rss_mb > 0 || max_age.count() > 0; }
  /// A quarter of max_age (at least 10 ms), at most a second; at most
  /// 200 ms with max_rss_mb (a handler growing 50 MB/s overshoots by ~10 MB).
  std::chrono::milliseconds tick_interval() const;
};

enum class recycle_cause { none, requests, rss, age };

/// The key in the pool's status "replaced": "recycled_requests", ...
const char* replaced_key(recycle_cause c) noexcept;

using recycle_clock = std::chrono::steady_clock;

/// One worker's limits, drawn once when it joins its pool, and what the pool
/// last measured of it.
struct recycle_budget {
  std::uint64_t max_requests = 0;  ///< after jitter; 0: off
  std::chrono::milliseconds max_age{0};
  std::uint64_t max_rss_bytes = 0;
  recycle_clock::time_point born = recycle_clock::now();
  int os_pid = -1;                 ///< learnt from the worker's stats; -1: unknown
  std::uint64_t rss_bytes = 0;     ///< last sample; 0: none yet

  /// Why this worker should go now, having served `served` requests.
  recycle_cause due(std::uint64_t served, recycle_clock::time_point now) const;
  /// The last sample is over max_rss_mb.
  bool over_rss() const { return max_rss_bytes > 0 && rss_bytes > max_rss_bytes; }
  /// Reads the process's RSS into rss_bytes (kept when it cannot be read).
  void sample_rss();
};

/// Draws budgets for a pool's workers from one seeded generator.
class recycler {
public:
  recycler() = default;
  explicit recycler(recycle_config cfg);
  const recycle_config& config() const { return cfg_; }
  recycle_budget draw(recycle_clock::time_point now);

private:
  recycle_config cfg_;
  std::mt19937_64 rng_{std::random_device{}()};
};

/// Resident set size of process `pid` in bytes, from /proc/PID/statm.
std::optional<std::uint64_t> rss_bytes(int pid);

} // namespace dspex
