// `dspex-bench chaos`: seeded fault-injection scenarios against a live pool under
// load, each reported as "was every request answered exactly once, how fast
// were failures detected and workers replaced, did anything leak".
//
// Scenarios (each on a fresh node built from default_config(), worker
// fault_injection on, the circuit breaker off so every failure reaches the
// pool instead of being failed fast):
//   kill       SIGKILL a random worker every N ms (the crash storm of docs/architecture.md "Targets");
//   hang       fault_hang requests with a short request_timeout_ms: the
//              caller gets command_timeout, the worker is replaced;
//   garbage    fault_garbage: the worker writes bytes that are not a frame;
//              the caller gets protocol_error, the worker is replaced;
//   slow       clients mix fault_sleep into their echo load;
//   stream     clients stream (call_stream, ack_chunk) a generator of
//              bench/peers/bench_cmds.py instead of echoing, while a random
//              worker is SIGKILLed every N ms: every stream answered once,
//              its chunks in order and its own, all of them when it ends
//              with a result, and no slot leaked (pool status in_flight
//              and busy back to 0 once the load stopped);
//   crashloop  a pool of 2 with worker_intensity 1, killed faster than that:
//              the worker supervisor must give up and escalate (OTP); kills
//              stop once its parent restarted it (--crashloop-until pool,
//              the default: the pool must then come back to full size) or
//              once the root supervisor gave up (--crashloop-until root).
//
// Load: C client actors (CAF event-based), each keeping one request in
// flight against node::target(), backing off 5 ms after an error reply.
// Every request carries a unique key (client << 32 | sequence): echo sends
// it as its payload and the reply must carry it back, so replies are counted
// per key, and a reply carrying another request's key is caught.
//
// Determinism: --seed fixes the fault schedule (times, victims, sizes) and
// every client's command sequence; the schedule's digest is printed so two
// runs can be compared. What the machine does with that schedule (timings,
// which worker was busy) is of course not repeatable.
//
// Figures per scenario: requests sent; answered with a result; answered with
// each error class; never answered (must be 0); answered twice (must be 0);
// replies carrying a wrong key (must be 0); latency of successful echoes
// sent during the fault phase; detection and replacement times (p50, max);
// pool size over time (PNG); leftover dspex_worker processes of this run
// after the node stopped (must be 0). --assert makes any non-zero must-be-0
// figure the exit status 1.
#pragma once

#include <dspex/bench/report.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dspex::bench {

struct chaos_options {
  std::uint64_t seed = 1;
  std::vector<std::string> scenarios{"kill", "hang", "garbage", "slow", "crashloop", "stream"};
  int workers = 4;
  int clients = 0;                               ///< 0: 2 x workers
  int max_concurrency = 1;                       ///< worker.max_concurrency of the pool
  std::size_t payload_bytes = 64;                ///< echo padding after the key
  std::chrono::milliseconds warmup{300};         ///< load before the first fault
  std::chrono::milliseconds fault_phase{8000};   ///< faults are scheduled inside this
  std::chrono::milliseconds recovery{1000};      ///< load goes on after the faults
  std::chrono::milliseconds settle_limit{10000}; ///< then wait at most this for a full pool
  std::chrono::milliseconds kill_every{50};
  std::chrono::milliseconds hang_every{400};
  std::chrono::milliseconds garbage_every{200};
  std::chrono::milliseconds crashloop_kill_every{30};
  /// crashloop kills until: "pool" -- the pool supervisor restarted the
  /// worker supervisor (the pool must then come back); "root" -- the root
  /// supervisor gave up (the whole tree is gone).
  std::string crashloop_until = "pool";
  double slow_fraction = 0.2;                    ///< share of fault_sleep in the slow load
  int slow_max_ms = 200;                         ///< fault_sleep seconds ~ U(10 ms, this)
  int stream_chunks = 20;                        ///< stream: chunks of each stream
  std::chrono::milliseconds stream_pause{2};     ///< stream: the handler's pause after each chunk
  int request_timeout_ms = 5000;
  /// > 0: the multi-node run instead of the scenarios (chaos_nodes.hpp):
  /// this many `dspex run` nodes of workers/2 each behind a pool_group.
  int nodes = 0;
  int hang_request_timeout_ms = 500;
  int checkout_timeout_ms = 2000;
  std::string python = "python3";
  std::string out_dir = "bench/out";
  bool plots = true;
  bool assert_zero = false;
  bool quick = false;
  std::vector<std::string> caf_args;             ///< --caf#... for the actor systems

