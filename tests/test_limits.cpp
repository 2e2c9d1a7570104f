// Hard limits of workers (worker.limits, bridge/process_limits.hpp) and
// max_rss_mb checked while a worker is busy, with real Python workers: the
// limits are set before handler code runs on both start paths, and a worker
// stopped by one is reported with its cause and replaced on purpose.
#include <doctest/doctest.h>

#include "support/event_log.hpp"
#include "support/pool_fixture.hpp"
#include "support/why.hpp"

#include <dspex/actors/node/error.hpp>

using namespace dspex;
using namespace dspex::test;

namespace {

struct limits_fixture : pool_fixture {
  std::shared_ptr<event_log> events = std::make_shared<event_log>();

  static pool_config limited_pool(const std::string& start, bridge::process_limits limits) {
    auto c = test_pool_config(1);
    c.worker.start = start;
    c.worker.handler_paths = {std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"};
    c.worker.handler_modules = {"limit_cmds"};
    c.worker.limits = limits;
    c.worker_intensity = 1;  // one counted restart within a minute would end the tree
    c.worker_period = std::chrono::seconds(60);
    return c;
  }

  void start_pool(pool_config c) {
    REQUIRE_FALSE(start(std::move(c), {sys.spawn(event_sink, events)}));
    REQUIRE_FALSE(await_pool_ready());
  }

  // A worker stopped for a limit: its caller got `code`, the pool counts one
  // deliberate replacement under it and no crash, the supervisors restarted
  // nothing on their own, the exit event names the cause, and a fresh
  // worker serves.
  void check_replaced_for(const caf::expected<json>& r, errc code, int old_pid) {
    const std::string name = to_string(code);
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(is(r.error(), code), describe(r.error()));
    REQUIRE(wait_until([&] { return status()["replaced"][name] == 1; }));
    auto st = status();
    CHECK(st["crashes"] == 0);
    CHECK(st["requests"][name] == 1);
    CHECK_MESSAGE(events->wait([&](const event_log::events& xs) {
                    for (auto& x : xs)
                      if (x.kind == supervision::event_kind::child_exited && x.exit
                          && x.exit->text.find(name) != std::string::npos)
                        return true;
                    return false;
                  }),
                  events->dump());
    CHECK_MESSAGE(events->count(supervision::event_kind::child_restarted) == 0, events->dump());
    CHECK_MESSAGE(events->exits(supervision::exit_class::crash) == 0, events->dump());
    auto after = run("rlimits")["pid"].get<int>();
    CHECK(after != old_pid);
    CHECK(wait_until([&] { return process_gone(old_pid); }));
  }

  json run(const std::string& cmd, json args = json::object()) {
    auto r = exec(pool(), cmd, std::move(args));
    REQUIRE_MESSAGE(r, why(r));
    return *r;
  }
};

} // namespace

TEST_SUITE("limits") {

TEST_CASE_FIXTURE(limits_fixture, "limits are set in the worker before its handlers run, forked or spawned") {
  for (std::string start : {"fork", "spawn"}) {
    CAPTURE(start);
    bridge::process_limits l;
    l.memory_mb = 512;
    l.cpu_seconds = 30;
    l.open_files = 40;
    l.processes = 5000;
    start_pool(limited_pool(start, l));
    auto r = run("rlimits");
    CHECK(r["as"] == json::array({512LL << 20, 512LL << 20}));
    CHECK(r["cpu"] == json::array({30, 31}));  // SIGXCPU first, SIGKILL a second later
    CHECK(r["nofile"] == json::array({40, 40}));
    CHECK(r["nproc"] == json::array({5000, 5000}));
    // The descriptor limit holds for user code: open() fails with EMFILE.
    auto opened = run("open_many", {{"n", 100}});
    CHECK(opened["opened"].get<int>() < 40);
    CHECK(opened["error"] == EMFILE);
    stop();
  }
}

TEST_CASE_FIXTURE(limits_fixture, "max_rss_mb while busy: a handler growing 50 MB/s is killed mid-request with out_of_memory") {
  auto c = limited_pool(test_start(), {});
  c.recycle.max_rss_mb = 200;
  start_pool(c);
  auto pid = run("rlimits")["pid"].get<int>();
  // It would reach 2 GB in 40 s; the pool's 200 ms tick stops it near 200 MB.
  auto r = exec(pool(), "grow", {{"mb_per_s", 50}, {"max_mb", 2000}});
  check_replaced_for(r, errc::out_of_memory, pid);
  CHECK(detail_of(r.error()).find("max_rss_mb 200") != std::string::npos);
  CHECK(status()["replaced"]["recycled_rss"] == 0);  // killed, not recycled
}

TEST_CASE_FIXTURE(limits_fixture, "memory_mb: a handler growing 50 MB/s meets MemoryError, answered out_of_memory, the worker replaced") {
  bridge::process_limits l;
  l.memory_mb = 256;
  start_pool(limited_pool(test_start(), l));
  auto pid = run("rlimits")["pid"].get<int>();
  auto r = exec(pool(), "grow", {{"mb_per_s", 50}, {"max_mb", 2000}});
  check_replaced_for(r, errc::out_of_memory, pid);
  CHECK(detail_of(r.error()).find("memory_mb") != std::string::npos);
}

TEST_CASE_FIXTURE(limits_fixture, "cpu_seconds 1: a spinning handler is stopped by SIGXCPU, answered cpu_limit, the worker replaced") {
  bridge::process_limits l;
  l.cpu_seconds = 1;
  start_pool(limited_pool(test_start(), l));
  auto pid = run("rlimits")["pid"].get<int>();
  auto r = exec(pool(), "burn", {{"seconds", 30}});
  check_replaced_for(r, errc::cpu_limit, pid);
  CHECK(detail_of(r.error()).find("SIGXCPU") != std::string::npos);
}

} // TEST_SUITE
