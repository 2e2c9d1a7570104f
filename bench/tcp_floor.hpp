// The floor of any hop between two nodes on this machine: two plain threads
// that pass a 64-byte message back and forth over a loopback TCP connection
// (TCP_NODELAY, blocking reads, no framing, no serialisation). Whatever a
// remote request costs beyond its local twin, a design that crosses a
// socket pays at least one of these round trips: dspex-bench remote prints
// it beside the hop, so a target below it reads as what it is.
#pragma once

#include <dspex/bench/report.hpp>

namespace dspex::bench {

struct tcp_floor {
  latency_recorder rt;      ///< one sample per round trip done
  double cpu_us = 0;        ///< this process's CPU over the round trips (both threads)
  int round_trips = 0;      ///< done, over every call
  bool failed = false;      ///< a call could not connect, or lost its connection
  bool ok() const { return !failed && round_trips > 0; }
  double cpu_per_round_trip() const { return round_trips > 0 ? cpu_us / round_trips : 0; }
};

/// `n` round trips (after a warm-up of 200), added to `into`; a failure
/// stays in it.
void measure_tcp_floor(int n, tcp_floor& into);

} // namespace dspex::bench
