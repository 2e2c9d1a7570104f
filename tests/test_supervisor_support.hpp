// Shared by the supervisor suites: the event log the test waits on, a
// fixture with one actor_system per test case, and small child actors.
//
// Waits are deadlines for "eventually", never assertions on elapsed time.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <doctest/doctest.h>

#include <dspex/supervision/supervisor.hpp>

#include "support/event_log.hpp"

namespace dspex_sup_test {

using namespace dspex::supervision;
using namespace std::chrono_literals;

// -- messages the test children understand --------------------------------------

/// Exit with a crash (system_error(runtime_error, "boom")).
using crash_atom = caf::atom_constant<caf::atom("t_crash")>;
/// Exit normally.
using stop_atom = caf::atom_constant<caf::atom("t_stop")>;
/// Exit with reason shutdown (on its own initiative).
using shut_atom = caf::atom_constant<caf::atom("t_shut")>;
/// Answer the number the child was started with.
using which_atom = caf::atom_constant<caf::atom("t_which")>;

/// How long a test waits for something that must eventually happen.
constexpr auto deadline = std::chrono::seconds{30};

// -- the event log (tests/support/event_log.hpp) ------------------------------

using dspex::test::event_log;

inline caf::behavior collector(caf::event_based_actor* self,
                               std::shared_ptr<event_log> log) {
  return dspex::test::event_sink(self, std::move(log));
}

// -- test children -------------------------------------------------------------------

/// A well-behaved child: stops when asked (default exit handling), answers
/// ready with an empty message.
inline caf::behavior test_worker(caf::event_based_actor* self, int n) {
  return {
    [self](crash_atom) {
      self->quit(caf::make_error(caf::sec::runtime_error, "boom"));
    },
    [self](stop_atom) { self->quit(); },
    [self](shut_atom) {
      self->quit(caf::make_error(caf::exit_reason::user_shutdown));
    },
    [n](which_atom) { return n; },
    [](ready_atom) {},
  };
}

/// A child that ignores exit requests (only exit_reason::kill stops it).
inline caf::behavior stubborn_worker(caf::event_based_actor* self) {
  self->set_exit_handler([](caf::exit_msg&) {});
  return {
    [self](crash_atom) {
      self->quit(caf::make_error(caf::sec::runtime_error, "boom"));
    },
    [](ready_atom) {},
  };
}

/// Controls a start function from the test (read on the supervisor's
/// thread, hence atomics).
struct start_control {
  std::atomic<int> calls{0};
  /// Fail the next n starts.
  std::atomic<int> fail_next{0};
  /// Fail every start.
  std::atomic<bool> fail_always{false};
};

inline start_fn spawn_worker(int n = 0) {
  return [n](caf::local_actor* self) -> caf::expected<caf::actor> {
    return self->spawn(test_worker, n);
  };
}

inline start_fn spawn_stubborn() {
  return [](caf::local_actor* self) -> caf::expected<caf::actor> {
    return self->spawn(stubborn_worker);
  };
}

inline start_fn spawn_controlled(std::shared_ptr<start_control> ctl, int n = 0) {
  return [ctl, n](caf::local_actor* self) -> caf::expected<caf::actor> {
    ++ctl->calls;
    if (ctl->fail_always.load())
      return caf::make_error(caf::sec::runtime_error, "start refused");
    if (ctl->fail_next.load() > 0) {
      --ctl->fail_next;
      return caf::make_error(caf::sec::runtime_error, "start refused");
    }
    return self->spawn(test_worker, n);
  };
}

inline child_spec worker(std::string id, int n = 0) {
  return child_spec{std::move(id), spawn_worker(n)};
}

// -- the fixture ---------------------------------------------------------------------

/// One actor_system per test case, an event collector, and the supervisors
/// the test started (killed at the end should a check have failed before
/// the test stopped them, so the system can shut down).
struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<event_log> log = std::make_shared<event_log>();
  caf::actor events = sys.spawn(collector, log);
  std::vector<caf::actor> started;

  ~fixture() {
    for (auto& sup : started)
      caf::anon_send_exit(sup, caf::exit_reason::kill);
    caf::anon_send_exit(events, caf::exit_reason::kill);
  }

  supervisor_options options(std::string path = "root",
                             std::shared_ptr<dspex::supervision::clock> clk = nullptr) {
    supervisor_options opts;
    opts.path = std::move(path);
    opts.clk = std::move(clk);
    opts.subscribers.push_back(events);
    return opts;
  }

  /// start_supervisor that must succeed.
  caf::actor start(supervisor_flags flags, std::vector<child_spec> children,
                   supervisor_options opts) {
    auto sup = start_supervisor(sys, flags, std::move(children), std::move(opts));
    if (!sup)
      FAIL("start_supervisor failed: " << describe(sup.error()));
    started.push_back(*sup);
    return *sup;
  }

  caf::actor start(supervisor_flags flags, std::vector<child_spec> children) {
    return start(flags, std::move(children), options());
  }

  /// The running child `id` of `sup`.
  caf::actor child(const caf::actor& sup, const std::string& id) {
    auto xs = which_children(sys, sup);
    REQUIRE(xs);
    for (auto& x : *xs)
      if (x.id == id) {
        REQUIRE_MESSAGE(x.status == child_status::running,
                        id << " is " << to_string(x.status));
        return x.handle;
      }
    FAIL("no child " << id);
    return {};
  }

  std::vector<child_info> children(const caf::actor& sup) {
    auto xs = which_children(sys, sup);
    REQUIRE(xs);
    return *xs;
  }

  /// "a:running b:undefined" in start order.
  std::string statuses(const caf::actor& sup) {
    std::string out;
    for (auto& x : children(sup)) {
      if (!out.empty())
        out += ' ';
      out += x.id + ":" + to_string(x.status);
    }
    return out;
  }

  /// Stops `sup` and waits until it terminated; returns its exit reason.
  caf::error stop(const caf::actor& sup) {
    return stop_supervisor(sys, sup);
  }

  /// Waits until `whom` terminated (monitoring it from a scoped actor made
  /// before the event that ends it is sent). Returns its exit reason.
  static caf::error await_down(caf::scoped_actor& self, const caf::actor& whom) {
    // Other down_msgs stay in the mailbox for their own await_down.
    caf::error reason;
    bool down = false;
    auto addr = whom.address();
    while (!down)
      self->receive(
        [&](caf::down_msg& msg) -> caf::result<void> {
          if (msg.source != addr)
            return caf::skip();
          reason = msg.reason;
          down = true;
          return caf::unit;
        },
        caf::after(deadline) >> [&] {
          FAIL("actor did not terminate in time");
          down = true;
        });
    return reason;
  }
};

} // namespace dspex_sup_test
