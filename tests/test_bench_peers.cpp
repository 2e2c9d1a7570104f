// The benchmark peers and reporting kit (bench/): the bare loop against real
// workers, the Python pool peers, the subprocess hygiene they rely on, and
// the report helpers. Sanity only: counts, orderings and clean-up; never a
// wall-clock figure. (In dspex_bench_tests, with the bench library; the
// command line is in test_bench_cli.cpp.)
#include <doctest/doctest.h>

#include <dspex/bench/bare_loop.hpp>
#include <dspex/bench/bench_main.hpp>
#include <dspex/bench/python_peer.hpp>
#include <dspex/bench/report.hpp>
#include <dspex/bench/subprocess.hpp>
#include <dspex/bench/tcp_floor.hpp>

#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/bridge/protocol.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace dspex::bench;
using namespace std::chrono_literals;

namespace {

// Processes whose command line matches `pattern` (pgrep -f), one per line.
std::string pgrep(const std::string& pattern) {
  spawn_spec spec;
  spec.argv = {"pgrep", "-af", "--", pattern};
  auto r = run_command(spec, 10s);
  return r.output;
}

std::string our_bare_workers() {
  return pgrep("dspex_worker --worker-id bare-[0-9]+ --run-id " + dspex::bridge::host_run_id() + " ");
}

std::string our_mp_peers() { return pgrep("mp_peer.py .*--run-id " + dspex::bridge::host_run_id()); }

std::filesystem::path scratch_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("dspex_test_bench_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

} // namespace

TEST_SUITE("bench_peers") {

TEST_CASE("the bare loop sends byte for byte the frames of encode_request") {
  for (std::size_t payload : {0u, 1u, 64u, 5000u}) {
    echo_frames frames(payload);
    for (std::uint64_t id : {0ull, 1ull, 9ull, 10ull, 123456789ull, 18446744073709551615ull}) {
      auto expected = dspex::bridge::encode_frame(echo_request_body(id, payload));
      CHECK(frames.frame(id) == expected);
      auto parsed = dspex::bridge::parse_request(echo_request_body(id, payload));
      REQUIRE(std::holds_alternative<dspex::bridge::request>(parsed));
      auto& req = std::get<dspex::bridge::request>(parsed);
      CHECK(req.id == id);
      CHECK(req.command == "echo");
      CHECK(req.args.at("payload").get<std::string>().size() == payload);
      CHECK_FALSE(req.session_id.has_value());
    }
  }
}

TEST_CASE("bare loop: one worker answers a few hundred requests, then is reaped") {
  auto r = run_bare_loop_count(1, 300, 64);
  CHECK(r.errors == 0);
  CHECK(r.first_error.empty());
  CHECK(r.requests == 300);
  CHECK(r.latency.size() == 300);
  CHECK(r.requests_per_s > 0);
  CHECK(r.seconds > 0);
  CHECK(r.summary.count == 300);
  CHECK(r.summary.min_us > 0);
  CHECK(r.summary.min_us <= r.summary.p50_us);
  CHECK(r.summary.p50_us <= r.summary.p99_us);
  CHECK(r.summary.p99_us <= r.summary.max_us);
  auto j = to_json(r);
  CHECK(j.at("requests").get<int>() == 300);
  CHECK(j.at("cdf_us").size() == 200);
  CHECK(our_bare_workers().empty());
}

TEST_CASE("bare loop: two workers for a short timed run, without reply parsing") {
  bare_options o;
  o.workers = 2;
  o.duration = 100ms;
  o.warmup_requests = 20;
  o.parse_replies = false;
  o.payload_bytes = 300000;  // above the pipe capacity: partial reads and writes
  auto r = run_bare_loop(o);
  CHECK(r.errors == 0);
  CHECK(r.requests > 0);
  CHECK(r.latency.size() == r.requests);
  CHECK_FALSE(r.parse_replies);
  CHECK(our_bare_workers().empty());
}

TEST_CASE("bare loop: pinned to one CPU, and the caller's affinity is restored") {
  cpu_set_t before, after;
  REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof before, &before) == 0);
  bare_options o;
  o.requests_per_worker = 100;
  o.warmup_requests = 10;
  o.cpus = {0};
  auto r = run_bare_loop(o);
  CHECK(r.errors == 0);
  CHECK(r.requests == 100);
  CHECK(r.cpus == std::vector<int>{0});
  REQUIRE(pthread_getaffinity_np(pthread_self(), sizeof after, &after) == 0);
  CHECK(CPU_EQUAL(&before, &after));
  CHECK(our_bare_workers().empty());
}

