// The request path's targets (issue 13, docs/architecture.md "Targets"), as
// ratios to the peers measured in the same run. Both tables (`run` and
// `peers`) print and judge against these, so they cannot drift apart.
#pragma once

#include <string>

namespace dspex::bench::targets {

constexpr double round_trip_p50_vs_bare = 1.15;  ///< at most
constexpr double round_trip_p99_vs_bare = 1.5;   ///< at most
constexpr double pinned_p50_vs_bare = 1.25;      ///< at most, everything on one CPU
constexpr double payload_p50_vs_bare = 1.25;     ///< at most, 100 B to 1 MiB
constexpr double throughput_vs_bare = 0.6;       ///< at least, one request in flight per worker
constexpr double throughput_vs_mp_pool = 2.0;    ///< at least
constexpr double concurrent_vs_bare = 1.0;       ///< at least, worker.max_concurrency > 1
/// At least, W = 4 and 8 with 4W clients, against the bare loop driving
/// bench/peers/min_echo.py (read, json.loads, json.dumps, write): dspex's
/// Python side against the least a Python worker can do.
constexpr double throughput_vs_min_echo = 0.75;
/// Streams and cancellation (issue 24; `dspex-bench streams`).
constexpr double first_chunk_vs_unary = 1.2;      ///< at most: p50 time to first chunk / unary round trip
constexpr double chunks_vs_bare = 0.8;            ///< at least: chunks/s of one handler / the chunk floor
constexpr double cancel_p99_ms = 5.0;             ///< at most: cancel sent -> the handler's finally ran
constexpr double asyncio_vs_ideal = 0.9;          ///< at least: I/O-bound on the event loop
/// Host calls (issue 25; `dspex-bench host_calls`): p50 of a handler's
/// ctx.call, timed in the handler, against a client's unary round trip.
constexpr double host_call_p50_vs_unary = 1.5;    ///< at most: fn:NAME, a C++ function
constexpr double pool_call_p50_vs_unary = 2.2;    ///< at most: pool:NAME, another pool

/// "<= 1.15x bare", ">= 2x mp.Pool".
inline std::string at_most(double q, const std::string& peer) {
  std::string s = std::to_string(q);
  s.erase(s.find_last_not_of('0') + 1);
  if (s.back() == '.')
    s.pop_back();
  return "<= " + s + "x " + peer;
}
inline std::string at_least(double q, const std::string& peer) {
  return ">" + at_most(q, peer).substr(1);
}

} // namespace dspex::bench::targets
