// The pool: chooses a worker for each request and never waits on Python.
// NimblePool/poolboy semantics:
//
//   size                 workers started with the pool (or on demand when lazy)
//   max_overflow         extra workers started when all are busy, stopped
//                        again as soon as they are idle with nobody waiting
//   checkout_timeout     how long a request may wait for a worker
//   max_queue            bound of the FIFO wait queue; full -> pool_saturated
//   strategy             lifo (warm workers first) | fifo (spread the load)
//   lazy                 no worker until the first request needs one
//   worker_idle_timeout  an idle worker gets a health ping after this long
//   affinity             hint: a session prefers the worker that served it
//                        last; strict: it waits for that worker
//   max_consecutive_failures  a worker whose requests failed that many times
//                        in a row is replaced (NimblePool's three checkins)
//
// Request path (DESIGN.md): client -(exec)-> pool -(delegate)-> worker, and
// the worker's reply goes straight to the client; the worker then tells the
// pool (done) that it is free. Leases: (checkout) hands a worker to the
// caller for several commands, (checkin) returns it; a lease holder that
// dies gives its worker back (replaced when a request was still pending).
//
// Messages:
//   (ready)                          -> unit when every worker answered its init ping
//   (exec, command_request)          -> json | error
//   (checkout, optional<session>)    -> actor (a leased worker)
//   (checkin, actor worker, bool ok) -> unit
//   (drain)                          -> unit once nothing is in flight; new work
//                                       then gets shutting_down
//   (status)                         -> json metrics
#pragma once

#include <dspex/actors/circuit_breaker.hpp>
#include <dspex/actors/messages.hpp>
#include <dspex/actors/worker.hpp>
#include <dspex/bridge/io_loop.hpp>
#include <dspex/supervision/child_spec.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/actor.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

namespace dspex {

enum class idle_order { lifo, fifo };
enum class affinity_mode { hint, strict };

struct pool_config {
  std::string name = "pool";
  std::size_t size = 4;
  std::size_t max_overflow = 0;
  std::chrono::milliseconds checkout_timeout{5000};
  std::size_t max_queue = 1024;
  idle_order strategy = idle_order::lifo;
  bool lazy = false;
  std::chrono::milliseconds worker_idle_timeout{0};  ///< 0: no idle pings
  affinity_mode affinity = affinity_mode::hint;
  int max_consecutive_failures = 3;                  ///< 0: never replace for failures
  std::chrono::milliseconds drain_timeout{10000};
  circuit_config circuit;
  worker_config worker;  ///< template for every worker (id and pool are filled in)
  /// Restart intensity of the worker supervisor; 0: max(3, size) in 5 s.
  int worker_intensity = 0;
  std::chrono::milliseconds worker_period{5000};
  /// Shutdown budget of one worker under its supervisor.
  std::chrono::milliseconds worker_shutdown{5000};
  /// The session registry to touch and to keep program definitions in
  /// (optional).
  caf::actor registry;
};

/// Handles shared between the pool supervisor's children, which restart
/// independently: workers look up their current pool here, the pool its
/// current worker supervisor.
class pool_links {
public:
  caf::actor pool() const {
    std::lock_guard<std::mutex> g(mx_);
    return pool_;
  }
  caf::actor worker_sup() const {
    std::lock_guard<std::mutex> g(mx_);
    return worker_sup_;
  }
  void set_pool(caf::actor a) {
    std::lock_guard<std::mutex> g(mx_);
    pool_ = std::move(a);
  }
  void set_worker_sup(caf::actor a) {
    std::lock_guard<std::mutex> g(mx_);
    worker_sup_ = std::move(a);
  }

private:
  mutable std::mutex mx_;
  caf::actor pool_;
  caf::actor worker_sup_;
};

/// The child spec of a pool supervisor (rest_for_one): the pool actor, then
/// a worker supervisor (one_for_one) with `size` workers (none when lazy).
/// Workers pre-warm in parallel; the pool answers (ready) once all are up.
/// `on_pool` is told the pool actor each time it (re)starts; `registry`, when
/// set, looks up the current session registry at each (re)start.
supervision::child_spec pool_supervisor_spec(std::string id, pool_config cfg,
                                             std::shared_ptr<bridge::io_loop> loop,
                                             std::function<void(caf::actor)> on_pool = {},
                                             std::function<caf::actor()> registry = {});

/// The spec of worker number `n` ("w<n>") of a pool.
supervision::child_spec worker_child_spec(std::string id, const pool_config& cfg,
                                          std::shared_ptr<bridge::io_loop> loop,
                                          std::shared_ptr<pool_links> links, bool overflow);

/// Spawns just the pool actor (the supervisor spec above does this).
caf::actor spawn_pool(caf::local_actor* ctx, pool_config cfg, std::shared_ptr<bridge::io_loop> loop,
                      std::shared_ptr<pool_links> links);

const char* to_string(idle_order o) noexcept;
const char* to_string(affinity_mode m) noexcept;

} // namespace dspex
