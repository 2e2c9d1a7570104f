// `dspex-bench host_calls`: handlers calling back into the host (issue 25),
// side by side in one run, as ratios beside their targets (targets.hpp):
//
//   round-trip  one node, a pool "default" and a pool "tools" of 1 worker
//               each, and fn:bench_echo, a C++ function registered on the
//               node that answers its args at once. Each round: a unary
//               bench_echo on "default", timed by the client actor; then a
//               request whose handler makes `calls` host calls to
//               fn:bench_echo, then one making `calls` to pool:tools
//               bench_echo, each call timed in Python around ctx.call
//               (time.perf_counter_ns); the same payload everywhere.
//               Host call p50 against the unary p50, pool-to-pool p50
//               against it.
//   agents      a 4-worker agent pool and a 4-worker tool pool; `agents`
//               client actors each send `agent_rounds` agent requests one
//               after the other, each request making `tool_calls` calls to
//               pool:tools: agent requests/s, tool calls/s, latency p50/p99,
//               errors and hangs (a request unanswered 10 s past its
//               deadline), which must be 0.
//
// The pools load bench/peers/bench_cmds.py (bench_call_loop). Clients are
// CAF event-based actors (actors/pool/call.hpp) with the deadline in the
// request. Output: the table on stdout, <out>/host_calls.json, progress on
// stderr. Nothing here is asserted by a test but that it runs.
#pragma once

#include <dspex/bench/dspex_bench.hpp>
#include <dspex/bench/report.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace dspex::bench {

struct host_call_bench_options {
  std::vector<std::string> parts{"round-trip", "agents"};
  int rounds = 1000;               ///< round-trip: measured rounds
  int warmup = 100;                ///< round-trip: rounds before them
  int calls = 10;                  ///< round-trip: host calls per request, each kind
  std::size_t payload_bytes = 64;  ///< every request's and call's payload
  int agent_workers = 4;
  int tool_workers = 4;
  int agents = 64;                 ///< agent client actors, one request in flight each
  int agent_rounds = 10;           ///< requests each agent client sends
  int tool_calls = 10;             ///< tool calls per agent request
  bool sched_batch = true;         ///< worker.sched_batch
  std::string python = "python3";
  std::string out_dir = "bench/out";
  bool quick = false;
  std::vector<std::string> caf_args;

  /// --quick: 200 rounds, 3 agent rounds.
  static host_call_bench_options quick_defaults();
  bool wants(const std::string& part) const;
};

struct host_call_bench_result {
  host_call_bench_options options;
  json machine;
  latency_recorder unary, fn_call, pool_call;  // round-trip
  load_result agents;                          // agents
  std::uint64_t agent_hangs = 0;
  bool agents_ran = false;
  std::vector<std::string> failures;
  double load_before = -1, load_after = -1;
  double wall_seconds = 0;
};

host_call_bench_result measure_host_calls(const host_call_bench_options& o, progress_line* progress = nullptr);

void add_host_call_rows(report_table& t, const host_call_bench_result& r);

json to_json(const host_call_bench_result& r);

/// `dspex-bench host_calls`: measures, prints the table, writes host_calls.json.
/// Returns 0 when every measurement ran (errors and hangs 0), 1 otherwise.
int run_host_call_bench(const host_call_bench_options& o);

} // namespace dspex::bench
