// Issue 10, with real Python workers: application errors are not worker
// faults; the pool replaces workers on purpose through the supervisor's API
// (terminate_child + restart_child), which spends no restart intensity;
// timeouts with a grace; the circuit breaker's whole cycle inside a pool.
#include <doctest/doctest.h>

#include "support/event_log.hpp"
#include "support/pool_fixture.hpp"
#include "support/request_tally.hpp"
#include "support/why.hpp"

#include <dspex/supervision/events.hpp>

#include <csignal>
#include <functional>
#include <set>

using namespace dspex;
using namespace dspex::test;
using supervision::event_kind;
using supervision::exit_class;
using supervision::supervision_event;

namespace {

// Open loop: one request every `every` (a load generator's pace, not a
// wait for anything), n in all; quits once all are answered.
caf::behavior paced_client(caf::event_based_actor* self, caf::actor pool, command_request req,
                           std::chrono::milliseconds every, int n, request_tally* out) {
  auto sent = std::make_shared<int>(0);
  auto answered = std::make_shared<int>(0);
  auto done = [self, answered, n] {
    if (++*answered == n)
      self->quit();
  };
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      self->request(pool, std::chrono::seconds(120), exec_atom::value, req)
        .then(
          [=](json& r) {
            out->ok(r);
            done();
          },
          [=](caf::error& e) {
            out->failed(e);
            done();
          });
      if (++*sent < n)
        self->delayed_send(self, every, tick_atom::value);
    },
  };
}

struct faults_fixture : pool_fixture {
  std::shared_ptr<event_log> events = std::make_shared<event_log>();
  event_log& log = *events;

  caf::error start_logged(pool_config c) {
    return start(std::move(c), {sys.spawn(event_sink, events)});
  }

  std::vector<caf::actor> workers() {
    std::vector<caf::actor> out;
    self->request(pool(), 10s, workers_atom::value)
      .receive([&](std::vector<caf::actor>& v) { out = std::move(v); }, [&](caf::error&) {});
    return out;
  }

  std::set<pid_t> worker_pids() {
    std::set<pid_t> out;
    // A worker listed by workers() may exit before it answers stats (one
    // the pool is replacing): stats() is then {} and os_pid null. It runs
    // no process, so it is none of the old ones. (A worker still starting
    // answers, with os_pid -1.)
    for (auto& w : workers())
      if (auto pid = stats(w)["os_pid"]; pid.is_number())
        out.insert(pid.get<pid_t>());
    return out;
  }

  pid_t pid_of(const caf::actor& target, std::optional<std::string> session = {}) {
    auto r = exec(target, "ping", json::object(), 0ms, std::move(session));
    REQUIRE_MESSAGE(r, why(r));
    return (*r)["pid"].get<pid_t>();
  }

  /// The handles the worker supervisor holds (root/pool_sup/workers).
  std::set<caf::actor> supervised_workers() {
    std::set<caf::actor> out;
    auto top = supervision::which_children(self, root);
    REQUIRE(top);
    auto pool_sup = top->at(0).handle;
    auto inner = supervision::which_children(self, pool_sup);
    REQUIRE(inner);
    for (auto& c : *inner)
      if (c.id == "workers") {
        auto ws = supervision::which_children(self, c.handle);
        REQUIRE(ws);
        for (auto& w : *ws)
          out.insert(w.handle);
      }
    return out;
  }

  caf::actor checkout(std::optional<std::string> session = {}) {
    caf::actor w;
    self->request(pool(), 30s, checkout_atom::value, std::move(session))
      .receive([&](caf::actor& x) { w = x; }, [&](caf::error& e) { FAIL(describe(e)); });
    return w;
  }

  /// No exit the supervisors did not ask for, and none of them gave up.
  void check_no_escalation() {
    CHECK_MESSAGE(log.count(event_kind::intensity_reached) == 0, log.dump());
    CHECK_MESSAGE(log.count(event_kind::supervisor_stopped) == 0, log.dump());
    CHECK_MESSAGE(log.count(event_kind::child_restarted) == 0, log.dump());
    CHECK_MESSAGE(log.exits(exit_class::crash) == 0, log.dump());
  }

