// `dspex-bench run`: every figure of docs/architecture.md "Targets", measured on this
// machine in one run, side by side with its floor, as a ratio, beside the
// target it is judged against.
//
//   floors and peers   measure_peers() (bench_main.hpp): the bare C++ loop on
//                      W threads, multiprocessing.Pool and ProcessPoolExecutor
//                      with W processes, spawn-to-first-reply of one worker;
//   round trip         1 client, 1 worker, echo of the bare loop's payload:
//                      p50 and p99 (also with everything pinned to one CPU,
//                      against the bare loop pinned the same way);
//   throughput         a pool of W workers and 4W clients, W = 1, 2, 4, 8;
//   payloads           100 B, 10 KiB, 1 MiB round trips, dspex and bare;
//   pool of 8 ready    node::start() (returns once every worker answered its
//                      init ping) against one worker's spawn-to-first-reply;
//   SIGKILLed worker   detection (kill -> the in-flight caller's
//                      worker_crashed; kill -> pool status restarts+1) and
//                      kill -> first reply from the replacement;
//   256 workers        ready time, host RSS and threads (must not grow with
//                      workers), serve, stop, leftover processes.
//
// How the dspex clients work (said in the report too): each client is a CAF
// event-based actor that keeps exactly one request in flight against
// node::target() (the pool): request, wait for the reply, request again.
// A latency sample runs from just before request() to the reply handler.
// Throughput counts replies whose completion falls inside the measured
// window (after a warm-up), over that window's length. The actor system runs
// with CAF's defaults (one scheduler thread per core).
//
// Output: the table on stdout, <out>/bench.json, <out>/bench_*.png, progress
// on stderr. Nothing here is asserted by a test (docs/architecture.md: never assert
// wall-clock times).
#pragma once

#include <dspex/actors/node/node.hpp>
#include <dspex/bench/bench_main.hpp>
#include <dspex/bench/report.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace dspex::bench {

// -- shared by bench and chaos: pools, processes, /proc -------------------------------

/// What to change in default_config() for a measured pool. Zero / empty
/// fields keep the default.
struct pool_setup {
  int size = 1;
  std::string python;              ///< worker.python; "" keeps python3
  bool fault_injection = false;    ///< worker.fault_injection
  int request_timeout_ms = 0;      ///< worker.request_timeout_ms
  int init_timeout_ms = 0;         ///< worker.init_timeout_ms
  int checkout_timeout_ms = 0;     ///< pool checkout_timeout_ms
  int worker_intensity = 0;        ///< pool worker_intensity
  int worker_period_ms = 0;        ///< pool worker_period_ms
  int max_consecutive_failures = -1;  ///< -1 keeps the default
  bool circuit = false;            ///< circuit.enabled (off: every failure is counted, none failed fast)
  int max_concurrency = 0;         ///< worker.max_concurrency; 0 keeps the default (1)
  bool sched_batch = true;         ///< worker.sched_batch
  int root_intensity = 0;          ///< root intensity
  int max_queue = 0;               ///< pool max_queue; 0 keeps the default
  int stream_window = 0;           ///< worker.stream_window; 0 keeps the default
  long long stream_window_bytes = 0;  ///< worker.stream_window_bytes; 0 keeps the default
  std::vector<std::string> handler_paths;  ///< worker.handler_paths
  std::vector<std::string> handlers;       ///< worker.handlers (modules)
};

/// default_config() with `s` applied (the pool child is found by its type).
json pool_config_json(const pool_setup& s);

/// node_options for a measured node: python_path from DSPEX_PYTHON_PATH
/// (empty: the node locates the worker package itself).
node_options bench_node_options();

/// Starts a node with `s`; the error says why not.
caf::expected<std::shared_ptr<node>> start_pool_node(caf::actor_system& sys, const pool_setup& s,
                                                     node_options opts = bench_node_options());

/// A node on an actor_system of its own made from `cfg` with what `tree`
/// needs (recommended_settings, network_settings); `sys` holds it. The
/// error says why not (a bad tree, TLS files, the start).
caf::expected<std::shared_ptr<node>> start_network_node(caf::actor_system_config& cfg,
                                                        std::unique_ptr<caf::actor_system>& sys,
                                                        const json& tree);

