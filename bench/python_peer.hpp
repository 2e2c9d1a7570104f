// The Python peers of the throughput target (docs/architecture.md "Targets": "at least
// 1.5x Python's multiprocessing.Pool.apply_async with W processes, same
// machine, same run"): bench/peers/mp_peer.py run as a child process, its
// one JSON line parsed here.
//
// mp_peer.py is found via DSPEX_BENCH_PEERS_DIR, else the source tree of this
// build (<source>/bench/peers), else <exe>/../share/dspex/bench/peers.
#pragma once

#include <dspex/bench/report.hpp>

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace dspex::bench {

enum class peer_kind {
  mp_pool,                ///< multiprocessing.Pool.apply_async
  process_pool_executor,  ///< concurrent.futures.ProcessPoolExecutor.submit
};

const char* to_string(peer_kind k) noexcept;  ///< "mp_pool", "process_pool_executor"
const char* display_name(peer_kind k) noexcept;  ///< "mp.Pool", "ProcessPoolExecutor"

struct peer_options {
  std::string python = "python3";
  std::string script;      ///< mp_peer.py; "" = locate_mp_peer()
  int inflight = 0;        ///< outstanding submissions; 0 = 4 x workers
  std::chrono::milliseconds warmup{300};
  int sleep_ms = 0;        ///< each task waits this long first (the I/O-bound peer)
  std::string run_id;      ///< passed as --run-id (for pgrep); "" = bridge::host_run_id()
};

struct peer_result {
  bool ok = false;
  std::string error;  ///< why not ok (spawn failure, time limit, bad output)
  peer_kind kind = peer_kind::mp_pool;
  int workers = 0;
  int inflight = 0;
  std::size_t payload_bytes = 0;
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  double seconds = 0;
  double requests_per_s = 0;
  latency_summary latency;     ///< submit to completion callback, 4W in flight (includes queueing)
  std::vector<double> cdf_us;  ///< 200 quantiles
  json raw;                    ///< the line as mp_peer.py printed it
};

json to_json(const peer_result& r);

/// Path of bench/peers/<name> (mp_peer.py, min_echo.py, bench_cmds.py, ...),
/// found as mp_peer.py is (above), or "" when none is found.
std::string locate_peer_file(const std::string& name);

/// Path of mp_peer.py, or "" when none is found.
std::string locate_mp_peer();

/// Runs one peer measurement; never throws (failures come back with ok =
/// false). Bounded: mp_peer.py has a hard limit of duration + warmup + 30 s,
/// and its whole process group is SIGKILLed 5 s after that.
peer_result run_python_peer(peer_kind kind, int workers, std::chrono::milliseconds duration,
                            std::size_t payload_bytes, const peer_options& opts = {});

} // namespace dspex::bench