  static std::uint64_t replaced(const json& st, const char* cause) {
    return st["replaced"][cause].get<std::uint64_t>();
  }
};

} // namespace

TEST_SUITE("pool faults") {

TEST_CASE_FIXTURE(faults_fixture, "2000 failing requests from 8 clients: every reply python_error, no worker restarted") {
  REQUIRE_FALSE(start_logged(test_pool_config(4)));
  REQUIRE_FALSE(await_pool_ready());
  auto pids = worker_pids();
  auto handles = supervised_workers();
  REQUIRE(pids.size() == 4);
  REQUIRE(handles.size() == 4);
  request_tally t;
  constexpr int clients = 8, per_client = 250;
  for (int c = 0; c < clients; ++c)
    sys.spawn(serial_client, pool(),
              std::function<command_request(int)>([](int i) {
                // A typo (UnknownCommand) and a handler that raises ValueError.
                return i % 2 ? make_command("pnig")
                             : make_command("fault_sleep", json{{"seconds", "soon"}});
              }),
              per_client, &t, 0);
  REQUIRE(wait_until([&] { return t.total.load() >= clients * per_client; }, 120s));
  CHECK_MESSAGE(t.get("python_error:UnknownCommand") == clients * per_client / 2, t.dump());
  CHECK_MESSAGE(t.get("python_error:ValueError") == clients * per_client / 2, t.dump());
  CHECK(worker_pids() == pids);
  CHECK(supervised_workers() == handles);
  auto st = status();
  CHECK(st["errors"]["python_error"] == clients * per_client);
  CHECK(st["crashes"] == 0);
  CHECK(st["restarts"] == 0);
  CHECK(st["circuit"] == "closed");
  for (auto& w : st["worker_list"])
    CHECK(w["consecutive_faults"] == 0);
  CHECK_MESSAGE(log.count(event_kind::child_exited) == 0, log.dump());
  check_no_escalation();
  CHECK(exec(pool(), "ping"));
}

TEST_CASE_FIXTURE(faults_fixture, "a hung endpoint: 20 timing-out requests per second for 15 s, pings still served") {
  auto c = test_pool_config(4);
  c.worker.timeout_grace = 100ms;
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto initial = worker_pids();
  request_tally storm, pings;
  constexpr int storm_n = 300, ping_n = 150;  // 15 s at 20/s and at 10/s
  sys.spawn(paced_client, pool(), make_command("fault_hang", json::object(), std::nullopt, 100ms),
            50ms, storm_n, &storm);
  sys.spawn(paced_client, pool(), make_command("ping"), 100ms, ping_n, &pings);
  REQUIRE(wait_until([&] { return storm.total.load() == storm_n && pings.total.load() == ping_n; },
                     180s));
  // Every hung request hears command_timeout at its deadline (at a worker,
  // or still queued when the deadline came); none is refused by the breaker.
  CHECK_MESSAGE(storm.get("command_timeout") == storm_n, storm.dump());
  MESSAGE("pings: " << pings.dump());
  CHECK_MESSAGE(pings.get("ok") >= ping_n * 9 / 10, pings.dump());
  auto right_after = exec(pool(), "ping");
  CHECK_MESSAGE(right_after, why(right_after));
  auto st = status();
  MESSAGE("replaced: " << st["replaced"].dump() << " crashes: " << st["crashes"]);
  CHECK(st["crashes"] == 0);
  CHECK(replaced(st, "timeout") >= 4);
  CHECK(st["circuit_opened"] == 0);
  CHECK(st["errors"].value("circuit_open", 0) == 0);
  // Replaced through terminate_child: exits the supervisor asked for. The
  // pool counts a replacement when it asks; the exit event of the last one
  // may still be on its way.
  auto asked = static_cast<int>(replaced(st, "timeout"));
  CHECK_MESSAGE(wait_until([&] { return log.exits(exit_class::shutdown) >= asked; }, 30s),
                log.dump());
  CHECK(log.exits(exit_class::killed) == 0);
  check_no_escalation();
  auto now = worker_pids();
  for (auto p : initial)
    CHECK(now.count(p) == 0);
}

TEST_CASE_FIXTURE(faults_fixture, "deliberate replacements spend no intensity: worker_intensity 1, five replaced in a row") {
  auto c = test_pool_config(1);
  c.worker_intensity = 1;
  c.worker.timeout_grace = 100ms;
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  std::set<pid_t> seen{pid_of(pool())};
  for (int i = 0; i < 5; ++i) {
    auto r = exec(pool(), "fault_hang", json::object(), 100ms);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::command_timeout));
    // The next request waits for the replacement (the old one is in its
    // grace, then replaced) and is served by a new process.
    auto p = pid_of(pool());
    CHECK(seen.count(p) == 0);
    seen.insert(p);
  }
  auto st = status();
  CHECK(replaced(st, "timeout") == 5);
  CHECK(st["crashes"] == 0);
  CHECK(st["restarts"] == 5);
  check_no_escalation();
  CHECK(log.exits(exit_class::shutdown) == 5);
}