TEST_CASE("bare loop: a worker that exits at once is an error, not a hang or a crash") {
  bare_options o;
  o.workers = 2;
  o.requests_per_worker = 50;
  o.launch.python = "false";  // exits 1 at once: EPIPE on write or EOF on read
  auto r = run_bare_loop(o);
  CHECK(r.requests == 0);
  CHECK(r.errors == 2);
  CHECK_FALSE(r.first_error.empty());
}

TEST_CASE("bare loop: an interpreter that does not exist is reported by a throw") {
  bare_options o;
  o.launch.python = "/nonexistent/python3";
  CHECK_THROWS_AS(run_bare_loop(o), std::system_error);
}

TEST_CASE("spawn to first reply: one and several workers, all reaped") {
  auto one = spawn_to_first_reply();
  CHECK(one.count() > 0);
  auto s = measure_spawn(2, 2, {}, false);
  CHECK(s.samples.size() == 2);
  CHECK(s.summary.min_us > 0);
  CHECK(to_json(s).at("samples_us").size() == 2);
  CHECK(our_bare_workers().empty());
}

TEST_CASE("python peers: multiprocessing.Pool and ProcessPoolExecutor report sane figures") {
  REQUIRE_FALSE(locate_mp_peer().empty());
  peer_options po;
  po.warmup = 50ms;
  for (auto kind : {peer_kind::mp_pool, peer_kind::process_pool_executor}) {
    CAPTURE(to_string(kind));
    auto r = run_python_peer(kind, 2, 200ms, 64, po);
    CHECK_MESSAGE(r.ok, r.error);
    CHECK(r.workers == 2);
    CHECK(r.inflight == 8);
    CHECK(r.requests > 0);
    CHECK(r.errors == 0);
    CHECK(r.requests_per_s > 0);
    CHECK(r.latency.p50_us > 0);
    CHECK(r.latency.p50_us <= r.latency.p99_us);
    CHECK_FALSE(r.cdf_us.empty());
    CHECK(to_json(r).at("kind") == to_string(kind));
  }
  CHECK(our_mp_peers().empty());
}

TEST_CASE("python peers: a failing peer comes back as not ok") {
  peer_options po;
  po.script = "/nonexistent/mp_peer.py";
  auto r = run_python_peer(peer_kind::mp_pool, 1, 100ms, 8, po);
  CHECK_FALSE(r.ok);
  CHECK_FALSE(r.error.empty());
}

TEST_CASE("tcp floor: round trips over a real loopback connection, counted and summed over calls") {
  tcp_floor f;
  measure_tcp_floor(100, f);
  measure_tcp_floor(50, f);
  CHECK(f.ok());
  CHECK(f.round_trips == 150);
  CHECK(f.rt.summary().count == 150);
  CHECK(f.rt.summary().p50_us > 0);
  CHECK(f.cpu_us >= 0);
}

TEST_CASE("subprocess: pipes are close-on-exec, so each child sees its own EOF") {
  spawn_spec spec;
  spec.argv = {"cat"};
  auto a = child_process::spawn(spec);
  auto b = child_process::spawn(spec);  // would hold a's stdin if it leaked
  a.close_stdin();
  CHECK(a.wait_for(std::chrono::milliseconds(20000)));
  CHECK(WIFEXITED(a.raw_status()));
  CHECK_FALSE(b.has_exited());
  b.stop();
  CHECK(b.reaped());
}