/// A dspex_worker process of this host run, found in /proc.
struct worker_process {
  pid_t pid = 0;
  std::string worker_id;  ///< its --worker-id
  long rss_kb = -1;       ///< VmRSS; -1 when unknown
};

/// Processes whose command line names dspex_worker and `--run-id run_id`
/// (default: bridge::host_run_id()), sorted by worker id then pid. Bare-loop
/// workers (worker ids "bare-N") are included; filter on worker_id.
std::vector<worker_process> worker_processes(const std::string& run_id = {});

/// Zombie children of this process (exited, never reaped).
int zombie_children();

/// A field of /proc/self/status in its own unit (kB for Vm*, a count for
/// Threads), or -1.
long self_status_field(const char* name);

/// steady_clock now in nanoseconds since its epoch (for atomics).
std::int64_t steady_ns();

/// CAF's own options (`--caf#scheduler.max-threads=2` and the like), as
/// `dspex run` takes them, applied to a config; a bad one is returned.
caf::error apply_caf_args(caf::actor_system_config& cfg, const std::vector<std::string>& caf_args);

/// Moves every `--caf#...` argument out of `args` into the result.
std::vector<std::string> take_caf_args(std::vector<std::string>& args);

/// The steps of a bench command that measures pools (run, streams): a
/// progress line per step, the failures it collects, its nodes started.
class bench_steps {
public:
  /// `label` prefixes the progress line ("bench dspex"); failures land in `failures`.
  bench_steps(std::string label, std::vector<std::string>& failures, progress_line* progress)
    : label_(std::move(label)), failures_(failures), progress_(progress) {}

  void announce(const std::string& what);  ///< the running step
  void done(const std::string& line);      ///< a finished step's line
  void failed(const std::string& what);    ///< a failure: recorded and shown
  void start_clock();                      ///< the progress line's seconds count from here

  /// start_pool_node, or nullptr after failed(what + ": the node did not start: ...").
  std::shared_ptr<node> start(caf::actor_system& sys, const pool_setup& s, const std::string& what,
                              node_options opts = bench_node_options());

protected:
  std::string label_;
  std::vector<std::string>& failures_;
  progress_line* progress_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

// -- closed-loop load from actors --------------------------------------------------

struct load_result {
  int clients = 0;
  std::uint64_t ok = 0;        ///< replies with a result inside the window
  std::uint64_t errors = 0;    ///< error replies inside the window
  std::uint64_t total_ok = 0;  ///< with a result, warm-up included
  std::uint64_t total_errors = 0;
  std::string first_error;
  double seconds = 0;          ///< the measured window
  double requests_per_s = 0;   ///< ok / seconds
  latency_recorder latency;    ///< requests sent and answered inside the window
  latency_summary summary;
  /// Host CPU (every thread of this process, user + sys, getrusage) over
  /// the window, per reply in it; -1 when not measured.
  double host_cpu_us_per_request = -1;
  double host_switches_per_request = -1;  ///< context switches of this process, the same way
  /// Replies per second of the window, when asked for (sustained run; no
  /// latency samples are kept then, so the host's RSS shows dspex alone).
  std::vector<std::uint64_t> per_second;
  std::vector<long> rss_kb_per_second;  ///< host VmRSS at each of those seconds
};

json to_json(const load_result& r);  ///< without the raw samples

/// `clients` event-based actors, each keeping one `req` in flight against
/// `target`; warm-up, then a measured window of `duration`. With
/// requests_per_client > 0 each client stops after that many replies
/// instead (the window is then the whole run).
load_result run_actor_load(caf::actor_system& sys, const caf::actor& target, const command_request& req,
                           int clients, std::chrono::milliseconds warmup, std::chrono::milliseconds duration,
                           std::uint64_t requests_per_client = 0, bool per_second = false);

/// The echo request of the bare loop (same command and payload).
command_request echo_command(std::size_t payload_bytes);

// -- the bench ----------------------------------------------------------------------

struct dspex_bench_options {
  peer_bench_options peers;                ///< floors and Python peers (workers, duration, payload, ...)
  int clients_per_worker = 4;              ///< throughput: clients = this x W
  std::chrono::milliseconds warmup{300};   ///< before each measured dspex window
  std::vector<std::size_t> payloads{100, 10 * 1024, 1024 * 1024};
  std::chrono::milliseconds payload_duration{1500};  ///< per payload size and system
  int ready_workers = 8;                   ///< "pool of N ready"
  int ready_repeats = 5;
  int kill_repeats = 5;                    ///< SIGKILL samples
  int big_pool = 256;                      ///< 0 skips the big-pool run
  int big_pool_requests_per_worker = 4;
  int concurrency_variant = 4;             ///< throughput again with this max_concurrency (0: skip)
  /// I/O-bound: W=2, max_concurrency 16, 64 clients, every request an LM
  /// call that waits 200 ms (mock LM latency_ms), beside mp.Pool(2) on the
  /// same wait. 0 ms skips it.
  std::chrono::milliseconds io_duration{4000};
  int io_workers = 2, io_concurrency = 16, io_clients = 64, io_wait_ms = 200;
  /// Sustained: W=4, 16 clients for this long, throughput per second and
  /// host RSS; 0 skips it.
  std::chrono::milliseconds sustained{0};
  std::string out_dir = "bench/out";
  bool plots = true;
  bool quick = false;
  std::vector<std::string> caf_args;       ///< --caf#... for the measured actor systems

