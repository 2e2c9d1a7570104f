// The pool's logic with scripted C++ workers (support/scripted_worker.hpp):
// affinity, idle order, overflow, the wait queue, leases, drain, the
// circuit breaker and idle pings, each call scripted and every surprise a
// failure; timers on the pool's manual clock (pool_config::clk). No
// Python: test_pool.cpp keeps the integration tests with real workers.
#include <doctest/doctest.h>

#include "support/pool_fixture.hpp"
#include "support/scripted_worker.hpp"
#include "support/why.hpp"

using namespace dspex;
using namespace dspex::test;

namespace {

using box = promise_box<std::string>;

struct scripted_pool_fixture : pool_fixture {
  std::shared_ptr<worker_script> script = std::make_shared<worker_script>();

  pool_config scripted_config(std::size_t size) {
    pool_config c;
    c.size = size;
    c.checkout_timeout = 10s;
    c.worker.request_timeout = 30s;
    c.worker_intensity = 100;  // crash tests restart the same worker often
    c.start_worker = script->starter();
    return c;
  }

  void start_scripted(pool_config c) {
    REQUIRE_FALSE(start(std::move(c)));
    REQUIRE_FALSE(await_pool_ready());
  }

  /// Which worker served a pooled request (scripted replies name it).
  std::string served(const caf::expected<json>& r) {
    REQUIRE_MESSAGE(r, why(r));
    return (*r)["worker"].get<std::string>();
  }

  caf::actor checkout(std::optional<std::string> session = {}) {
    caf::actor w;
    self->request(pool(), 10s, checkout_atom::value, std::move(session))
      .receive([&](caf::actor& x) { w = x; }, [&](caf::error& e) { FAIL(describe(e)); });
    return w;
  }

  // What `self` sends next reaches the pool after the checkin (one sender,
  // one order), so no wait is needed.
  void checkin(const caf::actor& w, bool ok = true) {
    self->send(pool(), checkin_atom::value, w, ok);
  }

  /// Sends a request from a helper actor; its outcome lands in the box
  /// ("ok:<worker>" or the error's description).
  std::shared_ptr<box> send_async(command_request req) {
    auto out = std::make_shared<box>();
    auto p = pool();
    sys.spawn([p, req, out](caf::event_based_actor* a) {
      a->request(p, std::chrono::seconds(60), exec_atom::value, req)
        .then([out](json& j) { out->set("ok:" + j.value("worker", std::string{})); },
              [out](caf::error& e) { out->set(describe(e)); });
    });
    return out;
  }

  /// A call that worker `worker` holds until the test releases it.
  struct held_call {
    std::size_t n;              // its expectation, for worker_script::release
    std::shared_ptr<box> answer;
  };

  /// Scripts `command` to be held on `worker`, sends it through the pool
  /// and waits until it arrived there.
  held_call hold(const std::string& worker, const std::string& command = "work",
                 std::optional<std::string> session = {}) {
    auto n = script->expect(command, scripted_reply::held(), worker, session);
    auto answer = send_async(make_command(command, json::object(), session));
    REQUIRE(wait_until([&] { return script->arrived(n); }));
    return {n, answer};
  }

  ~scripted_pool_fixture() {
    for (auto& s : script->surprises())
      CHECK_MESSAGE(false, "surprise: " << s);
    for (auto& u : script->unmet())
      CHECK_MESSAGE(false, "expected but never called: " << u);
  }
};

} // namespace