TEST_CASE("subprocess: a timeout kills the whole process group") {
  const std::string marker = "dspex-test-bench-straggler-" + std::to_string(::getpid());
  spawn_spec spec;
  spec.argv = {"sh", "-c", "python3 -c 'import time; time.sleep(60)' " + marker + " & wait"};
  auto r = run_command(spec, 300ms);
  CHECK(r.timed_out);
  CHECK_FALSE(r.succeeded());
  // The grandchild died with the group (it may take a moment to vanish).
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = pgrep(marker).empty();
    if (!gone)
      std::this_thread::sleep_for(10ms);
  }
  CHECK(gone);
}

TEST_CASE("subprocess: run_command captures output and exit codes") {
  spawn_spec spec;
  spec.argv = {"sh", "-c", "echo hello; echo oops >&2; exit 3"};
  spec.stderr_to = spawn_spec::stderr_mode::merge;
  auto r = run_command(spec, 10s);
  CHECK_FALSE(r.timed_out);
  CHECK(r.describe() == "exit code 3");
  CHECK(r.output.find("hello") != std::string::npos);
  CHECK(r.output.find("oops") != std::string::npos);
  spec.argv = {"definitely-not-a-command-dspex"};
  CHECK_THROWS_AS(run_command(spec, 1s), std::system_error);
}

TEST_CASE("report: percentiles, quantiles and histogram") {
  latency_recorder rec;
  for (int us = 100; us >= 1; --us)
    rec.add(std::chrono::microseconds(us));
  auto s = rec.summary();
  CHECK(s.count == 100);
  CHECK(s.min_us == doctest::Approx(1));
  CHECK(s.p50_us == doctest::Approx(50));
  CHECK(s.p90_us == doctest::Approx(90));
  CHECK(s.p99_us == doctest::Approx(99));
  CHECK(s.max_us == doctest::Approx(100));
  CHECK(s.mean_us == doctest::Approx(50.5));
  auto q = rec.quantiles_us(11);
  REQUIRE(q.size() == 11);
  CHECK(q.front() == doctest::Approx(1));
  CHECK(q.back() == doctest::Approx(100));
  CHECK(std::is_sorted(q.begin(), q.end()));
  std::uint64_t total = 0;
  for (auto& b : rec.log_histogram(10)) {
    CHECK(b.lo_us < b.hi_us);
    total += b.count;
  }
  CHECK(total == 100);
  auto s2 = summarize_sorted_us(q);
  CHECK(s2.max_us == doctest::Approx(100));
  latency_recorder empty;
  CHECK(empty.summary().count == 0);
  CHECK(empty.quantiles_us().empty());
  CHECK(empty.log_histogram().empty());
}

TEST_CASE("report: formatting, verdicts and the aligned table") {
  CHECK(format_rate(812) == "812 req/s");
  CHECK(format_rate(45300) == "45.3k req/s");
  CHECK(format_rate(1.21e6) == "1.21M req/s");
  CHECK(format_micros(35.2) == "35.2 us");
  CHECK(format_micros(1240) == "1.24 ms");
  CHECK(format_micros(1.2e6) == "1.20 s");
  CHECK(format_ratio(1.234) == "1.23x");
  CHECK(format_ratio(std::nan("")) == "-");
  CHECK(judge_at_least(0.9, 0.8) == verdict::pass);
  CHECK(judge_at_least(0.7, 0.8) == verdict::fail);
  CHECK(judge_at_most(1.2, 1.25) == verdict::pass);
  CHECK(judge_at_most(std::nan(""), 1.25) == verdict::skipped);

  report_table t("title");
  t.section("one");
  t.add({"round trip p50", "41.2 us", "bare 33.0 us", "1.25x", "<= 1.25x bare", verdict::pass, ""});
  t.add({"a much longer figure name", "1.2k req/s", "", "", "", verdict::fail, "a note"});
  CHECK(t.any_failed());
  std::ostringstream os;
  t.print(os);
  std::string out = os.str();
  CHECK(out.find("title") == 0);
  CHECK(out.find("[one]") != std::string::npos);
  CHECK(out.find("  * a much longer figure name: a note") != std::string::npos);
  // Every row's verdict starts in the same column as the header's.
  std::istringstream lines(out);
  std::string line;
  std::size_t verdict_col = std::string::npos;
  int rows = 0;
  while (std::getline(lines, line)) {
    if (line.find("verdict") != std::string::npos && verdict_col == std::string::npos)
      verdict_col = line.find("verdict");
    for (const char* v : {"PASS", "FAIL"})
      if (line.find(v) != std::string::npos) {
        CHECK(line.find(v) == verdict_col);
        ++rows;
      }
  }
  CHECK(rows == 2);
  auto j = t.to_json();
  CHECK(j.at("rows").size() == 2);
  CHECK(j.at("rows")[0].at("section") == "one");
  CHECK(j.at("rows")[1].at("verdict") == "FAIL");
}

