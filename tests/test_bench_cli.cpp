// dspex-bench's command line (bench/command_line.hpp): the options each
// subcommand takes, what --quick leaves to the options given, the usage
// errors; then the real executable: its help, a short real run, and the
// dspex binary no longer knowing bench or chaos. Nothing here measures.
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
  CHECK(contains(elsewhere.err, "run and chaos only"));
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
  for (const char* sub : {"run", "peers", "chaos", "supervisor-stop"}) {
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
  CHECK(j.at("failures").empty());
  CHECK(j.at("options").at("duration_ms") == 100);
  std::filesystem::remove_all(dir);
}

} // TEST_SUITE
