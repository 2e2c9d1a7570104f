// Worker recycling (recycling.hpp) with real Python workers: a worker past
// max_requests, max_rss_mb or max_age_ms is retired while idle on the
// deliberate path, so no request fails and no restart intensity is spent.
#include <doctest/doctest.h>

#include "support/event_log.hpp"
#include "support/pool_fixture.hpp"
#include "support/request_tally.hpp"
#include "support/why.hpp"

#include <dspex/actors/pool/recycling.hpp>

#include <set>

using namespace dspex;
using namespace dspex::test;
using supervision::event_kind;
using supervision::exit_class;

namespace {

struct recycling_fixture : pool_fixture {
  std::shared_ptr<event_log> events = std::make_shared<event_log>();

  caf::error start_logged(pool_config c) {
    return start(std::move(c), {sys.spawn(event_sink, events)});
  }

  std::uint64_t replaced(const char* cause) {
    return status()["replaced"][cause].get<std::uint64_t>();
  }

  int pid_of_ping() {
    auto r = exec(pool(), "ping");
    REQUIRE_MESSAGE(r, why(r));
    return (*r)["pid"].get<int>();
  }

  // No exit the supervisors did not ask for, and none of them gave up.
  void check_no_escalation() {
    CHECK_MESSAGE(events->count(event_kind::intensity_reached) == 0, events->dump());
    CHECK_MESSAGE(events->count(event_kind::supervisor_stopped) == 0, events->dump());
    CHECK_MESSAGE(events->count(event_kind::child_restarted) == 0, events->dump());
    CHECK_MESSAGE(events->exits(exit_class::crash) == 0, events->dump());
    CHECK_MESSAGE(events->exits(exit_class::killed) == 0, events->dump());
  }
};

} // namespace

