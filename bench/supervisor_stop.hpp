// How a supervisor's stop time grows with its number of children.
//
// For each size N: a simple_one_for_one supervisor with N dynamic children
// (stopped concurrently, OTP's terminate_dynamic_children) and a one_for_one
// supervisor with N static children (stopped one by one in reverse order,
// each waiting for its down_msg); the time from the exit request to the
// supervisor's down_msg, median of the repeats. The children are trivial
// actors that stop at once, so the figures are the supervision overhead.
// Not asserted anywhere: the test suites only check behaviour.
#pragma once

#include <cstddef>
#include <vector>

namespace dspex::bench {

struct supervisor_stop_sample {
  const char* strategy; ///< "simple_one_for_one" or "one_for_one"
  std::size_t children;
  double start_ms; ///< median time to start the N children
  double stop_ms;  ///< median time to stop the supervisor
};

/// Measures every size in `sizes` (`repeats` times each).
std::vector<supervisor_stop_sample>
measure_supervisor_stop(const std::vector<std::size_t>& sizes, int repeats);

struct supervisor_stop_options {
  std::vector<std::size_t> sizes{1000, 2000, 5000, 10000};
  int repeats = 3;
};

/// `dspex-bench supervisor-stop`: measures every size and prints a table
/// (and the growth relative to the smallest size) on stdout; returns 0.
int run_supervisor_stop_bench(const supervisor_stop_options& o);

} // namespace dspex::bench
