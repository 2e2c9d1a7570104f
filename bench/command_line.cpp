#include <dspex/bench/command_line.hpp>

#include <CLI/CLI.hpp>

#include <iostream>
#include <sstream>
#include <type_traits>

namespace dspex::bench {

namespace {

// Every option writes its value into the options struct from a callback,
// and CLI11 runs a subcommand's callbacks once the whole line is parsed, in
// the order the options were added. So --quick, added first, resets the
// struct to its quick defaults, and each option given then overrides its
// one value wherever it stood on the line (`--duration 500 --quick` keeps
// 500 ms). The default shown in --help is the field's value when the option
// is added: the full run's.

template <class T>
std::string shown(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

template <class T>
std::string shown(const std::vector<T>& vs) {
  std::string s;
  for (auto& v : vs)
    s += (s.empty() ? "" : ",") + shown(v);
  return s;
}

// CLI11 converts "-1" to an unsigned type by wrapping it around: reject it.
template <class T>
CLI::Option* checked_sign(CLI::Option* opt) {
  if constexpr (std::is_unsigned_v<T>)
    opt->check(CLI::NonNegativeNumber);
  return opt;
}

template <class T>
CLI::Option* value(CLI::App* app, const std::string& name, T& field, const std::string& help) {
  return checked_sign<T>(
    app->add_option_function<T>(name, [&field](const T& v) { field = v; }, help)->default_str(shown(field)));
}

/// A comma-separated list ("1,2,4,8"); validators check each item.
template <class T>
CLI::Option* value(CLI::App* app, const std::string& name, std::vector<T>& field, const std::string& help) {
  return checked_sign<T>(
    app->add_option_function<std::vector<T>>(name, [&field](const std::vector<T>& v) { field = v; }, help)
      ->delimiter(',')
      ->default_str(shown(field)));
}

CLI::Option* value(CLI::App* app, const std::string& name, std::chrono::milliseconds& field,
                   const std::string& help) {
  using rep = std::chrono::milliseconds::rep;
  return app->add_option_function<rep>(name, [&field](const rep& v) { field = std::chrono::milliseconds(v); }, help)
    ->default_str(std::to_string(field.count()));
}

/// A flag that sets `field` to `to`.
CLI::Option* flag(CLI::App* app, const std::string& name, bool& field, bool to, const std::string& help) {
  return app->add_flag_callback(name, [&field, to] { field = to; }, help);
}

// The options `run` shares with `peers`: the floors' and peers' settings.
void add_peer_options(CLI::App* app, peer_bench_options& p) {
  value(app, "--out", p.out_dir, "where the JSON and the PNGs go");
  value(app, "--workers", p.workers, "comma-separated worker counts W")->check(CLI::Range(1, 4096));
  value(app, "--duration", p.duration, "measured milliseconds per run (--quick: 250)")->check(CLI::PositiveNumber);
  value(app, "--payload", p.payload_bytes, "echo payload bytes")->check(CLI::Range(0, 16 << 20));
  value(app, "--python", p.python, "Python interpreter of the workers and peers");
  value(app, "--spawn-repeats", p.spawn_repeats, "spawn-to-first-reply samples")->check(CLI::PositiveNumber);
  value(app, "--pin-cpu", p.pin_cpu, "CPU of the pinned round trip")->check(CLI::NonNegativeNumber);
  flag(app, "--no-pinned", p.pinned_round_trip, false, "skip the pinned round trip");
  flag(app, "--no-python-peers", p.python_peers, false, "skip multiprocessing.Pool and ProcessPoolExecutor");
  flag(app, "--no-min-echo", p.min_echo, false, "skip the bare loop driving the minimal Python echo (min_echo.py)");
  flag(app, "--no-sched-batch", p.sched_batch, false,
       "dspex's and the bare loop's workers under the default policy (worker.sched_batch false)");
  flag(app, "--no-plots", p.plots, false, "skip the gnuplot PNGs");
}

void add_run(CLI::App& app, dspex_bench_options& o) {
  auto* cmd = app.add_subcommand("run", "dspex against its floors and peers: round trip, throughput, payloads, "
                                        "pool start, SIGKILL recovery, a big pool");
  cmd->add_flag_callback("--quick", [&o] { o = dspex_bench_options::quick_defaults(); }, "short run (about a minute on 2 cores)");
  add_peer_options(cmd, o.peers);
  value(cmd, "--ready-repeats", o.ready_repeats, "pool-of-8 start samples")->check(CLI::PositiveNumber);
  value(cmd, "--kill-repeats", o.kill_repeats, "SIGKILL samples")->check(CLI::NonNegativeNumber);
  value(cmd, "--big-pool", o.big_pool, "workers of the big pool (0 skips it; --quick: 32)")->check(CLI::Range(0, 4096));
  value(cmd, "--clients-per-worker", o.clients_per_worker, "throughput clients per worker")
    ->check(CLI::PositiveNumber);
  value(cmd, "--concurrency-variant", o.concurrency_variant,
        "throughput again with this worker.max_concurrency (0 or 1 skips it)")
    ->check(CLI::Range(0, 1024));
  value(cmd, "--io-duration", o.io_duration,
        "measured ms of the I/O-bound scenario (W=2, max_concurrency 16, 64 clients, 200 ms LM wait; 0 skips it)")
    ->check(CLI::NonNegativeNumber);
  value(cmd, "--sustained", o.sustained,
        "ms of a sustained W=4 run: throughput per second and host RSS (0 skips it; 60000 for the target)")
    ->check(CLI::NonNegativeNumber);
  cmd->footer("--caf#KEY=VALUE  CAF options for the measured actor systems (as dspex run)");
}

void add_peers(CLI::App& app, peer_bench_options& o) {
  auto* cmd = app.add_subcommand("peers", "only the floors and peers: the bare C++ loop, multiprocessing.Pool, "
                                          "ProcessPoolExecutor, spawn to first reply");
  cmd->add_flag_callback("--quick", [&o] { o = peer_bench_options::quick_defaults(); }, "250 ms per run (about 10 s)");
  add_peer_options(cmd, o);
  flag(cmd, "--no-parse", o.bare_parse_replies, false, "the bare loop does not parse replies");
}

void add_chaos(CLI::App& app, chaos_options& o) {
  auto* cmd = app.add_subcommand("chaos", "seeded fault-injection scenarios under load: every request answered "
                                          "exactly once, failures detected, workers replaced, nothing left behind");
  cmd->add_flag_callback("--quick", [&o] { o = chaos_options::quick_defaults(); }, "2 s fault phases (all scenarios in about a minute)");
  value(cmd, "--seed", o.seed, "seed of the fault schedules and client streams");
  flag(cmd, "--assert", o.assert_zero, true, "exit 1 when a must-be-0 figure is not 0");
  value(cmd, "--scenarios", o.scenarios, "comma-separated scenarios")->check(CLI::IsMember(chaos_options{}.scenarios));
  value(cmd, "--workers", o.workers, "pool size (crashloop uses 2)")->check(CLI::Range(1, 512));
  value(cmd, "--clients", o.clients, "client actors (0: 2 x workers)")->check(CLI::Range(0, 4096));
  value(cmd, "--max-concurrency", o.max_concurrency,
        "worker.max_concurrency of the pool: requests in flight on each worker")
    ->check(CLI::Range(1, 1024));
  value(cmd, "--duration", o.fault_phase, "fault phase per scenario, ms (--quick: 2000)")
    ->check(CLI::Range(100, 3600000));
  value(cmd, "--kill-every", o.kill_every, "kill period of the kill and stream scenarios, ms")->check(CLI::Range(1, 60000));
  value(cmd, "--stream-chunks", o.stream_chunks, "chunks of each stream of the stream scenario")
    ->check(CLI::Range(1, 100000));
  value(cmd, "--stream-pause", o.stream_pause, "stream scenario: the handler's pause after each chunk, ms")
    ->check(CLI::Range(0, 10000));
  value(cmd, "--crashloop-until", o.crashloop_until,
        "crashloop kills until the pool supervisor restarted the worker supervisor (pool) or the root "
        "supervisor gave up (root)")
    ->check(CLI::IsMember({"pool", "root"}));
  value(cmd, "--nodes", o.nodes,
        "instead of the scenarios: N dspex run nodes of workers/2 behind a pool_group; one killed and restarted, "
        "one stopped and continued")
    ->check(CLI::Range(0, 16));
  value(cmd, "--python", o.python, "Python interpreter of the workers");
  value(cmd, "--out", o.out_dir, "where chaos.json and the PNGs go");
  flag(cmd, "--no-plots", o.plots, false, "skip the gnuplot PNGs");
  cmd->footer("--caf#KEY=VALUE  CAF options for the actor systems (as dspex run)");
}

void add_supervisor_stop(CLI::App& app, supervisor_stop_options& o) {
  auto* cmd = app.add_subcommand("supervisor-stop", "how a supervisor's start and stop time grow with its "
                                                    "children (trivial actors, no Python)");
  value(cmd, "--sizes", o.sizes, "comma-separated child counts")->check(CLI::PositiveNumber);
  value(cmd, "--repeats", o.repeats, "samples per size (the median is shown)")->check(CLI::PositiveNumber);
}

void add_start(CLI::App& app, start_bench_options& o) {
  auto* cmd = app.add_subcommand("start", "worker start and recovery, fork server against spawn, side by side: "
                                          "pool ready, SIGKILL recovery, a 1 s preload, PSS, a big pool");
  value(cmd, "--pool", o.pool, "workers of the pool-ready figures")->check(CLI::Range(1, 4096));
  value(cmd, "--repeats", o.repeats, "pool-ready samples per method")->check(CLI::PositiveNumber);
  value(cmd, "--kill-repeats", o.kill_repeats, "SIGKILL samples per method")->check(CLI::PositiveNumber);
  value(cmd, "--big-pool", o.big_pool, "workers of the big pool (0 skips it)")->check(CLI::Range(0, 4096));
  value(cmd, "--pss-workers", o.pss_workers, "workers whose PSS is averaged (0 skips it)")
    ->check(CLI::Range(0, 256));
  flag(cmd, "--no-slow-preload", o.slow_preload, false, "skip the 1 s preload figures");
  value(cmd, "--python", o.python, "Python interpreter of the workers");
}

void add_remote(CLI::App& app, remote_bench_options& o) {
  auto* cmd = app.add_subcommand("remote", "a pool through a remote_pool (loopback) against the "
                                           "same pool called locally: round trip and throughput");
  value(cmd, "--workers", o.workers, "workers of the remote node's pool")->check(CLI::Range(1, 256));
  value(cmd, "--clients", o.clients, "threads of the throughput run")->check(CLI::Range(1, 1024));
  value(cmd, "--round-trips", o.round_trips, "round-trip samples per side and round")->check(CLI::PositiveNumber);
  value(cmd, "--requests", o.requests, "requests of the throughput run per side and round")
    ->check(CLI::PositiveNumber);
  value(cmd, "--rounds", o.rounds, "rounds, alternating which side goes first")->check(CLI::Range(1, 100));
  flag(cmd, "--no-group", o.group, false, "skip the pool_group figure");
  flag(cmd, "--basp", o.link, false, "no request link: every request by BASP (for comparison)");
}

void add_streams(CLI::App& app, stream_bench_options& o) {
  auto* cmd = app.add_subcommand("streams", "streams, cancellation and asyncio handlers against their floors: time to "
                                            "first chunk, chunk throughput, cancel latency, I/O-bound on asyncio");
  cmd->add_flag_callback("--quick", [&o] { o = stream_bench_options::quick_defaults(); },
                         "fewer samples, 2 s I/O windows (about 40 s)");
  value(cmd, "--parts", o.parts, "comma-separated parts")->check(CLI::IsMember(stream_bench_options{}.parts));
  value(cmd, "--samples", o.samples, "first-chunk: measured pairs (unary, stream) (--quick: 300)")
    ->check(CLI::PositiveNumber);
  value(cmd, "--warmup", o.warmup, "first-chunk: pairs before the measured ones")->check(CLI::NonNegativeNumber);
  value(cmd, "--payload", o.payload_bytes, "first-chunk: payload bytes")->check(CLI::Range(0, 1 << 20));
  value(cmd, "--streams", o.streams, "chunks: measured streams per system (--quick: 10)")->check(CLI::PositiveNumber);
  value(cmd, "--chunks", o.chunks, "chunks: chunks per stream")->check(CLI::Range(1, 10000000));
  value(cmd, "--chunk-bytes", o.chunk_bytes, "chunks: bytes of each chunk's data")->check(CLI::Range(0, 1 << 20));
  value(cmd, "--stream-window", o.stream_window, "chunks: worker.stream_window (0: the default)")
    ->check(CLI::Range(0, 65536));
  value(cmd, "--stream-window-bytes", o.stream_window_bytes,
        "chunks: worker.stream_window_bytes (0: the default)")
    ->check(CLI::Range(0LL, 1LL << 31));
  value(cmd, "--cancel-samples", o.cancel_samples, "cancel: samples (--quick: 60)")->check(CLI::PositiveNumber);
  value(cmd, "--io-workers", o.io_workers, "io: workers")->check(CLI::Range(1, 64));
  value(cmd, "--io-concurrency", o.io_concurrency, "io: worker.max_concurrency")->check(CLI::Range(1, 10000));
  value(cmd, "--io-clients", o.io_clients, "io: client actors")->check(CLI::Range(1, 100000));
  value(cmd, "--io-wait", o.io_wait_ms, "io: ms each request waits")->check(CLI::Range(1, 60000));
  value(cmd, "--io-duration", o.io_duration, "io: measured ms per system (--quick: 2000)")->check(CLI::PositiveNumber);
  value(cmd, "--mp-processes", o.mp_processes, "io: processes of multiprocessing.Pool (0: the concurrency budget, "
                                               "io-workers x io-concurrency)")
    ->check(CLI::Range(0, 10000));
  flag(cmd, "--no-python-peers", o.python_peers, false, "io: skip multiprocessing.Pool");
  flag(cmd, "--no-sched-batch", o.sched_batch, false, "workers under the default policy (worker.sched_batch false)");
  value(cmd, "--python", o.python, "Python interpreter of the workers and peers");
  value(cmd, "--out", o.out_dir, "where streams.json and the PNG go");
  flag(cmd, "--no-plots", o.plots, false, "skip the gnuplot PNG");
  cmd->footer("--caf#KEY=VALUE  CAF options for the measured actor system (as dspex run)");
}

void add_host_calls(CLI::App& app, host_call_bench_options& o) {
  auto* cmd = app.add_subcommand("host_calls", "handlers calling back into the host (ctx.call) against a unary round "
                                               "trip: a C++ function, another pool, agents making tool calls");
  cmd->add_flag_callback("--quick", [&o] { o = host_call_bench_options::quick_defaults(); },
                         "200 rounds, 3 agent rounds (about 15 s)");
  value(cmd, "--parts", o.parts, "comma-separated parts")->check(CLI::IsMember(host_call_bench_options{}.parts));
  value(cmd, "--rounds", o.rounds, "round-trip: measured rounds (--quick: 200)")->check(CLI::PositiveNumber);
  value(cmd, "--warmup", o.warmup, "round-trip: rounds before them")->check(CLI::NonNegativeNumber);
  value(cmd, "--calls", o.calls, "round-trip: host calls of each kind per round")->check(CLI::Range(1, 10000));
  value(cmd, "--payload", o.payload_bytes, "payload bytes of every request and call")->check(CLI::Range(0, 1 << 20));
  value(cmd, "--agent-workers", o.agent_workers, "agents: workers of the agent pool")->check(CLI::Range(1, 256));
  value(cmd, "--tool-workers", o.tool_workers, "agents: workers of the tool pool")->check(CLI::Range(1, 256));
  value(cmd, "--agents", o.agents, "agents: client actors, one request in flight each")->check(CLI::Range(1, 4096));
  value(cmd, "--agent-rounds", o.agent_rounds, "agents: requests each client sends (--quick: 3)")
    ->check(CLI::PositiveNumber);
  value(cmd, "--tool-calls", o.tool_calls, "agents: tool calls per agent request")->check(CLI::Range(1, 10000));
  flag(cmd, "--no-sched-batch", o.sched_batch, false, "workers under the default policy (worker.sched_batch false)");
  value(cmd, "--python", o.python, "Python interpreter of the workers");
  value(cmd, "--out", o.out_dir, "where host_calls.json goes");
  cmd->footer("--caf#KEY=VALUE  CAF options for the measured actor system (as dspex run)");
}

} // namespace

std::variant<bench_command, int> parse_command_line(int argc, const char* const* argv, std::ostream& out,
                                                    std::ostream& err) {
  std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  const std::vector<std::string> caf_args = take_caf_args(args);

  bench_command cmd;
  CLI::App app{"dspex-bench: benchmarks and fault injection for dspex (not part of the dspex binary)",
               "dspex-bench"};
  // At most one; none is caught after parsing, so that an unknown word is
  // reported as such ("not expected: bench") rather than as a missing subcommand.
  app.require_subcommand(0, 1);
  add_run(app, cmd.run);
  add_peers(app, cmd.peers);
  add_chaos(app, cmd.chaos);
  add_supervisor_stop(app, cmd.supervisor_stop);
  add_start(app, cmd.start);
  add_remote(app, cmd.remote);
  add_streams(app, cmd.streams);
  add_host_calls(app, cmd.host_calls);
  try {
    app.parse(std::vector<std::string>(args.rbegin(), args.rend()));  // CLI11 takes them reversed
    if (app.get_subcommands().empty())
      throw CLI::RequiredError("A subcommand (run, peers, chaos, supervisor-stop, start, remote, streams, host_calls)");
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err) == 0 ? 0 : 2;
  }
  cmd.name = app.get_subcommands().front()->get_name();