TEST_CASE("report: JSON file, availability timeline and plots") {
  auto dir = scratch_dir("report");
  write_json_file((dir / "sub" / "x.json").string(), json{{"a", 1}});
  std::ifstream in(dir / "sub" / "x.json");
  CHECK(json::parse(in).at("a") == 1);

  auto t0 = availability_timeline::clock::now();
  availability_timeline tl(100ms, t0);
  tl.pool_size(4, t0);
  tl.record(true, t0 + 10ms);
  tl.record(true, t0 + 20ms);
  tl.record(false, t0 + 150ms);
  tl.event("kill w1", t0 + 140ms);
  tl.pool_size(3, t0 + 160ms);
  tl.record(true, t0 + 350ms);
  auto b = tl.buckets();
  REQUIRE(b.size() == 4);
  CHECK(b[0].ok == 2);
  CHECK(b[1].failed == 1);
  CHECK(b[0].pool_size == 4);
  CHECK(b[1].pool_size == 3);
  CHECK(b[3].pool_size == 3);  // carried forward
  CHECK(b[3].t_s == doctest::Approx(0.3));
  CHECK(tl.events().size() == 1);
  CHECK(tl.to_json().at("buckets").size() == 4);

  if (!gnuplot_available()) {
    MESSAGE("gnuplot missing: plots not checked");
    return;
  }
  latency_recorder rec;
  for (int i = 1; i <= 1000; ++i)
    rec.add(std::chrono::microseconds(10 + i % 37));
  auto p1 = plot_latency_cdf(dir.string(), "cdf", {{"a", rec.quantiles_us(100)}, {"b \"quoted\"", {5, 6, 7}}});
  CHECK_MESSAGE(p1.ok, p1.message);
  auto p2 = plot_throughput(dir.string(), "tput", {{"bare", {{1, 100}, {2, 190}}}, {"mp", {{1, 40}, {2, 70}}}});
  CHECK_MESSAGE(p2.ok, p2.message);
  auto p3 = plot_availability(dir.string(), "avail", b, tl.events(), "test", tl.bucket_seconds());
  CHECK_MESSAGE(p3.ok, p3.message);
  for (auto* p : {&p1, &p2, &p3})
    if (p->ok)
      CHECK(std::filesystem::file_size(p->png) > 0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("measure_peers: a tiny run fills every part of the result and the JSON") {
  peer_bench_options o;
  o.workers = {1};
  o.duration = 100ms;
  o.warmup_requests = 10;
  o.peer_warmup = 50ms;
  o.spawn_repeats = 1;
  o.pool_ready_workers = 2;
  o.plots = false;
  auto r = measure_peers(o);
  CHECK(r.failures.empty());
  REQUIRE(r.bare_for(1) != nullptr);
  CHECK(r.peer_for(peer_kind::mp_pool, 1) != nullptr);
  CHECK(r.peer_for(peer_kind::process_pool_executor, 1) != nullptr);
  CHECK(r.spawn_one.summary.count == 1);
  CHECK(r.spawn_many.workers == 2);
  CHECK(r.pinned.requests > 0);
  report_table t;
  add_peer_rows(t, r);
  CHECK_FALSE(t.any_failed());
  CHECK(t.rows().size() >= 6);
  auto j = to_json(r);
  for (const char* key : {"machine", "options", "bare_loop", "mp_pool", "process_pool_executor",
                          "spawn_to_first_reply", "table"})
    CHECK(j.contains(key));
  CHECK(our_bare_workers().empty());
  CHECK(our_mp_peers().empty());
}

} // TEST_SUITE