  /// --quick: the peers' quick defaults, 250 ms windows, 2-3 samples, a
  /// big pool of 32: about a minute on 2 cores.
  static dspex_bench_options quick_defaults();
};

struct kill_sample {
  double caller_detect_us = -1;   ///< kill -> in-flight caller's worker_crashed
  double status_detect_us = -1;   ///< kill -> pool status restarts + 1
  double replacement_us = -1;     ///< kill -> first reply from the replacement
  std::string caller_error;       ///< the in-flight caller's error class
};

struct big_pool_result {
  int workers = 0;
  bool started = false;
  std::string error;
  double ready_s = 0;             ///< node::start
  long threads_before = -1;       ///< host threads without a node
  long threads_small = -1;        ///< with the pool of ready_workers (same system)
  long threads_big = -1;          ///< with the big pool
  long rss_before_kb = -1, rss_big_kb = -1;
  double worker_rss_kb_avg = -1;  ///< Python processes' VmRSS, mean
  int processes_seen = 0;         ///< dspex_worker processes of this run while up
  std::uint64_t served_ok = 0, served_errors = 0;
  double serve_s = 0;
  double stop_s = 0;
  int leftover_processes = -1;    ///< after stop
};

struct dspex_bench_result {
  dspex_bench_options options;
  peer_bench_result peers;
  load_result round_trip;                 ///< 1 client, 1 worker, peers.payload_bytes
  load_result round_trip_pinned;          ///< the same pinned to peers.pin_cpu (clients == 0: not run)
  std::vector<load_result> throughput;    ///< per peers.workers
  std::vector<load_result> throughput_mc; ///< the same with max_concurrency concurrency_variant
  load_result io_bound;                   ///< the I/O-bound scenario (clients == 0: not run)
  peer_result io_mp;                      ///< mp.Pool(io_workers) on the same wait
  load_result sustained;                  ///< the sustained run (clients == 0: not run)
  std::vector<load_result> payload_dspex; ///< per payloads
  std::vector<bare_result> payload_bare;  ///< per payloads
  latency_recorder ready;                 ///< node::start of a pool of ready_workers
  std::vector<kill_sample> kills;
  big_pool_result big;
  std::vector<std::string> failures;
  std::vector<plot_outcome> plots;
  double load_before = -1, load_after = -1;
  double wall_seconds = 0;
};

/// Runs every measurement; a failed one lands in failures, never throws.
dspex_bench_result measure_dspex(const dspex_bench_options& opts, progress_line* progress = nullptr);

/// The table: floors, peers and dspex side by side with ratios and targets.
void add_dspex_rows(report_table& table, const dspex_bench_result& r);

json to_json(const dspex_bench_result& r);

/// bench_latency_cdf.png, bench_payload_cdf.png, bench_throughput.png.
std::vector<plot_outcome> plot_dspex(const dspex_bench_result& r, const std::string& out_dir);

/// `dspex-bench run` (options: command_line.hpp): measures, prints the
/// table, writes bench.json and the plots. Returns 0 when every measurement
/// ran, 1 when one failed.
int run_dspex_bench(const dspex_bench_options& opts);

} // namespace dspex::bench
