// worker.max_concurrency with real Python workers: a worker serves N
// requests at once (request threads in Python, out-of-order replies), state
// commands still apply before the requests that follow them, and a worker
// SIGKILLed with N requests in flight fails every one of the N callers with
// a classified error and is replaced.
#include <doctest/doctest.h>

#include <dspex/actors/node/error.hpp>

#include "support/pool_fixture.hpp"
#include "support/why.hpp"

#include <condition_variable>
#include <csignal>
#include <set>

using namespace dspex;
using namespace dspex::test;

namespace {

// The outcomes of requests sent at once, each from its own actor.
struct outcomes {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<caf::expected<json>> got;

  void add(caf::expected<json> r) {
    {
      std::lock_guard<std::mutex> g(mx);
      got.push_back(std::move(r));
    }
    cv.notify_all();
  }
  bool wait_for(std::size_t n, std::chrono::seconds limit) {
    std::unique_lock<std::mutex> g(mx);
    return cv.wait_for(g, limit, [&] { return got.size() >= n; });
  }
};

void send_async(caf::actor_system& sys, caf::actor target, command_request req,
                std::shared_ptr<outcomes> out) {
  sys.spawn([target, req, out](caf::event_based_actor* self) -> caf::behavior {
    self->request(target, std::chrono::seconds(60), exec_atom::value, req)
      .then(
        [self, out](json& j) {
          out->add(std::move(j));
          self->quit();
        },
        [self, out](caf::error& e) {
          out->add(std::move(e));
          self->quit();
        });
    return {[](ready_atom) {}};
  });
}

struct concurrency_fixture : pool_fixture {
  static pool_config config(std::size_t size, std::size_t n) {
    auto c = test_pool_config(size);
    c.worker.max_concurrency = n;
    return c;
  }
};

} // namespace

TEST_SUITE("concurrency") {

TEST_CASE_FIXTURE(concurrency_fixture, "max_concurrency N: one worker serves N requests at once") {
  REQUIRE(!start(config(1, 4)));
  REQUIRE(!await_pool_ready());
  // Four requests that can only all return when all four are inside Python
  // at the same time (one at a time, the first would time out waiting).
  auto out = std::make_shared<outcomes>();
  for (int i = 0; i < 4; ++i)
    send_async(sys, pool(),
               make_command("fault_gather", json{{"parties", 4}, {"timeout_s", 20}, {"name", "four"}}),
               out);
  REQUIRE(out->wait_for(4, std::chrono::seconds(60)));
  std::set<std::string> threads;
  for (auto& r : out->got) {
    REQUIRE_MESSAGE(r, why(r));
    threads.insert((*r)["thread"].get<std::string>());
  }
  CHECK(threads.size() == 4);
  auto st = status();
  CHECK(st["completed"] == 4);
  CHECK(st["in_flight"] == 0);
  CHECK(st["idle"] == 1);
}

TEST_CASE_FIXTURE(concurrency_fixture, "max_concurrency 1 keeps one request at a time on a worker") {
  REQUIRE(!start(config(1, 1)));
  REQUIRE(!await_pool_ready());
  auto out = std::make_shared<outcomes>();
  for (int i = 0; i < 2; ++i)
    send_async(sys, pool(),
               make_command("fault_gather", json{{"parties", 2}, {"timeout_s", 0.5}, {"name", "two"}}),
               out);
  REQUIRE(out->wait_for(2, std::chrono::seconds(60)));
  // The first waited alone and gave up; the second then waited alone too.
  for (auto& r : out->got) {
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::python_error));
  }
}

TEST_CASE_FIXTURE(concurrency_fixture, "state commands apply before the requests read after them") {
  REQUIRE(!start(config(1, 8)));
  REQUIRE(!await_pool_ready());
  for (int round = 0; round < 5; ++round) {
    auto model = "m" + std::to_string(round);
    auto sid = std::string("s-order");
    REQUIRE(exec(pool(), "configure_lm", json{{"provider", "mock"}, {"model", model}}, 0ms, sid));
    REQUIRE(exec(pool(), "create_program",
                 json{{"id", "p" + std::to_string(round)}, {"signature", "q -> a"}}, 0ms, sid));
    auto r = exec(pool(), "execute_program",
                  json{{"program_id", "p" + std::to_string(round)}, {"inputs", {{"q", "x"}}}}, 0ms,
                  sid);
    REQUIRE_MESSAGE(r, why(r));
    CHECK((*r)["lm"] == "mock/" + model);
  }
}

TEST_CASE_FIXTURE(concurrency_fixture, "a SIGKILLed worker with N requests in flight fails all N callers") {
  REQUIRE(!start(config(1, 4)));
  REQUIRE(!await_pool_ready());
  caf::actor worker;
  self->request(pool(), 30s, workers_atom::value)
    .receive([&](std::vector<caf::actor>& ws) { worker = ws.at(0); },
             [&](caf::error& e) { FAIL(describe(e)); });
  auto pid = stats(worker)["os_pid"].get<pid_t>();
  REQUIRE(pid > 0);
  auto out = std::make_shared<outcomes>();
  for (int i = 0; i < 4; ++i)
    send_async(sys, pool(), make_command("fault_sleep", json{{"seconds", 30}}), out);
  // All four delegated to the one worker and sent to Python.
  REQUIRE(wait_until([&] { return stats(worker).value("inflight", 0) == 4; }, 30s));
  CHECK(status()["in_flight"] == 4);
  REQUIRE(::kill(pid, SIGKILL) == 0);
  REQUIRE(out->wait_for(4, std::chrono::seconds(30)));
  for (auto& r : out->got) {
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::worker_crashed));
  }
  // Replaced: the pool serves again, with room for N on the new worker.
  REQUIRE(wait_until([&] { return static_cast<bool>(exec(pool(), "ping")); }, 30s));
  auto again = std::make_shared<outcomes>();
  for (int i = 0; i < 4; ++i)
    send_async(sys, pool(),
               make_command("fault_gather", json{{"parties", 4}, {"timeout_s", 20}, {"name", "after"}}),
               again);
  REQUIRE(again->wait_for(4, std::chrono::seconds(60)));
  for (auto& r : again->got)
    CHECK_MESSAGE(r, why(r));
  CHECK(status()["crashes"] == 1);
}

TEST_CASE_FIXTURE(concurrency_fixture, "a lease waits for a worker with nothing in flight") {
  REQUIRE(!start(config(1, 4)));
  REQUIRE(!await_pool_ready());
  auto out = std::make_shared<outcomes>();
  send_async(sys, pool(), make_command("fault_sleep", json{{"seconds", 0.3}}), out);
  REQUIRE(wait_until([&] { return status()["in_flight"] == 1; }, 30s));
  caf::actor leased;
  self->request(pool(), 30s, checkout_atom::value, std::optional<std::string>{})
    .receive([&](caf::actor& w) { leased = w; }, [&](caf::error& e) { FAIL(describe(e)); });
  // The lease came only once the request was answered.
  auto st = status();
  CHECK(st["completed"] == 1);
  CHECK(st["leased"] == 1);
  CHECK(out->wait_for(1, std::chrono::seconds(30)));
  // Meanwhile a request waits (the leased worker takes no pooled work).
  auto queued = std::make_shared<outcomes>();
  send_async(sys, pool(), make_command("ping"), queued);
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }, 30s));
  self->send(pool(), checkin_atom::value, leased, true);
  REQUIRE(queued->wait_for(1, std::chrono::seconds(30)));
  CHECK(queued->got[0]);
}

} // TEST_SUITE
