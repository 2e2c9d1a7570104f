// node::execute's own guarantees, whatever the actors behind it do: every
// call is answered once, by its own answer or a classified error, also when
// the pool actor dies holding the request (CAF 0.17 drops its promise
// without a word), and the blocking callers the node reuses never hand one
// call's answer to another.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>

#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"

#include <caf/all.hpp>

#include <future>
#include <string>
#include <thread>
#include <vector>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

struct calls_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};

  std::shared_ptr<node> start(const json& j) { return start_test_node(sys, j); }
};

json pool_status(node& n) {
  auto p = n.status()["pools"]["default"];
  return p.is_object() ? p : json::object();
}

bool ready(std::future<caf::expected<json>>& f) {
  return f.wait_for(eventually) == std::future_status::ready;
}

// Echo calls with payloads of their own: each must come back with its own.
void check_own_answers(node& n, const std::string& who, int count) {
  for (int i = 0; i < count; ++i) {
    auto payload = who + "-" + std::to_string(i);
    auto r = n.execute("echo", json{{"payload", payload}});
    REQUIRE_MESSAGE(r, why(r));
    REQUIRE((*r)["payload"] == payload);
  }
}

} // namespace

TEST_SUITE("node_calls") {

TEST_CASE_FIXTURE(calls_fixture, "a pool killed with requests in it: unavailable for its callers, not a hang") {
  auto n = start(small_tree("pool", 1));
  // One request on the worker, one in the pool's queue: only the pool holds
  // the second, and a killed actor answers nothing.
  auto on_worker = std::async(std::launch::async, [&] {
    return n->execute("fault_sleep", json{{"seconds", 2}});
  });
  REQUIRE(wait_until([&] { return pool_status(*n).value("busy", 0) == 1; }));
  auto queued = std::async(std::launch::async, [&] { return n->execute("echo", json{{"payload", "q"}}); });
  REQUIRE(wait_until([&] { return pool_status(*n).value("queue", 0) == 1; }));
  caf::anon_send_exit(n->target(), caf::exit_reason::kill);

  REQUIRE(ready(queued));
  auto q = queued.get();
  REQUIRE_FALSE(q);
  CHECK_MESSAGE(is(q.error(), errc::unavailable), describe(q.error()));
  REQUIRE(ready(on_worker));
  auto w = on_worker.get();
  REQUIRE_FALSE(w);  // the kill ends its call before the sleep does
  CHECK_MESSAGE(code_of(w.error()).has_value(), describe(w.error()));

  // The restarted pool serves again. The worker holding the sleep answers
  // its dead caller late (it is stopped with the pool's restart); no later
  // call may take that answer for its own.
  REQUIRE(wait_until([&] { return static_cast<bool>(n->execute("ping")); }));
  check_own_answers(*n, "after", 200);
}

TEST_CASE_FIXTURE(calls_fixture, "callers on many threads at once each get their own answer") {
  auto j = small_tree("pool", 1);
  j["root"]["children"][1]["size"] = 2;
  auto n = start(j);
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] { check_own_answers(*n, "t" + std::to_string(t), 150); });
  for (auto& t : threads)
    t.join();
  // Python errors are answers like any other and leave the callers reusable.
  for (int i = 0; i < 20; ++i) {
    auto r = n->execute("fault_raise", json{{"message", "no " + std::to_string(i)}});
    REQUIRE_FALSE(r);
    REQUIRE(is(r.error(), errc::python_error));
    REQUIRE(python_error_of(r.error())->message == "no " + std::to_string(i));
    check_own_answers(*n, "r" + std::to_string(i), 2);
  }
}

TEST_CASE_FIXTURE(calls_fixture, "stop with calls in flight answers every one") {
  auto n = start(small_tree("pool", 1));
  std::vector<std::future<caf::expected<json>>> calls;
  for (int i = 0; i < 4; ++i)
    calls.push_back(std::async(std::launch::async, [&] {
      return n->execute("fault_sleep", json{{"seconds", 0.5}});
    }));
  REQUIRE(wait_until([&] {
    auto p = pool_status(*n);
    return p.value("busy", 0) + p.value("queue", 0) == 4;
  }));
  n->stop();
  for (auto& c : calls) {
    REQUIRE(ready(c));
    auto r = c.get();
    if (!r)
      CHECK_MESSAGE(code_of(r.error()).has_value(), describe(r.error()));
  }
  auto after = n->execute("ping");
  REQUIRE_FALSE(after);
  CHECK(is(after.error(), errc::shutting_down));
}

TEST_CASE_FIXTURE(calls_fixture, "session calls answer through the same reused callers") {
  auto n = start(small_tree("pool", 1));
  REQUIRE_FALSE(n->create_session("a"));
  for (int i = 0; i < 50; ++i) {
    auto s = "s" + std::to_string(i);
    REQUIRE_FALSE(n->create_session(s));
    REQUIRE(is(n->create_session(s), errc::duplicate_session));
    REQUIRE_FALSE(n->end_session(s));
  }
  auto r = n->execute_in_session("a", "ping");
  REQUIRE_MESSAGE(r, why(r));
}

} // TEST_SUITE
