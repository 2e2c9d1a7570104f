// `dspex-bench start`: worker start and recovery, fork server against spawn,
// side by side in one run (issue 12). Each figure is measured for both start
// methods on the same machine, one after the other, and shown as a ratio:
//
// - one worker's spawn-to-first-reply (a worker on its own, spawned): the unit
//   of the other ratios;
// - pool of N ready (from starting the pool supervisor to the pool's ready,
//   the fork server's own start included);
// - a SIGKILLed worker answering again (pool of 1: kill, then the time until
//   a ping is answered by the replacement), p50;
// - a rolling reload of the N workers ((reload, surge) to the pool), surge
//   1 and N, against N spawns (the spawned pool of N ready, and N single
//   spawns one after the other);
// - with a preload module that sleeps 1 s on import: a spawned worker's
//   start, the forked replacement p50, pool of N ready;
// - PSS per worker (/proc/PID/smaps_rollup) with a preload holding 50 MB;
// - a big pool ready.
// Figures only: nothing here is asserted by a test.
#pragma once

#include <cstddef>
#include <string>

namespace dspex::bench {

struct start_bench_options {
  std::size_t pool = 8;          ///< workers of "pool of N ready"
  int repeats = 3;               ///< pool-ready samples per method
  int kill_repeats = 10;         ///< SIGKILL samples per method
  std::size_t big_pool = 256;    ///< 0 skips it
  std::size_t pss_workers = 4;   ///< workers whose PSS is averaged
  bool slow_preload = true;      ///< the 1 s preload figures
  std::string python = "python3";
};

/// Measures and prints the table on stdout; returns 0, or 1 when a pool did
/// not start.
int run_start_bench(const start_bench_options& o);

} // namespace dspex::bench