TEST_CASE_FIXTURE(faults_fixture, "a late reply within the grace is discarded and the worker stays") {
  auto c = test_pool_config(1);
  c.worker.timeout_grace = 30s;  // generous: the late reply comes well within it
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto before = pid_of(pool());
  auto r = exec(pool(), "fault_sleep", json{{"seconds", 1.0}}, 100ms);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::command_timeout));
  // In its grace the worker takes no new work.
  CHECK(wait_until([&] { return status()["grace"] == 1; }));
  // This one waits for the late reply, then runs on the same worker.
  CHECK(pid_of(pool()) == before);
  auto st = status();
  CHECK(st["errors"]["command_timeout"] == 1);
  CHECK(st["errors"].value("protocol_error", 0) == 0);
  CHECK(st["restarts"] == 0);
  CHECK(st["grace"] == 0);
  CHECK(st["worker_list"][0]["consecutive_faults"] == 0);
  auto ws = workers();
  REQUIRE(ws.size() == 1);
  auto s = stats(ws[0]);
  CHECK(s["timeouts"] == 1);
  CHECK(s["late"] == 0);
  CHECK(s["health"] == "healthy");
  check_no_escalation();
  CHECK(log.count(event_kind::child_exited) == 0);
}

TEST_CASE_FIXTURE(faults_fixture, "the pool writes its requests into the worker's pipe itself; the grace still holds new work") {
  auto c = test_pool_config(1);
  c.worker.timeout_grace = 30s;
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto ws = workers();
  REQUIRE(ws.size() == 1);
  // A session's first request goes through the registry's prepare (the
  // worker actor may have to replay first); the warm ones after it do not.
  REQUIRE(exec(pool(), "echo", json::object(), 0ms, std::string("s")));
  const auto base = stats(ws[0])["port_sends"].get<std::uint64_t>();
  for (int i = 0; i < 10; ++i) {
    auto r = exec(pool(), "echo", json{{"i", i}}, 0ms, std::string("s"));
    REQUIRE(r);
    CHECK((*r)["payload"].is_null());
  }
  auto s = stats(ws[0]);
  CHECK(s["port_sends"].get<std::uint64_t>() == base + 10);
  CHECK(s["session_requests"].get<std::uint64_t>() >= 10);
  CHECK(s["direct_replies"].get<std::uint64_t>() >= 10);
  // Its deadline fires on the worker's own timer, armed by the port.
  auto r = exec(pool(), "fault_sleep", json{{"seconds", 1.0}}, 100ms);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::command_timeout));
  CHECK(stats(ws[0])["port_sends"].get<std::uint64_t>() == base + 11);
  // In the grace the worker actor holds what reaches it (here sent to it
  // directly) until the late reply; the port takes nothing meanwhile.
  auto held = exec(ws[0], "echo", json{{"payload", "held"}});
  REQUIRE(held);
  CHECK((*held)["payload"] == "held");
  CHECK(stats(ws[0])["port_sends"].get<std::uint64_t>() == base + 11);
  // After it, the pool's requests take the port again.
  REQUIRE(exec(pool(), "echo"));
  CHECK(stats(ws[0])["port_sends"].get<std::uint64_t>() == base + 12);
  check_no_escalation();
}

