// The pool with real Python workers: concurrency, crashes by signal, a
// session's program across workers, Python exceptions, lazy start. The pool's
// own logic (affinity, idle order, overflow, queue, leases, drain, breaker)
// is tested with scripted workers in test_pool_scripted.cpp.
#include <doctest/doctest.h>

#include "support/pool_fixture.hpp"
#include "support/why.hpp"

#include <atomic>
#include <csignal>
#include <map>
#include <set>

using namespace dspex;
using namespace dspex::test;

namespace {

// Outcomes of many asynchronous requests, recorded by client actors.
struct ledger {
  std::mutex mx;
  std::map<std::string, int> answers;  // request key -> times answered
  std::map<std::string, std::string> errors;
  std::atomic<int> total{0};

  void record(const std::string& key, const caf::error* err) {
    std::lock_guard<std::mutex> g(mx);
    ++answers[key];
    if (err)
      errors[key] = describe(*err);
    ++total;
  }
};

// A client actor that runs `n` requests one after another in `session`.
void session_client(caf::event_based_actor* self, caf::actor pool, std::string session, int n,
                    ledger* out, int i = 0) {
  if (i == n)
    return;
  auto key = session + "#" + std::to_string(i);
  auto req = make_command("echo", json{{"payload", key}}, session, 0ms);
  self->request(pool, std::chrono::seconds(60), exec_atom::value, std::move(req))
    .then(
      [=](json& r) {
        out->record(r["payload"] == key ? key : key + "!mismatch", nullptr);
        session_client(self, pool, session, n, out, i + 1);
      },
      [=](caf::error& e) {
        out->record(key, &e);
        session_client(self, pool, session, n, out, i + 1);
      });
}

pid_t pid_of(actor_fixture& f, const caf::actor& target, std::optional<std::string> session = {}) {
  auto r = f.exec(target, "ping", json::object(), 0ms, std::move(session));
  REQUIRE(r);
  return (*r)["pid"].get<pid_t>();
}

} // namespace

TEST_SUITE("pool") {

TEST_CASE_FIXTURE(pool_fixture, "64 concurrent sessions on 4 workers: every request answered exactly once") {
  REQUIRE_FALSE(start(test_pool_config(4)));
  REQUIRE_FALSE(await_pool_ready());
  auto st = status();
  CHECK(st["workers"] == 4);
  CHECK(st["ready"] == true);
  ledger led;
  constexpr int sessions = 64, per_session = 10;
  for (int s = 0; s < sessions; ++s)
    sys.spawn(session_client, pool(), "s" + std::to_string(s), per_session, &led, 0);
  REQUIRE(wait_until([&] { return led.total.load() >= sessions * per_session; }, 60s));
  std::lock_guard<std::mutex> g(led.mx);
  CHECK(led.answers.size() == sessions * per_session);
  for (auto& [k, n] : led.answers) {
    CHECK_MESSAGE(n == 1, k);
    CHECK_MESSAGE(k.find("!mismatch") == std::string::npos, k);
  }
  CHECK(led.errors.empty());
  CHECK(status()["completed"] == sessions * per_session);
}

TEST_CASE_FIXTURE(pool_fixture, "SIGKILL a worker while it serves: its caller hears worker_crashed, others are fine, the pool refills") {
  REQUIRE_FALSE(start(test_pool_config(2)));
  REQUIRE_FALSE(await_pool_ready());
  // Lease one worker to learn its pid, give it back, then hang it.
  caf::actor victim;
  self->request(pool(), 10s, checkout_atom::value, std::optional<std::string>{})
    .receive([&](caf::actor& w) { victim = w; }, [&](caf::error& e) { FAIL(describe(e)); });
  auto pid = stats(victim)["os_pid"].get<pid_t>();
  self->send(pool(), checkin_atom::value, victim, true);
  std::thread killer([pid] {
    std::this_thread::sleep_for(300ms);
    ::kill(pid, SIGKILL);
  });
  // lifo: the worker just checked in serves the next request.
  auto hung = exec(pool(), "fault_hang");
  killer.join();
  REQUIRE_FALSE(hung);
  CHECK(is(hung.error(), errc::worker_crashed));
  CHECK(exec(pool(), "ping"));
  // The caller hears before the pool's down message: wait for the pool.
  REQUIRE(wait_until([&] {
    auto st = status();
    return st["workers"] == 2 && st["restarts"] == 1;
  }));
  CHECK(status()["errors"]["worker_crashed"] == 1);
}

TEST_CASE_FIXTURE(pool_fixture, "a session's program survives the death of its worker") {
  REQUIRE_FALSE(start(test_pool_config(1)));
  REQUIRE_FALSE(await_pool_ready());
  std::optional<std::string> s{"sess"};
  REQUIRE(exec(pool(), "configure_lm", json{{"provider", "mock"}}));
  auto created = exec(pool(), "create_program", json{{"signature", "question -> answer"}}, 0ms, s);
  REQUIRE(created);
  auto prog = (*created)["program_id"].get<std::string>();
  auto first = exec(pool(), "execute_program",
                    json{{"program_id", prog}, {"inputs", {{"question", "why?"}}}}, 0ms, s);
  REQUIRE(first);
  auto pid = pid_of(*this, pool(), s);
  ::kill(pid, SIGKILL);
  REQUIRE(wait_until([&] {
    auto st = status();
    return st["restarts"] == 1 && st["workers"] == 1;
  }));
  auto again = exec(pool(), "execute_program",
                    json{{"program_id", prog}, {"inputs", {{"question", "why?"}}}}, 0ms, s);
  REQUIRE_MESSAGE(again, why(again));
  CHECK((*again)["outputs"] == (*first)["outputs"]);
  CHECK(pid_of(*this, pool(), s) != pid);
}

TEST_CASE_FIXTURE(pool_fixture, "Python exceptions in a row are answers: the worker stays") {
  // (Before issue 10 three of them replaced the worker.)
  REQUIRE_FALSE(start(test_pool_config(1)));
  REQUIRE_FALSE(await_pool_ready());
  auto before = pid_of(*this, pool());
  for (int i = 0; i < 5; ++i) {
    auto r = exec(pool(), "fault_raise", json{{"message", "boom"}});
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::python_error));
  }
  CHECK(pid_of(*this, pool()) == before);
  auto st = status();
  CHECK(st["errors"]["python_error"] == 5);
  CHECK(st["restarts"] == 0);
  CHECK(st["worker_list"][0]["consecutive_faults"] == 0);
}

