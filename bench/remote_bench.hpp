// `dspex-bench remote`: a pool through a remote_pool (CAF's middleman, BASP
// over loopback TCP) against the same pool called locally, in one run, as
// ratios. Two nodes in one process, each in an actor_system of its own with
// the io module: "remote" listens on 127.0.0.1 (an OS-chosen port) and
// holds the pool; "local" holds only a remote_pool naming it. Each figure is
// measured on the remote node's own pool (node::execute) and through the
// local node's remote_pool (node::execute_on), each call with a deadline,
// in `rounds` rounds that alternate which side goes first:
//
// - round trip p50 / p99, one client, `ping` (the samples of every round);
// - throughput with `clients` threads, each one request in flight (the
//   requests of every round over their time);
// - with `group`: the throughput of a pool_group over a local pool and a
//   remote_pool (workers/2 each) against one node of `workers`.
// Figures only: nothing here is asserted by a test.
#pragma once

#include <cstddef>

namespace dspex::bench {

struct remote_bench_options {
  std::size_t workers = 2;
  std::size_t clients = 8;
  int round_trips = 2000;    ///< samples of the round trip, per side and round
  int requests = 4000;       ///< requests of the throughput run, per side and round
  int rounds = 3;            ///< rounds, alternating which side goes first
  bool group = true;         ///< also a pool_group over 2 nodes x workers/2 against 1 node x workers
  bool link = true;          ///< the listening nodes offer the request link (false: BASP only)
};

/// Measures and prints the table on stdout; returns 0, or 1 when a node did
/// not start or a request failed.
int run_remote_bench(const remote_bench_options& o);

} // namespace dspex::bench