TEST_CASE_FIXTURE(actor_fixture, "a worker on its own: a late reply within the grace is discarded, new work waits for it") {
  auto c = test_worker_config();
  c.timeout_grace = 30s;
  auto w = spawn(c);
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "fault_sleep", json{{"seconds", 0.5}}, 100ms);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::command_timeout));
  auto p = exec(w, "ping");  // held during the grace, sent after the late reply
  REQUIRE_MESSAGE(p, why(p));
  auto s = stats(w);
  CHECK(s["timeouts"] == 1);
  CHECK(s["late"] == 0);
  CHECK(s["state"] == "ready");
}

TEST_CASE_FIXTURE(faults_fixture, "timeouts in a row, each answered late: max_consecutive_failures replaces the worker on purpose") {
  auto c = test_pool_config(1);
  c.max_consecutive_failures = 2;
  c.worker.timeout_grace = 30s;
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto before = pid_of(pool());
  for (int i = 0; i < 2; ++i) {
    // (Sent while the worker is in its grace, it would wait in the queue
    // and meet its 50 ms deadline there.)
    REQUIRE(wait_until([&] { return status()["idle"] == 1; }));
    auto r = exec(pool(), "fault_sleep", json{{"seconds", 0.3}}, 50ms);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::command_timeout));
  }
  CHECK(pid_of(pool()) != before);
  auto st = status();
  CHECK(replaced(st, "failures") == 1);
  CHECK(st["crashes"] == 0);
  check_no_escalation();
}

TEST_CASE_FIXTURE(faults_fixture, "a lease holder that dies mid-request: its worker is replaced on purpose") {
  auto c = test_pool_config(1);
  c.worker_intensity = 1;
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto before = pid_of(pool());
  auto p = pool();
  sys.spawn([p](caf::event_based_actor* a) {
    a->request(p, std::chrono::seconds(10), checkout_atom::value, std::optional<std::string>{})
      .then([a](caf::actor& w) {
        a->send(w, exec_atom::value, make_command("fault_sleep", json{{"seconds", 30}}));
        // Quit once the worker has the request in flight.
        a->request(w, std::chrono::seconds(10), stats_atom::value).then([a](json&) { a->quit(); });
      });
  });
  REQUIRE(wait_until([&] { return replaced(status(), "lease") == 1; }));
  CHECK(pid_of(pool()) != before);
  CHECK(wait_until([&] { return process_gone(before); }));
  CHECK(status()["crashes"] == 0);
  check_no_escalation();
}

TEST_CASE_FIXTURE(faults_fixture, "a worker that fails its health ping (SIGSTOP) is replaced on purpose") {
  auto c = test_pool_config(1);
  c.worker_intensity = 1;
  c.worker_idle_timeout = 100ms;
  c.worker.init_timeout = 3s;  // also the health ping's timeout
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());
  auto before = pid_of(pool());
  ::kill(before, SIGSTOP);
  REQUIRE(wait_until([&] { return replaced(status(), "health") == 1; }, 60s));
  CHECK(wait_until([&] { return process_gone(before); }));
  CHECK(pid_of(pool()) != before);
  auto st = status();
  CHECK(st["crashes"] == 0);
  CHECK(st["circuit"] == "closed");  // one failed ping: below the threshold
  check_no_escalation();
}

