// dspex-bench's command line (bench/command_line.hpp): the options each
// subcommand takes, what --quick leaves to the options given, the usage
// errors; then the real executable: its help, short real runs (peers,
// streams, the chaos stream scenario) checked for the structure of their
// output, and the dspex binary no longer knowing bench or chaos. Nothing
// here asserts a measured time.
#include <doctest/doctest.h>

#include <dspex/bench/command_line.hpp>
#include <dspex/bench/subprocess.hpp>

#include "test_paths.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace dspex::bench;
using namespace std::chrono_literals;

namespace {

struct parsed {
  std::variant<bench_command, int> result;
  std::string out, err;

  int code() const { return std::holds_alternative<int>(result) ? std::get<int>(result) : -1; }
  const bench_command& command() const {
    REQUIRE_MESSAGE(std::holds_alternative<bench_command>(result), err);
    return std::get<bench_command>(result);
  }
};

parsed parse(std::vector<std::string> args) {
  args.insert(args.begin(), "dspex-bench");
  std::vector<const char*> argv;
  for (auto& a : args)
    argv.push_back(a.c_str());
  std::ostringstream out, err;
  auto r = parse_command_line(static_cast<int>(argv.size()), argv.data(), out, err);
  return {std::move(r), out.str(), err.str()};
}

command_result run(std::vector<std::string> argv, std::chrono::milliseconds limit = 60s) {
  spawn_spec spec;
  spec.argv = std::move(argv);
  spec.env = {{"DSPEX_PYTHON_PATH", DSPEX_TEST_PYTHON_DIR}};
  spec.stderr_to = spawn_spec::stderr_mode::merge;
  return run_command(spec, limit);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::filesystem::path scratch(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("dspex_test_bench_cli_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(p);
  return p;
}

json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  REQUIRE_MESSAGE(in, p.string());
  return json::parse(in);
}

} // namespace

TEST_SUITE("bench_cli") {

TEST_CASE("each subcommand fills its own options; the others keep their defaults") {
  auto p = parse({"run", "--workers", "1,2", "--duration", "700", "--payload", "128", "--big-pool", "0",
                  "--kill-repeats", "0", "--no-pinned", "--no-plots", "--out", "/tmp/x"});
  auto& run = p.command();
  CHECK(run.name == "run");
  CHECK(run.run.peers.workers == std::vector<int>{1, 2});
  CHECK(run.run.peers.duration == 700ms);
  CHECK(run.run.peers.payload_bytes == 128);
  CHECK(run.run.big_pool == 0);
  CHECK(run.run.kill_repeats == 0);
  CHECK_FALSE(run.run.peers.pinned_round_trip);
  // run writes its own files and the peers' alike.
  CHECK_FALSE(run.run.plots);
  CHECK_FALSE(run.run.peers.plots);
  CHECK(run.run.out_dir == "/tmp/x");
  CHECK(run.run.peers.out_dir == "/tmp/x");
  CHECK_FALSE(run.run.quick);
  CHECK(run.chaos.workers == chaos_options{}.workers);

  auto c = parse({"chaos", "--seed", "18446744073709551615", "--assert", "--scenarios", "kill,crashloop",
                  "--crashloop-until", "root", "--workers", "3", "--clients", "5", "--kill-every", "20"});
  auto& chaos = c.command().chaos;
  CHECK(c.command().name == "chaos");
  CHECK(chaos.seed == 18446744073709551615ull);
  CHECK(chaos.assert_zero);
  CHECK(chaos.scenarios == std::vector<std::string>{"kill", "crashloop"});
  CHECK(chaos.crashloop_until == "root");
  CHECK(chaos.workers == 3);
  CHECK(chaos.clients == 5);
  CHECK(chaos.kill_every == 20ms);

  auto s = parse({"supervisor-stop", "--sizes", "10,20", "--repeats", "2"});
  CHECK(s.command().name == "supervisor-stop");
  CHECK(s.command().supervisor_stop.sizes == std::vector<std::size_t>{10, 20});
  CHECK(s.command().supervisor_stop.repeats == 2);

  auto pe = parse({"peers", "--no-parse", "--no-python-peers", "--pin-cpu", "1", "--spawn-repeats", "2",
                   "--no-sched-batch"});
  CHECK(pe.command().name == "peers");
  CHECK_FALSE(pe.command().peers.sched_batch);
  CHECK(parse({"peers"}).command().peers.sched_batch);
  CHECK_FALSE(pe.command().peers.bare_parse_replies);
  CHECK_FALSE(pe.command().peers.python_peers);
  CHECK(pe.command().peers.pin_cpu == 1);
  CHECK(pe.command().peers.spawn_repeats == 2);

  auto rm = parse({"remote", "--workers", "3", "--clients", "4", "--round-trips", "10", "--requests", "20"});
  CHECK(rm.command().name == "remote");
  CHECK(rm.command().remote.workers == 3);
  CHECK(rm.command().remote.clients == 4);
  CHECK(rm.command().remote.round_trips == 10);
  CHECK(rm.command().remote.requests == 20);
  CHECK(parse({"remote", "--clients", "0"}).code() == 2);
}

TEST_CASE("--quick sets its defaults and the options given override them, wherever they stand") {
  const auto quick = dspex_bench_options::quick_defaults();
  for (auto& args : std::vector<std::vector<std::string>>{{"run", "--duration", "700", "--quick"},
                                                          {"run", "--quick", "--duration", "700"}}) {
    auto p = parse(args);
    auto& o = p.command().run;
    CHECK(o.quick);
    CHECK(o.peers.duration == 700ms);
    CHECK(o.warmup == quick.warmup);
    CHECK(o.big_pool == quick.big_pool);
    CHECK(o.peers.spawn_repeats == quick.peers.spawn_repeats);
  }
  auto pc = parse({"chaos", "--seed", "42", "--assert", "--no-plots", "--quick"});
  auto& c = pc.command().chaos;
  CHECK(c.quick);
  CHECK(c.seed == 42);
  CHECK(c.assert_zero);
  CHECK_FALSE(c.plots);
  CHECK(c.fault_phase == chaos_options::quick_defaults().fault_phase);
  auto pp = parse({"peers", "--quick", "--workers", "2"});
  auto& p = pp.command().peers;
  CHECK(p.duration == peer_bench_options::quick_defaults().duration);
  CHECK(p.workers == std::vector<int>{2});
}

TEST_CASE("CAF options go to run and chaos; a bad one, or one elsewhere, is a usage error") {
  auto r = parse({"run", "--caf#scheduler.max-threads=2", "--quick"});
  CHECK(r.command().run.caf_args == std::vector<std::string>{"--caf#scheduler.max-threads=2"});
  CHECK(r.command().run.quick);
  auto c = parse({"chaos", "--caf#scheduler.policy=sharing"});
  CHECK(c.command().chaos.caf_args == std::vector<std::string>{"--caf#scheduler.policy=sharing"});

  auto bad = parse({"chaos", "--caf#scheduler.max-threads=many"});
  CHECK(bad.code() == 2);
  CHECK(contains(bad.err, "CAF options"));
  auto elsewhere = parse({"peers", "--caf#scheduler.max-threads=2"});
  CHECK(elsewhere.code() == 2);
  CHECK(contains(elsewhere.err, "run, chaos, streams and host_calls only"));
}

TEST_CASE("usage errors are exit status 2 with CLI11's message; --help is 0 and measures nothing") {
  struct bad_case {
    std::vector<std::string> args;
    const char* says;
  };
  for (auto& [args, says] : std::vector<bad_case>{
         {{}, "A subcommand"},
         {{"bench"}, "not expected: bench"},
         {{"run", "--bogus"}, "--bogus"},
         {{"peers", "--workers", "0,x"}, "--workers"},
         {{"peers", "--workers", "0"}, "--workers"},
         {{"run", "--duration", "0"}, "--duration"},
         {{"run", "--big-pool", "5000"}, "--big-pool"},
         {{"run", "--no-parse"}, "--no-parse"},  // a peers option only
         {{"run", "--payload", "-1"}, "--payload"},
         {{"run", "--payload", "999999999999"}, "--payload"},
         {{"chaos", "--scenarios", "kill,nope"}, "nope"},
         {{"chaos", "--crashloop-until", "forever"}, "forever"},
         {{"chaos", "--duration", "10"}, "--duration"},
         {{"chaos", "--seed", "-3"}, "--seed"},
         {{"supervisor-stop", "--sizes", "10,0"}, "--sizes"},
       }) {
    CAPTURE(args.empty() ? std::string("(none)") : args[0] + (args.size() > 1 ? " " + args[1] : ""));
    auto p = parse(args);
    CHECK(p.code() == 2);
    CHECK_MESSAGE(contains(p.err, says), p.err);
    CHECK(p.out.empty());
  }
  for (auto& args : std::vector<std::vector<std::string>>{
         {"--help"}, {"run", "--help"}, {"peers", "-h"}, {"chaos", "--help"}, {"supervisor-stop", "--help"}}) {
    auto p = parse(args);
    CHECK(p.code() == 0);
    CHECK(contains(p.out, "Usage"));
  }
}

TEST_CASE("the dspex-bench executable: help of every subcommand") {
  auto top = run({DSPEX_TEST_BENCH_CLI, "--help"});
  CHECK(top.succeeded());
  for (const char* sub : {"run", "peers", "chaos", "supervisor-stop", "streams", "host_calls"}) {
    CHECK_MESSAGE(contains(top.output, sub), top.output);
    auto help = run({DSPEX_TEST_BENCH_CLI, sub, "--help"});
    CHECK_MESSAGE(help.succeeded(), help.output);
    CHECK(contains(help.output, "--"));
  }
  auto chaos = run({DSPEX_TEST_BENCH_CLI, "chaos", "--help"});
  for (const char* opt : {"--quick", "--seed", "--assert", "--scenarios", "--crashloop-until", "--caf#"})
    CHECK_MESSAGE(contains(chaos.output, opt), opt);
  auto bad = run({DSPEX_TEST_BENCH_CLI, "chaos", "--bogus"});
  CHECK(bad.describe() == "exit code 2");
}

TEST_CASE("the dspex executable has no bench or chaos subcommand") {
  for (const char* sub : {"bench", "chaos"}) {
    auto r = run({DSPEX_TEST_CLI, sub, "--quick"});
    CHECK_FALSE(r.succeeded());
    CHECK_MESSAGE(contains(r.output, "not expected"), r.output);
    CHECK_MESSAGE(contains(r.output, sub), r.output);
  }
}

TEST_CASE("the dspex-bench executable: a short real supervisor-stop and peers run") {
  auto stop = run({DSPEX_TEST_BENCH_CLI, "supervisor-stop", "--sizes", "5,10", "--repeats", "1"});
  CHECK_MESSAGE(stop.succeeded(), stop.output);
  CHECK(contains(stop.output, "simple_one_for_one"));
  CHECK(contains(stop.output, "stop ms"));

  auto dir = std::filesystem::temp_directory_path() / ("dspex_test_bench_cli_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  auto peers = run({DSPEX_TEST_BENCH_CLI, "peers", "--workers", "1", "--duration", "100", "--spawn-repeats", "1",
                    "--no-python-peers", "--no-pinned", "--no-plots", "--out", dir.string()},
                   120s);
  CHECK_MESSAGE(peers.succeeded(), peers.output);
  std::ifstream in(dir / "peers.json");
  REQUIRE(in);
  auto j = json::parse(in);
  CHECK(j.at("bare_loop").size() == 1);
  CHECK(j.at("bare_loop_min_echo").size() == 1);  // the minimal Python echo beside it
  CHECK(j.at("bare_loop_min_echo")[0].at("worker").get<std::string>().find("min_echo.py") != std::string::npos);
  CHECK(j.at("bare_loop_min_echo")[0].at("errors") == 0);
  CHECK(j.at("failures").empty());
  CHECK(j.at("options").at("duration_ms") == 100);
  std::filesystem::remove_all(dir);
}

TEST_CASE("streams: its options, --quick and what overrides it") {
  auto p = parse({"streams", "--parts", "cancel,io", "--quick", "--cancel-samples", "7", "--io-clients", "30",
                  "--mp-processes", "3", "--caf#scheduler.max-threads=2"});
  auto& s = p.command().streams;
  CHECK(p.command().name == "streams");
  CHECK(s.quick);
  CHECK(s.parts == std::vector<std::string>{"cancel", "io"});
  CHECK(s.cancel_samples == 7);
  CHECK(s.io_clients == 30);
  CHECK(s.mp_processes == 3);
  CHECK(s.samples == stream_bench_options::quick_defaults().samples);
  CHECK(s.caf_args == std::vector<std::string>{"--caf#scheduler.max-threads=2"});
  auto bad = parse({"streams", "--parts", "first-chunk,nope"});
  CHECK(bad.code() == 2);
  CHECK(contains(bad.err, "nope"));
}

TEST_CASE("streams: every part runs with small counts, and the table judges each against its target") {
  auto dir = scratch("run");
  auto r = run({DSPEX_TEST_BENCH_CLI, "streams", "--quick", "--samples", "20", "--warmup", "5", "--streams", "2",
                "--chunks", "50", "--cancel-samples", "5", "--io-clients", "20", "--io-concurrency", "10",
                "--io-wait", "50", "--io-duration", "300", "--mp-processes", "2", "--no-plots", "--out",
                dir.string()},
               180s);
  REQUIRE_MESSAGE(r.succeeded(), r.output);
  for (const char* part : {"time to first chunk", "<= 1.2x unary", "chunk throughput", ">= 0.8x floor",
                           "cancel latency", "<= 5 ms", "I/O-bound", ">= 0.9x ideal", "multiprocessing.Pool"})
    CHECK_MESSAGE(contains(r.output, part), part);

  auto j = read_json(dir / "streams.json");
  CHECK(j.at("failures").empty());
  auto& fc = j.at("first_chunk");
  CHECK(fc.at("unary").at("count") == 20);
  CHECK(fc.at("first_chunk").at("count") == 20);
  auto& ch = j.at("chunks");
  CHECK(ch.at("dspex_stream").at("count") == 2);
  CHECK(ch.at("floor_stream").at("count") == 2);
  CHECK(ch.at("out_of_order") == 0);
  CHECK(ch.at("dspex_chunks_per_s").get<double>() > 0);
  CHECK(ch.at("floor_chunks_per_s").get<double>() > 0);
  CHECK(j.at("cancel").at("latency").at("count") == 5);
  CHECK(j.at("cancel").at("missing") == 0);
  auto& io = j.at("io");
  CHECK(io.at("ideal_per_s").get<double>() == doctest::Approx(200.0));  // 10 slots / 50 ms
  REQUIRE(io.at("runs").size() == 3);
  std::vector<std::string> systems;
  for (auto& run : io.at("runs")) {
    systems.push_back(run.at("system"));
    CHECK_MESSAGE(run.at("ran").get<bool>(), run.dump());
    CHECK(run.at("errors") == 0);
  }
  CHECK(systems == std::vector<std::string>{"asyncio", "threads", "mp.Pool"});
  // Every judged row carries a verdict; the four targets are there.
  int judged = 0;
  for (auto& row : j.at("table").at("rows"))
    if (row.at("verdict") == "PASS" || row.at("verdict") == "FAIL")
      ++judged;
  CHECK(judged == 4);
  std::filesystem::remove_all(dir);
}

TEST_CASE("host_calls: its options, --quick and what overrides it") {
  auto p = parse({"host_calls", "--quick", "--rounds", "9", "--agents", "8", "--parts", "agents"});
  auto& h = p.command().host_calls;
  CHECK(p.command().name == "host_calls");
  CHECK(h.quick);
  CHECK(h.rounds == 9);
  CHECK(h.agents == 8);
  CHECK(h.agent_rounds == host_call_bench_options::quick_defaults().agent_rounds);
  CHECK(h.parts == std::vector<std::string>{"agents"});
  CHECK(parse({"host_calls", "--parts", "nope"}).code() == 2);
  CHECK(parse({"host_calls", "--tool-calls", "0"}).code() == 2);
}

TEST_CASE("host_calls: both parts run with small counts; errors and hangs are 0") {
  auto dir = scratch("host_calls");
  auto r = run({DSPEX_TEST_BENCH_CLI, "host_calls", "--rounds", "20", "--warmup", "2", "--calls", "3", "--agents",
                "8", "--agent-rounds", "2", "--tool-calls", "3", "--agent-workers", "2", "--tool-workers", "2",
                "--out", dir.string()},
               180s);
  REQUIRE_MESSAGE(r.succeeded(), r.output);
  for (const char* part : {"host call p50", "<= 1.5x unary", "pool-to-pool call p50", "<= 2.2x unary",
                           "agent requests/s", "hangs"})
    CHECK_MESSAGE(contains(r.output, part), part);
  auto j = read_json(dir / "host_calls.json");
  CHECK(j.at("failures").empty());
  auto& rt = j.at("round_trip");
  CHECK(rt.at("unary").at("count") == 20);
  CHECK(rt.at("host_call").at("count") == 60);  // 3 calls a round
  CHECK(rt.at("pool_call").at("count") == 60);
  auto& a = j.at("agents");
  CHECK(a.at("total_ok") == 16);
  CHECK(a.at("total_errors") == 0);
  CHECK(j.at("agent_hangs") == 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("chaos stream: streams under kills are answered once, in order, with no slot left") {
  auto dir = scratch("chaos");
  auto r = run({DSPEX_TEST_BENCH_CLI, "chaos", "--quick", "--scenarios", "stream", "--duration", "600", "--workers",
                "2", "--clients", "4", "--kill-every", "100", "--seed", "7", "--assert", "--no-plots", "--out",
                dir.string()},
               180s);
  REQUIRE_MESSAGE(r.succeeded(), r.output);
  CHECK(contains(r.output, "chunks out of order"));
  CHECK(contains(r.output, "slots after the load"));
  auto j = read_json(dir / "chaos.json");
  REQUIRE(j.at("scenarios").size() == 1);
  auto& s = j.at("scenarios")[0];
  CHECK(s.at("scenario") == "stream");
  CHECK(s.at("sent").get<int>() > 0);
  CHECK(s.at("chunks").get<int>() > 0);
  for (const char* zero : {"never_answered", "answered_twice", "wrong_reply", "chunks_out_of_order", "chunks_foreign",
                           "chunks_after_answer", "streams_incomplete", "slots_in_flight", "slots_busy",
                           "leftover_processes"})
    CHECK_MESSAGE(s.at(zero) == 0, zero);
  CHECK(j.at("violations").empty());
  std::filesystem::remove_all(dir);
}

} // TEST_SUITE