TEST_CASE_FIXTURE(pool_fixture, "lazy pool starts workers on demand") {
  auto c = test_pool_config(2);
  c.lazy = true;
  REQUIRE_FALSE(start(c));
  REQUIRE_FALSE(await_pool_ready());
  CHECK(status()["workers"] == 0);
  CHECK(exec(pool(), "ping"));
  CHECK(status()["workers"] == 1);
}

} // TEST_SUITE

TEST_SUITE("pool") {

TEST_CASE_FIXTURE(pool_fixture, "a new LM configuration reaches every worker, not just the one that got configure_lm") {
  REQUIRE_FALSE(start(test_pool_config(2)));
  REQUIRE_FALSE(await_pool_ready());
  std::optional<std::string> s{"lm"};
  REQUIRE(exec(pool(), "create_program", json{{"id", "p"}, {"signature", "q -> a"}}, 0ms, s));
  auto run_on_both = [&](const std::string& expected) {
    // Two leases pin both workers; each executes the program.
    std::vector<caf::actor> leased;
    for (int i = 0; i < 2; ++i)
      self->request(pool(), 10s, checkout_atom::value, std::optional<std::string>{})
        .receive([&](caf::actor& w) { leased.push_back(w); }, [&](caf::error& e) { FAIL(describe(e)); });
    REQUIRE(leased.size() == 2);
    std::set<pid_t> pids;
    for (auto& w : leased) {
      pids.insert(pid_of(*this, w));
      self->send(pool(), checkin_atom::value, w, true);
    }
    CHECK(pids.size() == 2);
    for (int i = 0; i < 6; ++i) {
      auto r = exec(pool(), "execute_program", json{{"program_id", "p"}, {"inputs", {{"q", "x"}}}}, 0ms, s);
      REQUIRE_MESSAGE(r, why(r));
      CHECK((*r)["outputs"]["a"] == expected);
    }
  };
  REQUIRE(exec(pool(), "configure_lm", json{{"provider", "mock"}, {"responses", {{"a", "first"}}}}));
  run_on_both("first");
  REQUIRE(exec(pool(), "configure_lm", json{{"provider", "mock"}, {"responses", {{"a", "second"}}}}));
  run_on_both("second");
}

} // TEST_SUITE