  // `run` keeps the peers' output settings as its own too.
  cmd.run.out_dir = cmd.run.peers.out_dir;
  cmd.run.plots = cmd.run.peers.plots;

  if (!caf_args.empty()) {
    std::vector<std::string>* target = cmd.name == "run" ? &cmd.run.caf_args
                                       : cmd.name == "chaos"   ? &cmd.chaos.caf_args
                                       : cmd.name == "streams" ? &cmd.streams.caf_args
                                       : cmd.name == "host_calls" ? &cmd.host_calls.caf_args
                                                                  : nullptr;
    if (!target) {
      err << "dspex-bench " << cmd.name << ": --caf# options go with run, chaos, streams and host_calls only\n";
      return 2;
    }
    caf::actor_system_config probe;
    if (auto e = apply_caf_args(probe, caf_args)) {
      err << "dspex-bench " << cmd.name << ": CAF options: " << caf::to_string(e) << "\n";
      return 2;
    }
    *target = caf_args;
  }
  return cmd;
}

int dspex_bench_main(int argc, char** argv) {
  auto parsed = parse_command_line(argc, argv, std::cout, std::cerr);
  if (auto* code = std::get_if<int>(&parsed))
    return *code;
  const auto& cmd = std::get<bench_command>(parsed);
  try {
    if (cmd.name == "run")
      return run_dspex_bench(cmd.run);
    if (cmd.name == "peers")
      return run_peer_bench(cmd.peers);
    if (cmd.name == "chaos")
      return run_chaos(cmd.chaos);
    if (cmd.name == "start")
      return run_start_bench(cmd.start);
    if (cmd.name == "remote")
      return run_remote_bench(cmd.remote);
    if (cmd.name == "streams")
      return run_stream_bench(cmd.streams);
    if (cmd.name == "host_calls")
      return run_host_call_bench(cmd.host_calls);
    return run_supervisor_stop_bench(cmd.supervisor_stop);
  } catch (const std::exception& e) {  // the runners report failures; this is the last resort
    std::cerr << "dspex-bench " << cmd.name << ": " << e.what() << "\n";
    return 1;
  }
}

} // namespace dspex::bench
