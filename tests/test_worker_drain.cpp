// Per-worker drain (issue 27): a worker stopped on purpose first leaves
// its pool's rotation and finishes what it has in flight, so an operator's
// restart or stop of one worker under load fails no request; past the
// pool's drain_timeout the hard path still stops it.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>

#include "support/load_clients.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

struct drain_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<node> n;

  void start(int size, int drain_timeout_ms = 10000) {
    auto j = small_tree("pool", size);
    j["root"]["children"][1]["drain_timeout_ms"] = drain_timeout_ms;
    n = start_test_node(sys, j);
  }
  ~drain_fixture() {
    if (n)
      n->stop();
  }

  json pool() { return n->status()["pools"]["default"]; }
  int pid_of(const std::string& path) {
    auto pids = tree_os_pids(n->status()["tree"], path);
    return pids.size() == 1 ? pids.front() : -1;
  }
};

const std::string w1 = "root/pool_sup/workers/w1";

} // namespace

TEST_SUITE("worker_drain") {

TEST_CASE_FIXTURE(drain_fixture, "restarting and stopping one worker under load fails no request") {
  start(2);
  // Requests that take a while, so each restart finds one in flight.
  load_clients load(*n, 4, "fault_sleep", json{{"seconds", 0.003}});
  REQUIRE(load.wait_answers(20));
  for (int i = 0; i < 5; ++i) {
    auto before = pid_of("/workers/w1");
    REQUIRE_MESSAGE(!n->restart_child(w1), "restart " << i);
    CHECK(pid_of("/workers/w1") != before);
    REQUIRE(load.wait_answers(10));
  }
  CHECK_MESSAGE(!n->stop_child(w1), "stop");
  REQUIRE(load.wait_answers(10));
  CHECK(pool()["workers"] == 1);
  CHECK_MESSAGE(!n->start_child(w1), "start");
  REQUIRE(load.wait_answers(10));
  load.stop();
  CHECK_MESSAGE(load.all_ok(), load.tally.dump());
  auto p = pool();
  CHECK(p["crashes"] == 0);
  CHECK(p["errors"].empty());
  CHECK(p["draining_workers"] == 0);
}

TEST_CASE_FIXTURE(drain_fixture, "a restart waits for the request in flight; new ones wait in the queue meanwhile") {
  start(1);
  // The one worker is busy for a while when the restart comes: its request
  // still ends ok, and a request sent during the drain is served by the
  // new worker.
  auto slow = n->call("fault_sleep", json{{"seconds", 0.4}});
  REQUIRE(wait_until([&] { return pool()["busy"] == 1; }));
  auto before = pid_of("/workers/w1");
  auto restart = std::async(std::launch::async, [&] { return n->restart_child(w1); });
  REQUIRE(wait_until([&] { return pool()["draining_workers"] == 1; }));
  auto queued = n->call("ping");
  auto r = slow.get();
  CHECK_MESSAGE(r, why(r));
  CHECK_FALSE(restart.get());
  auto q = queued.get();
  REQUIRE_MESSAGE(q, why(q));
  CHECK((*q)["pid"] != before);
  CHECK((*q)["pid"] == pid_of("/workers/w1"));
}

TEST_CASE_FIXTURE(drain_fixture, "past drain_timeout the hard path stops the worker; its caller gets a classified error") {
  start(1, 200);
  auto stuck = n->call("fault_sleep", json{{"seconds", 30}});
  REQUIRE(wait_until([&] { return pool()["busy"] == 1; }));
  CHECK_FALSE(n->restart_child(w1));
  auto r = stuck.get();
  REQUIRE_FALSE(r);
  CHECK_MESSAGE(is(r.error(), errc::shutting_down), describe(r.error()));
  auto ok = n->execute("ping");
  CHECK_MESSAGE(ok, why(ok));
  CHECK(pool()["crashes"] == 0);
}

}
