// The peer half of `dspex-bench run`: every figure of docs/architecture.md "Targets" that
// does not involve dspex itself, measured on this machine in this run:
//   - the bare loop (bare_loop.hpp) for W = 1, 2, 4, 8: requests/s, and with
//     W = 1 the one-client round-trip p50/p99 (also pinned to one CPU);
//   - multiprocessing.Pool.apply_async and ProcessPoolExecutor for the same W
//     with 4W submissions in flight (python_peer.hpp);
//   - spawn-to-first-reply of one worker, and of 8 spawned back to back.
// Output: the table on stdout, <out>/peers.json, <out>/peers_*.png.
//
// `dspex-bench run` (dspex_bench.hpp) calls measure_peers() in the same run
// as its pool measurements and judges dspex's figures against the floors
// here (bare_for / peer_for), adding its rows to the same report_table;
// `dspex-bench peers` calls run_peer_bench().
#pragma once

#include <dspex/bench/bare_loop.hpp>
#include <dspex/bench/python_peer.hpp>
#include <dspex/bench/report.hpp>

#include <chrono>
#include <string>
#include <vector>

namespace dspex::bench {

struct peer_bench_options {
  std::vector<int> workers{1, 2, 4, 8};
  std::chrono::milliseconds duration{2500};  ///< per measured run
  std::size_t payload_bytes = 64;
  std::uint64_t warmup_requests = 200;       ///< bare loop, per worker
  std::chrono::milliseconds peer_warmup{300};
  int spawn_repeats = 5;
  int pool_ready_workers = 8;  ///< "n workers to first reply"; 0 skips it
  bool bare_parse_replies = true;
  /// Also measure the 1-worker round trip with client and worker pinned to
  /// one CPU (pin_cpu): the floor without cross-CPU wake-ups.
  bool pinned_round_trip = true;
  int pin_cpu = 0;
  bool python_peers = true;
  /// Also drive bench/peers/min_echo.py (read a frame, json.loads,
  /// json.dumps, write) with the bare loop, for each W: the floor of dspex's
  /// Python side (targets::throughput_vs_min_echo).
  bool min_echo = true;
  /// The workers of dspex and of the bare loop under SCHED_BATCH
  /// (worker.sched_batch); false: both under the default policy.
  bool sched_batch = true;
  bool plots = true;
  std::string out_dir = "bench/out";
  std::string python = "python3";
  bool quick = false;

  /// --quick: W = 1, 2, 4, 8 at 250 ms, 2 spawn samples: ~10 s on 2 cores.
  static peer_bench_options quick_defaults();
};

struct peer_bench_result {
  peer_bench_options options;
  json machine;
  std::vector<bare_result> bare;          ///< one per options.workers, in order
  std::vector<bare_result> min_echo;      ///< likewise, driving min_echo.py (empty when !options.min_echo)
  bare_result pinned;                     ///< W = 1 on one CPU (workers == 0: not run)
  std::vector<peer_result> mp_pool;       ///< likewise (empty when !python_peers)
  std::vector<peer_result> executor;      ///< likewise
  spawn_stats spawn_one;                  ///< spawn to first reply, 1 worker
  spawn_stats spawn_many;                 ///< pool_ready_workers back to back
  std::vector<std::string> failures;      ///< measurements that could not run
  std::vector<plot_outcome> plots;
  double wall_seconds = 0;

  const bare_result* bare_for(int workers) const;  ///< nullptr when not measured
  const bare_result* min_echo_for(int workers) const;  ///< likewise
  const peer_result* peer_for(peer_kind kind, int workers) const;  ///< nullptr when not ok
};

/// Runs every measurement (never throws for a failed one: see failures).
/// `progress` may be null.
peer_bench_result measure_peers(const peer_bench_options& opts, progress_line* progress = nullptr);

/// The peer rows (floors and peers, no dspex figures) appended to `table`.
void add_peer_rows(report_table& table, const peer_bench_result& r);

json to_json(const peer_bench_result& r);

/// Requests/s against W of the bare runs that served a request.
throughput_series bare_series(std::string label, const std::vector<bare_result>& runs);

/// Writes peers_throughput.png and peers_latency_cdf.png into out_dir.
std::vector<plot_outcome> plot_peers(const peer_bench_result& r, const std::string& out_dir);

/// `dspex-bench peers` (options: command_line.hpp): measures, prints the
/// table, writes peers.json and the plots. Returns 0 when every measurement
/// ran, 1 when one failed.
int run_peer_bench(const peer_bench_options& opts);

} // namespace dspex::bench
