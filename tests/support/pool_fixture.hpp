// A pool under its own supervisor tree, with real Python workers.
#pragma once

#include <dspex/actors/pool/pool.hpp>
#include <dspex/supervision/supervisor.hpp>

#include "support/actor_fixture.hpp"
#include "support/wait.hpp"

#include <mutex>

namespace dspex::test {

struct pool_fixture : actor_fixture {
  caf::actor root;
  std::mutex mx;
  caf::actor current_pool;

  static pool_config test_pool_config(std::size_t size = 2) {
    pool_config c;
    c.size = size;
    c.worker = test_worker_config("w");
    c.checkout_timeout = 10s;
    return c;
  }

  caf::actor pool() {
    std::lock_guard<std::mutex> g(mx);
    return current_pool;
  }

  /// Starts root(one_for_one) -> pool_sup; returns the start error, if any.
  caf::error start(pool_config c, std::vector<caf::actor> subscribers = {}) {
    supervision::supervisor_options opts;
    opts.subscribers = std::move(subscribers);
    supervision::supervisor_flags flags;
    auto spec = pool_supervisor_spec("pool_sup", std::move(c), loop, [this](caf::actor p) {
      std::lock_guard<std::mutex> g(mx);
      current_pool = std::move(p);
    });
    auto r = supervision::start_supervisor(sys, flags, {spec}, opts);
    if (!r)
      return r.error();
    root = *r;
    return {};
  }

  caf::error await_pool_ready() {
    return await_ready(pool());
  }

  // -- time by hand (pool_config::clk) -----------------------------------------

  std::shared_ptr<supervision::manual_clock> clk;

  /// Gives `c` a manual clock: the pool's breaker, queue deadlines, idle
  /// pings and recycling then move only when the test calls advance().
  pool_config with_manual_clock(pool_config c) {
    clk = std::make_shared<supervision::manual_clock>();
    c.clk = clk;
    return c;
  }

  /// Moves the pool's clock by `d` and fires what is due; returns once the
  /// pool has.
  void advance(std::chrono::milliseconds d) {
    REQUIRE(clk);
    clk->advance(d);
    bool fired = false;
    self->request(pool(), std::chrono::seconds(30), timers_atom::value)
      .receive([&] { fired = true; }, [&](caf::error& e) { FAIL(describe(e)); });
    REQUIRE(fired);
  }

  /// Sends a request from a helper actor; its outcome lands in the box (an
  /// empty error: answered with a result).
  std::shared_ptr<promise_box<caf::error>> exec_async(command_request req) {
    auto out = std::make_shared<promise_box<caf::error>>();
    auto p = pool();
    sys.spawn([p, req, out](caf::event_based_actor* a) {
      a->request(p, std::chrono::seconds(60), exec_atom::value, req)
        .then([out](json&) { out->set(caf::error{}); }, [out](caf::error& e) { out->set(e); });
    });
    return out;
  }

  json status() {
    json out;
    self->request(pool(), std::chrono::seconds(30), status_atom::value)
      .receive([&](json& j) { out = std::move(j); }, [&](caf::error&) {});
    return out;
  }

  /// Shuts the tree down and waits for it (a test may then start another).
  void stop() {
    if (!root)
      return;
    self->send_exit(root, caf::exit_reason::user_shutdown);
    self->monitor(root);
    self->receive([](caf::down_msg&) {}, caf::after(std::chrono::seconds(30)) >> [] {});
    root = nullptr;
  }

  ~pool_fixture() { stop(); }
};

} // namespace dspex::test