TEST_SUITE("recycling") {

TEST_CASE("jitter draws each worker's limits below the configured cap") {
  recycle_config c;
  c.max_requests = 10;
  c.max_age = std::chrono::milliseconds(1000);
  c.jitter = 0.1;
  recycler r(c);
  std::set<std::uint64_t> requests;
  auto now = recycle_clock::now();
  for (int i = 0; i < 200; ++i) {
    auto b = r.draw(now);
    requests.insert(b.max_requests);
    CHECK(b.max_requests >= 9);
    CHECK(b.max_requests <= 10);
    CHECK(b.max_age.count() >= 900);
    CHECK(b.max_age.count() <= 1000);
    CHECK(b.due(b.max_requests - 1, now) == recycle_cause::none);
    CHECK(b.due(b.max_requests, now) == recycle_cause::requests);
    CHECK(b.due(0, now + b.max_age) == recycle_cause::age);
  }
  CHECK(requests.size() == 2);  // both 9 and 10 come up
  c.jitter = 0;
  recycler fixed(c);
  CHECK(fixed.draw(now).max_requests == 10);
  CHECK(fixed.draw(now).max_age.count() == 1000);
  // RSS: our own process is resident, and a budget over it is due.
  auto own = rss_bytes(::getpid());
  REQUIRE(own);
  CHECK(*own > 0);
  CHECK_FALSE(rss_bytes(-5));
}

TEST_CASE_FIXTURE(recycling_fixture, "max_requests 10, 1000 requests: none fails, about 100 recycles, intensity 1 untouched") {
  auto c = test_pool_config(2);
  c.recycle.max_requests = 10;
  c.worker_intensity = 1;  // two counted restarts within a minute would end the tree
  c.worker_period = std::chrono::seconds(60);
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  // One session with state of its own: its program is replayed on each new
  // worker, as after any replacement.
  const std::string sid = "s-recycled";
  REQUIRE(exec(pool(), "configure_lm", json{{"provider", "mock"}}, 0ms, sid));
  REQUIRE(exec(pool(), "create_program", json{{"id", "p"}, {"signature", "q -> a"}}, 0ms, sid));
  request_tally pings, session;
  constexpr int clients = 3, per_client = 300, in_session = 100;
  for (int i = 0; i < clients; ++i)
    sys.spawn(serial_client, pool(), always(make_command("ping")), per_client, &pings, 0);
  sys.spawn(serial_client, pool(),
            always(make_command("execute_program",
                                json{{"program_id", "p"}, {"inputs", {{"q", "x"}}}}, sid)),
            in_session, &session, 0);
  REQUIRE(wait_until(
    [&] { return pings.total.load() == clients * per_client && session.total.load() == in_session; },
    300s));
  CHECK_MESSAGE(pings.get("ok") == clients * per_client, pings.dump());
  CHECK_MESSAGE(session.get("ok") == in_session, session.dump());
  auto recycled = replaced("recycled_requests");
  MESSAGE("recycled " << recycled << ", distinct pids " << pings.pids().size());
  // 1,002 requests (the session's setup too) at 9 or 10 per worker.
  CHECK(recycled >= 70);
  CHECK(recycled <= 130);
  CHECK(pings.pids().size() >= 50);
  auto st = status();
  CHECK(st["crashes"] == 0);
  CHECK(st["errors"].empty());
  CHECK(st["replaced"]["timeout"] == 0);
  // Every recycled worker was stopped by its supervisor (shutdown), none killed.
  CHECK_MESSAGE(wait_until([&] {
                  return events->exits(exit_class::shutdown) >= static_cast<int>(recycled);
                }, 30s),
                events->dump());
  check_no_escalation();
  CHECK(wait_until([&] { return status()["workers"] == 2; }));
  CHECK(exec(pool(), "execute_program", json{{"program_id", "p"}, {"inputs", {{"q", "y"}}}}, 0ms,
             sid));
}

TEST_CASE_FIXTURE(recycling_fixture, "max_rss_mb: a worker that grew past it is recycled while idle, no request fails") {
  // The pool's clock by hand: the RSS tick runs only when the test advances
  // it, here while the worker is idle (a busy one over the limit would be
  // killed mid-request: tests/test_limits.cpp).
  auto c = with_manual_clock(test_pool_config(1));
  c.recycle.max_rss_mb = 120;
  c.worker_intensity = 1;
  c.worker_period = std::chrono::seconds(60);
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto before = pid_of_ping();
  // The pool samples the RSS on its tick; a fresh worker is well below.
  REQUIRE(wait_until([&] {
    advance(c.recycle.tick_interval());
    return status()["worker_list"][0].contains("rss_mb");
  }));
  auto fresh = status()["worker_list"][0]["rss_mb"].get<double>();
  MESSAGE("fresh worker rss " << fresh << " MB");
  REQUIRE(fresh < 120);
  CHECK(replaced("recycled_rss") == 0);
  auto grown = exec(pool(), "fault_alloc", json{{"mb", 200}, {"hold", true}});
  REQUIRE_MESSAGE(grown, why(grown));
  CHECK((*grown)["held_mb"] == 200);
  CHECK(wait_until([&] {
    advance(c.recycle.tick_interval());
    return replaced("recycled_rss") == 1;
  }));
  auto after = pid_of_ping();
  CHECK(after != before);
  CHECK(process_gone(before));
  auto st = status();
  CHECK(st["crashes"] == 0);
  CHECK(st["errors"].empty());
  check_no_escalation();
}

TEST_CASE_FIXTURE(recycling_fixture, "max_age_ms: idle workers are recycled when they grow old, and serve after") {
  auto c = with_manual_clock(test_pool_config(2));
  c.recycle.max_age = std::chrono::milliseconds(400);  // on the pool's manual clock
  c.worker_intensity = 1;
  c.worker_period = std::chrono::seconds(60);
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  std::set<int> seen{pid_of_ping()};
  // Nobody sends anything: the tick finds them idle and old, twice.
  for (std::uint64_t round = 1; round <= 2; ++round) {
    advance(c.recycle.max_age / 2);
    CHECK(replaced("recycled_age") == 2 * (round - 1));  // young yet
    advance(c.recycle.max_age / 2);
    CHECK(replaced("recycled_age") == 2 * round);
    REQUIRE(wait_until([&] {
      auto st = status();
      return st["workers"] == 2 && st["idle"] == 2;
    }));
  }
  for (int i = 0; i < 5; ++i)
    seen.insert(pid_of_ping());
  CHECK(seen.size() >= 2);
  auto st = status();
  CHECK(st["crashes"] == 0);
  CHECK(st["errors"].empty());
  check_no_escalation();
}

TEST_CASE_FIXTURE(recycling_fixture, "a busy worker past its age finishes its request first, then goes") {
  auto c = with_manual_clock(test_pool_config(1));
  c.recycle.max_age = std::chrono::milliseconds(200);  // on the pool's manual clock
  c.recycle.jitter = 0;
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto before = pid_of_ping();
  // Past its age while it sleeps: the tick leaves a busy worker alone.
  auto r = exec_async(make_command("fault_sleep", json{{"seconds", 1.0}}));
  REQUIRE(wait_until([&] { return status()["busy"] == 1; }));
  advance(c.recycle.max_age);
  auto busy = status();
  CHECK(busy["busy"] == 1);
  CHECK(replaced("recycled_age") == 0);
  REQUIRE(r->wait());
  CHECK_MESSAGE(!r->get(), describe(r->get()));
  // Free again, it goes at once, with no tick.
  CHECK(wait_until([&] { return replaced("recycled_age") >= 1; }));
  CHECK(wait_until([&] { return process_gone(before); }));
  CHECK(pid_of_ping() != before);
  auto st = status();
  CHECK(st["crashes"] == 0);
  CHECK(st["errors"].empty());
  check_no_escalation();
}

} // TEST_SUITE