TEST_CASE_FIXTURE(faults_fixture, "the circuit breaker's whole cycle through a real pool, leases and a queued trial included") {
  // Real processes die; the breaker's time (open_for, the queue deadline)
  // moves by hand.
  auto c = with_manual_clock(test_pool_config(2));
  c.worker_intensity = 100;  // SIGKILLs open the breaker, not the supervisor
  c.affinity = affinity_mode::strict;
  c.checkout_timeout = 500ms;
  c.circuit.failure_threshold = 2;
  c.circuit.window = 60s;
  c.circuit.open_for = 1500ms;
  c.circuit.half_open_trials = 1;
  REQUIRE_FALSE(start_logged(c));
  REQUIRE_FALSE(await_pool_ready());

  // Session "s" belongs to worker X, which stays leased throughout: a trial
  // in session "s" then has to wait in the queue (strict affinity).
  std::optional<std::string> s{"s"};
  auto x_pid = pid_of(pool(), s);
  auto x = checkout(s);
  REQUIRE(stats(x)["os_pid"] == x_pid);
  std::uint64_t crashes = 0;
  auto other_pid = [&] {
    for (auto& w : workers())
      if (w != x)
        return stats(w)["os_pid"].get<pid_t>();
    return pid_t{-1};
  };
  // Two SIGKILLs of the other worker: worker faults that open the circuit.
  auto open_it = [&](int opened) {
    for (int i = 0; i < 2; ++i) {
      REQUIRE(wait_until([&] { return status()["workers"] == 2; }));
      auto y = other_pid();
      REQUIRE(y > 0);
      ::kill(y, SIGKILL);
      ++crashes;
      json st;
      REQUIRE(wait_until([&] {
        st = status();
        return st["crashes"] == crashes;
      }));
      if (i == 1) {
        CHECK(st["circuit_opened"] == opened);
        CHECK(st["circuit"] == "open");
      }
    }
  };
  auto await_half_open = [&] {
    CHECK(status()["circuit"] == "open");
    advance(c.circuit.open_for);
    REQUIRE(wait_until([&] {
      auto st = status();
      return st["circuit"] == "half_open" && st["workers"] == 2;
    }));
  };

  CHECK(status()["circuit"] == "closed");
  open_it(1);
  await_half_open();
  // A trial that times out in the queue gives its slot back...
  auto queued = exec_async(make_command("ping", json::object(), s));
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }));
  CHECK(status()["circuit_trials"] == 1);
  advance(c.checkout_timeout);
  REQUIRE(queued->wait());
  CHECK(is(queued->get(), errc::checkout_timeout));
  auto st = status();
  CHECK(st["circuit"] == "half_open");
  CHECK(st["circuit_trials"] == 0);
  // ... so the next request is a trial; it is answered: closed.
  CHECK(exec(pool(), "ping"));
  CHECK(status()["circuit"] == "closed");

  // A trial whose worker dies: open again.
  open_it(2);
  await_half_open();
  auto died = exec(pool(), "fault_exit", json{{"code", 1}});
  REQUIRE_FALSE(died);
  CHECK(is(died.error(), errc::worker_crashed));
  ++crashes;
  REQUIRE(wait_until([&] { return status()["circuit_opened"] == 3; }));

  // A lease as the trial, checked in ok: closed.
  await_half_open();
  auto lease = checkout();
  CHECK(lease != x);
  CHECK(status()["circuit_trials"] == 1);
  self->send(pool(), checkin_atom::value, lease, true);
  REQUIRE(wait_until([&] { return status()["circuit"] == "closed"; }));

  // A lease as the trial, checked in as failed: open again.
  open_it(4);
  await_half_open();
  lease = checkout();
  self->send(pool(), checkin_atom::value, lease, false);
  REQUIRE(wait_until([&] { return status()["circuit_opened"] == 5; }));

  // And once workers answer, it always closes again.
  await_half_open();
  CHECK(exec(pool(), "ping"));
  CHECK(status()["circuit"] == "closed");
  self->send(pool(), checkin_atom::value, x, true);
  CHECK(log.count(event_kind::intensity_reached) == 0);
}

} // TEST_SUITE