  /// --quick: 2 s fault phases, ~25 s for all six scenarios on 2 cores.
  static chaos_options quick_defaults();
};

/// One scheduled fault: `at` after the fault phase starts.
struct chaos_fault {
  std::chrono::milliseconds at{0};
  std::string kind;       ///< "kill" | "fault_hang" | "fault_garbage"
  std::uint64_t pick = 0; ///< kill: victim = live workers (sorted by id)[pick % n]
  int bytes = 0;          ///< fault_garbage size
};

/// The schedule of a scenario: a pure function of (scenario, seed, options).
std::vector<chaos_fault> chaos_schedule(const std::string& scenario, std::uint64_t seed,
                                        const chaos_options& o);

/// FNV-1a of the schedule (and the seed of the client streams), as hex.
std::string schedule_digest(const std::vector<chaos_fault>& s, std::uint64_t client_seed);

struct chaos_result {
  std::string scenario;
  std::string description;
  std::uint64_t seed = 0;       ///< the scenario's derived seed
  std::string digest;
  int workers = 0, clients = 0;
  bool started = false;
  std::string error;            ///< why the scenario could not run

  std::uint64_t sent = 0;
  std::uint64_t answered_ok = 0;
  std::map<std::string, std::uint64_t> errors_by_class;
  std::uint64_t never_answered = 0;  ///< must be 0
  std::uint64_t answered_twice = 0;  ///< must be 0
  std::uint64_t wrong_reply = 0;     ///< must be 0: a reply carrying another request's key
  std::uint64_t stray_messages = 0;  ///< anything else a client received

  // stream scenario (must be 0 unless said otherwise)
  std::uint64_t chunks = 0;               ///< chunks received (reported)
  std::uint64_t chunks_out_of_order = 0;  ///< a chunk whose seq was not the next of its stream
  std::uint64_t chunks_foreign = 0;       ///< a chunk carrying another stream's key or index
  std::uint64_t chunks_after_answer = 0;  ///< a chunk of a stream already answered
  std::uint64_t streams_incomplete = 0;   ///< answered with a result but missing chunks
  int slots_in_flight = -1;               ///< pool status in_flight once the load stopped; -1: not asked
  int slots_busy = -1;                    ///< pool status busy, likewise

  int faults_scheduled = 0, faults_injected = 0, faults_skipped = 0;
  latency_summary success_latency;   ///< echoes sent during the fault phase, answered with a result
  std::vector<double> detection_us;
  std::vector<double> replacement_us;
  std::string detection_means, replacement_means;
  int exits = 0, replaced = 0;       ///< worker exits seen, and of those replaced

  int pool_full = 0;
  int pool_at_end = -1;
  double back_to_full_ms = -1;       ///< after the last fault; -1: never
  std::map<std::string, int> escalation;  ///< "intensity_reached root/pool_sup/workers" -> n, ...
  bool root_stopped = false;

  int leftover_processes = -1;       ///< must be 0
  double leftover_wait_ms = 0;       ///< how long after node::stop they took to vanish

  std::vector<availability_bucket> timeline;
  std::vector<timeline_event> events;
  plot_outcome plot;
  double seconds = 0;
  std::vector<std::string> notes;

  /// The must-be-0 figures that are not 0 ("never answered: 3", ...).
  std::vector<std::string> violations() const;
};

json to_json(const chaos_result& r);

/// Runs one scenario (never throws: problems land in error / notes).
chaos_result run_chaos_scenario(const std::string& scenario, const chaos_options& o,
                                progress_line* progress = nullptr);

void add_chaos_rows(report_table& t, const chaos_result& r);

/// `dspex-bench chaos` (options: command_line.hpp): every scenario of
/// o.scenarios, the table, chaos.json and the plots. Returns 0; 1 with
/// o.assert_zero when a must-be-0 figure is not 0 (or a scenario could not
/// run), or when chaos.json could not be written.
int run_chaos(const chaos_options& o);

} // namespace dspex::bench