TEST_SUITE("pool_scripted") {

TEST_CASE_FIXTURE(scripted_pool_fixture, "the seam: every worker of the pool is a scripted one") {
  start_scripted(scripted_config(3));
  CHECK(status()["workers"] == 3);
  CHECK(script->alive() == 3);
  for (auto id : {"w1", "w2", "w3"})
    CHECK(script->starts(id) == 1);
  script->expect("ping");
  CHECK(exec(pool(), "ping"));
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a surprise is caught: an unscripted command fails the call") {
  start_scripted(scripted_config(1));
  auto r = exec(pool(), "nobody_expects_this");
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::protocol_error));
  auto s = script->surprises();
  REQUIRE(s.size() == 1);
  CHECK(s[0].find("nobody_expects_this") != std::string::npos);
  // The worker was freed all the same.
  REQUIRE(wait_until([&] { return status()["idle"] == 1; }));
  // This test expects its surprise: clear the record so the fixture passes.
  script = std::make_shared<worker_script>();
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "affinity hint: a session returns to its worker although lifo would pick another") {
  start_scripted(scripted_config(2));
  // Bind "alpha" to one worker through a lease (affinity counts for leases),
  // then make the other one the lifo choice by checking it in last.
  auto other = checkout();
  auto home = checkout(std::string("alpha"));
  auto home_id = script->id_of(home), other_id = script->id_of(other);
  REQUIRE(home_id != other_id);
  checkin(home);
  checkin(other);
  REQUIRE(wait_until([&] { return status()["idle"] == 2; }));
  script->expect("anon", scripted_reply::ok(), other_id);  // lifo: checked in last
  script->expect("work", scripted_reply::ok(), home_id, std::string("alpha"));
  script->expect("anon", scripted_reply::ok(), home_id);
  CHECK(served(exec(pool(), "anon")) == other_id);
  CHECK(served(exec(pool(), "work", json::object(), 0ms, std::string("alpha"))) == home_id);
  // After alpha's request its worker is the lifo choice; anonymous traffic
  // goes there, and alpha still comes home.
  CHECK(served(exec(pool(), "anon")) == home_id);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "affinity hint: a session whose worker is busy takes another") {
  start_scripted(scripted_config(2));
  auto other = checkout();
  auto home = checkout(std::string("s"));
  auto home_id = script->id_of(home), other_id = script->id_of(other);
  checkin(other);
  // home stays leased: s must not wait for it under hint.
  script->expect("work", scripted_reply::ok(), other_id, std::string("s"));
  CHECK(served(exec(pool(), "work", json::object(), 0ms, std::string("s"))) == other_id);
  checkin(home);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "strict affinity: a session waits for its busy worker while another is idle") {
  auto c = scripted_config(2);
  c.affinity = affinity_mode::strict;
  start_scripted(c);
  auto other = checkout();
  auto home = checkout(std::string("s"));
  auto home_id = script->id_of(home), other_id = script->id_of(other);
  checkin(other);
  checkin(home);
  REQUIRE(wait_until([&] { return status()["idle"] == 2; }));
  auto first = hold(home_id, "work", std::string("s"));
  script->expect("work", scripted_reply::ok(), home_id, std::string("s"));
  auto second = send_async(make_command("work", json::object(), std::string("s")));
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }));
  CHECK(status()["idle"] == 1);  // the other worker idles meanwhile
  script->release(first.n);
  REQUIRE(first.answer->wait());
  REQUIRE(second->wait());
  CHECK(first.answer->get() == "ok:" + home_id);
  CHECK(second->get() == "ok:" + home_id);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "lifo: the worker checked in last serves next, again and again") {
  start_scripted(scripted_config(3));
  auto a = checkout(), b = checkout(), c = checkout();
  checkin(c);
  checkin(a);
  checkin(b);
  REQUIRE(wait_until([&] { return status()["idle"] == 3; }));
  auto last = script->id_of(b);
  for (int i = 0; i < 4; ++i)
    script->expect("ping", scripted_reply::ok(), last);
  for (int i = 0; i < 4; ++i)
    CHECK(served(exec(pool(), "ping")) == last);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "fifo: workers take turns in the order they became idle") {
  auto cfg = scripted_config(3);
  cfg.strategy = idle_order::fifo;
  start_scripted(cfg);
  auto a = checkout(), b = checkout(), c = checkout();
  checkin(c);
  checkin(a);
  checkin(b);
  REQUIRE(wait_until([&] { return status()["idle"] == 3; }));
  std::vector<std::string> order{script->id_of(c), script->id_of(a), script->id_of(b)};
  for (int round = 0; round < 2; ++round)
    for (auto& id : order)
      script->expect("ping", scripted_reply::ok(), id);
  for (int round = 0; round < 2; ++round)
    for (auto& id : order)
      CHECK(served(exec(pool(), "ping")) == id);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "overflow: a worker starts for the queue and stops once idle") {
  auto c = scripted_config(1);
  c.max_overflow = 1;
  start_scripted(c);
  auto slow = hold("w1");
  script->expect("work", scripted_reply::ok(), "overflow1");
  auto extra = send_async(make_command("work"));
  REQUIRE(extra->wait());
  CHECK(extra->get() == "ok:overflow1");
  CHECK(script->starts("overflow1") == 1);
  // Idle with nobody waiting: the overflow worker is stopped, not kept.
  REQUIRE(wait_until([&] { return status()["overflow"] == 0 && script->alive() == 1; }));
  CHECK(status()["workers"] == 1);
  CHECK(status()["crashes"] == 0);
  script->release(slow.n);
  REQUIRE(slow.answer->wait());
  CHECK(slow.answer->get() == "ok:w1");
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "overflow is bounded: beyond max_overflow requests queue") {
  auto c = scripted_config(1);
  c.max_overflow = 1;
  start_scripted(c);
  auto h1 = hold("w1");
  auto h2 = hold("overflow1");
  script->expect("work", scripted_reply::ok());
  auto third = send_async(make_command("work"));
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }));
  CHECK(script->alive() == 2);
  script->release(h2.n);
  REQUIRE(third->wait());
  CHECK(third->get() == "ok:overflow1");  // the freed worker takes the queue first
  script->release(h1.n);
  REQUIRE(h1.answer->wait());
  REQUIRE(h2.answer->wait());
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a full wait queue answers pool_saturated at once; the queued call is served") {
  auto c = scripted_config(1);
  c.max_queue = 1;
  start_scripted(c);
  auto slow = hold("w1");
  script->expect("queued", scripted_reply::ok(), "w1");
  auto queued = send_async(make_command("queued"));
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }));
  auto r = exec(pool(), "refused");  // never reaches a worker: no expectation
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::pool_saturated));
  CHECK(status()["errors"]["pool_saturated"] == 1);
  script->release(slow.n);
  REQUIRE(queued->wait());
  CHECK(queued->get() == "ok:w1");
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "checkout timeout when no worker frees up in time") {
  auto c = with_manual_clock(scripted_config(1));
  c.checkout_timeout = 5s;  // on the pool's manual clock
  start_scripted(c);
  auto slow = hold("w1");
  auto late = exec_async(make_command("late"));
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }));
  advance(4s);
  CHECK(status()["queue"] == 1);  // not yet
  advance(1s);
  REQUIRE(late->wait());
  CHECK(is(late->get(), errc::checkout_timeout));
  CHECK(status()["errors"]["checkout_timeout"] == 1);
  CHECK(status()["queue"] == 0);
  script->release(slow.n);
  REQUIRE(slow.answer->wait());
  CHECK(slow.answer->get() == "ok:w1");
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a lease: several calls on one worker, nothing pooled meanwhile, then checkin") {
  start_scripted(scripted_config(1));
  auto w = checkout(std::string("s"));
  auto id = script->id_of(w);
  script->expect("a", scripted_reply::ok(), id);
  script->expect("b", scripted_reply::ok(), id);
  CHECK(served(exec(w, "a")) == id);
  CHECK(served(exec(w, "b")) == id);
  CHECK(status()["leased"] == 1);
  // The only worker is leased: a pooled request waits for the checkin.
  script->expect("after", scripted_reply::ok(), id);
  auto b = send_async(make_command("after"));
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }));
  self->send(pool(), checkin_atom::value, w, true);
  REQUIRE(b->wait());
  CHECK(b->get() == "ok:" + id);
  CHECK(status()["leased"] == 0);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a dead lease holder with nothing in flight gives its worker back as it is") {
  start_scripted(scripted_config(1));
  auto p = pool();
  sys.spawn([p](caf::event_based_actor* a) {
    a->request(p, std::chrono::seconds(10), checkout_atom::value, std::optional<std::string>{})
      .then([a](caf::actor&) { a->quit(); });
  });
  REQUIRE(wait_until([&] { return status()["checkouts"] == 1 && status()["idle"] == 1; }));
  script->expect("ping", scripted_reply::ok(), "w1");
  CHECK(served(exec(pool(), "ping")) == "w1");
  CHECK(script->starts("w1") == 1);  // not replaced
  CHECK(status()["replaced"]["lease"] == 0);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a lease holder that dies with a request in flight: its worker is replaced, not counted as a crash") {
  start_scripted(scripted_config(1));
  auto stuck = script->expect("work", scripted_reply::held(), "w1");
  auto p = pool();
  sys.spawn([p](caf::event_based_actor* a) {
    a->request(p, std::chrono::seconds(10), checkout_atom::value, std::optional<std::string>{})
      .then([a](caf::actor& w) {
        a->send(w, exec_atom::value, make_command("work"));
        a->quit();
      });
  });
  REQUIRE(wait_until([&] { return script->arrived(stuck); }));
  REQUIRE(wait_until([&] { return script->starts("w1") == 2 && status()["idle"] == 1; }));
  auto st = status();
  CHECK(st["replaced"]["lease"] == 1);
  CHECK(st["crashes"] == 0);
  CHECK(script->alive() == 1);
  script->expect("ping", scripted_reply::ok(), "w1");
  CHECK(served(exec(pool(), "ping")) == "w1");
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "drain: queued callers get shutting_down, the one in flight finishes, then drain answers") {
  start_scripted(scripted_config(1));
  auto slow = hold("w1");
  auto queued = send_async(make_command("queued"));
  REQUIRE(wait_until([&] { return status()["queue"] == 1; }));
  auto drained = std::make_shared<promise_box<bool>>();
  auto p = pool();
  sys.spawn([p, drained](caf::event_based_actor* a) {
    a->request(p, std::chrono::seconds(60), drain_atom::value)
      .then([drained] { drained->set(true); }, [drained](caf::error&) { drained->set(false); });
  });
  REQUIRE(queued->wait());
  CHECK(queued->get().find("shutting_down") == 0);
  auto r = exec(pool(), "new");
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::shutting_down));
  REQUIRE(wait_until([&] { return status()["draining"] == true; }));
  CHECK(drained->count() == 0);  // something is in flight still
  script->release(slow.n);
  REQUIRE(slow.answer->wait());
  CHECK(slow.answer->get() == "ok:w1");
  REQUIRE(drained->wait());
  CHECK(drained->get());
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "Python exceptions are answers: no fault, no breaker, no replacement") {
  auto c = scripted_config(1);
  c.circuit.failure_threshold = 1;
  start_scripted(c);
  for (int i = 0; i < 3; ++i)
    script->expect("bad", scripted_reply::raise("boom"), "w1");
  for (int i = 0; i < 3; ++i) {
    auto r = exec(pool(), "bad");
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::python_error));
  }
  auto st = status();
  CHECK(st["errors"]["python_error"] == 3);
  CHECK(st["circuit"] == "closed");
  CHECK(st["restarts"] == 0);
  CHECK(script->starts("w1") == 1);
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "breaker: crashes open it, it fails fast, half-opens, a failed trial reopens it, an answered one closes it") {
  auto c = with_manual_clock(scripted_config(1));
  c.circuit.failure_threshold = 2;
  c.circuit.window = 60s;
  c.circuit.open_for = 5s;  // on the pool's manual clock
  start_scripted(c);
  for (int i = 1; i <= 2; ++i) {
    CHECK(status()["circuit"] == "closed");
    script->expect("work", scripted_reply::die(), "w1");
    auto r = exec(pool(), "work");
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::worker_crashed));
    // The supervisor restarts it; the pool counts the crash.
    REQUIRE(wait_until([&] {
      auto st = status();
      return st["crashes"] == i && st["workers"] == 1 && script->starts("w1") == i + 1;
    }));
  }
  CHECK(status()["circuit"] == "open");
  auto fast = exec(pool(), "work");  // no expectation: it must not reach a worker
  REQUIRE_FALSE(fast);
  CHECK(is(fast.error(), errc::circuit_open));
  advance(4s);
  CHECK(status()["circuit"] == "open");
  advance(1s);
  CHECK(status()["circuit"] == "half_open");
  // A trial that crashes opens it again.
  script->expect("trial", scripted_reply::die(), "w1");
  auto t1 = exec(pool(), "trial");
  REQUIRE_FALSE(t1);
  CHECK(is(t1.error(), errc::worker_crashed));
  REQUIRE(wait_until([&] { return status()["circuit_opened"] == 2; }));
  REQUIRE(wait_until([&] { return status()["workers"] == 1 && script->starts("w1") == 4; }));
  CHECK(status()["circuit"] == "open");
  advance(5s);
  CHECK(status()["circuit"] == "half_open");
  // An answered trial closes it.
  script->expect("trial", scripted_reply::ok(), "w1");
  CHECK(served(exec(pool(), "trial")) == "w1");
  CHECK(status()["circuit"] == "closed");
  script->expect("after", scripted_reply::ok(), "w1");
  CHECK(exec(pool(), "after"));
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "idle pings on the pool's clock: a worker is pinged once idle for worker_idle_timeout") {
  auto c = with_manual_clock(scripted_config(2));
  c.worker_idle_timeout = 10s;
  start_scripted(c);
  advance(6s);  // a ping now would be a surprise
  script->expect("work");
  auto recent = served(exec(pool(), "work"));
  auto other = recent == "w1" ? "w2" : "w1";
  // Idle again from the pool's (done), which may come after the answer.
  REQUIRE(wait_until([&] { return status()["idle"] == 2; }));
  // Idle 10 s: `other` is pinged; `recent`, idle 4 s, is not.
  auto ping = script->expect("ping", scripted_reply::ok(), other);
  advance(4s);
  REQUIRE(wait_until([&] { return script->arrived(ping) && status()["idle"] == 2; }));
  // Its ping's answer made `other` idle anew: 6 s later only `recent` is due.
  ping = script->expect("ping", scripted_reply::ok(), recent);
  advance(6s);
  REQUIRE(wait_until([&] { return script->arrived(ping) && status()["idle"] == 2; }));
  auto st = status();
  CHECK(st["replaced"]["health"] == 0);
  CHECK(st["circuit"] == "closed");
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a worker that dies while idle is restarted and the pool keeps serving") {
  start_scripted(scripted_config(2));
  script->crash("w2");
  REQUIRE(wait_until([&] { return script->starts("w2") == 2 && status()["workers"] == 2; }));
  CHECK(status()["crashes"] == 1);
  script->expect("ping");
  CHECK(exec(pool(), "ping"));
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a failed init reaches the breaker and the supervisor retries the worker") {
  auto c = scripted_config(1);
  c.lazy = true;
  start_scripted(c);
  script->fail_init("w1-lazy");
  script->expect("ping", scripted_reply::ok());
  auto r = exec(pool(), "ping");
  // The first lazy worker failed its init; the queue asks for another.
  CHECK(status()["errors"]["init_failed"] == 1);
  CHECK_MESSAGE(r, why(r));
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a pool asked to stop answers everyone still queued") {
  start_scripted(scripted_config(1));
  hold("w1");
  std::vector<std::shared_ptr<box>> queued;
  for (int i = 0; i < 3; ++i)
    queued.push_back(send_async(make_command("queued")));  // never reaches a worker
  REQUIRE(wait_until([&] { return status()["queue"] == 3; }));
  self->send_exit(pool(), caf::exit_reason::user_shutdown);
  for (auto& b : queued) {
    REQUIRE(b->wait());
    CHECK(b->get().find("shutting_down") == 0);
  }
}

TEST_CASE_FIXTURE(scripted_pool_fixture, "a lazy pool starts workers only as requests need them") {
  auto c = scripted_config(2);
  c.lazy = true;
  start_scripted(c);
  CHECK(status()["workers"] == 0);
  CHECK(script->alive() == 0);
  script->expect("ping", scripted_reply::ok(), "w1-lazy");
  CHECK(served(exec(pool(), "ping")) == "w1-lazy");
  CHECK(status()["workers"] == 1);
}

} // TEST_SUITE
