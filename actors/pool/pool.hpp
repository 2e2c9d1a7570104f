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
//   max_consecutive_failures  a worker with that many worker-level faults in
//                        a row (timeouts answered late, failed checkins) is
//                        replaced; any answer resets it. 0: never
//
// Request path (docs/architecture.md): client -(exec)-> pool -(delegate)-> worker, and
// the worker's reply goes straight to the client; the worker then tells the
// pool (done) that it is free. Before it delegates, the pool asks the
// session registry (prepare, session_state.hpp) what the chosen worker has
// not seen of the request's session and of the default LM, and sends that
// first; the pool itself names no command. That round trip is skipped for
// a request that changes nothing (session_book::changes) on a worker that
// has seen the versions the registry last told this pool of (each plan
// carries them, and the registry pushes (versions) to every pool on every
// change before it answers, so no pool acts on an older one).
//
// worker.max_concurrency N > 1: the pool keeps up to N pooled requests in
// flight on a worker (each a job named by a tag the worker echoes in
// (done) and (timedout), so replies may come back in any order). A request
// goes to its session's worker when that one has room, else to an idle
// worker, else to the busy worker with most room. A lease, a health ping
// and the grace take a whole worker; a fault fails every job on it. Leases: (checkout) hands a worker to the
// caller for several commands, (checkin) returns it; a lease holder that
// dies gives its worker back (replaced when a request was still pending).
//
// Faults (issue 10). An application error is an ordinary reply: a Python
// exception or UnknownCommand is python_error for its caller, counted in
// errors.python_error, and changes nothing else (no fault count, no health
// change, no breaker). Worker-level faults are: protocol error, crash,
// timeout, failed health ping, failed init.
//
// Timeouts. A request's timeout (or the worker's request_timeout) is its
// caller's deadline from submission: queued past it, the caller gets
// command_timeout from the pool; at the worker, from the worker. Queue
// deadlines share one timer (deadlines.hpp), as do a worker's requests. The worker
// then has timeout_grace: a late reply is discarded and the worker serves
// again; none, and the pool replaces it. In its grace it takes no work.
//
// Which exits count toward the worker supervisor's restart intensity: only
// those the supervisor did not ask for — a crash (the process died: signal,
// os._exit, a broken pipe), a protocol error (the worker exits with it), a
// failed init, and a timed-out worker outside a pool (nobody replaces it on
// purpose). A worker the pool retires on purpose goes through the
// supervisor's API, as OTP: (retire) to the worker, which kills its process
// at once (it may be stuck in Python and unable to read a shutdown frame),
// then terminate_child, then restart_child for a permanent worker (an
// overflow one is temporary and just goes). Neither call counts. The
// deliberate causes, counted in status "replaced":
//   timeout   no reply within timeout_grace after a command timeout
//   health    an idle worker's health ping failed (timed out)
//   failures  max_consecutive_failures reached
//   lease     the lease holder died with a request in flight
//   recycled_requests, recycled_rss, recycled_age
//             worker recycling (recycling.hpp): an idle worker past its
//             limit; stopped gracefully, not killed
// "crashes" counts the exits nobody asked for; "restarts" is both together.
//
// Circuit breaker (circuit_breaker.hpp). It opens on faults that show the
// pool cannot keep workers alive: crashes and protocol errors (exits nobody
// asked for), failed inits, failed health pings. Not on python_error, and
// not on command timeouts: a hung endpoint makes workers time out and be
// replaced on purpose, and failing everything fast (pings included) would
// turn one slow dependency into a dead pool. In half_open, requests and
// checkouts are admitted as trials, and each ends in exactly one outcome:
// answered (python_error included) or checked in ok: success; timed out,
// checked in as failed, or its worker died or was replaced: failure; timed
// out in the queue, refused (saturated, shutting_down) or a lease given back
// by a dead holder with nothing in flight: its slot is released.
//
// Messages:
//   (ready)                          -> unit when every worker answered its init ping
//   (exec, command_request)          -> json | error
//   (checkout, optional<session>)    -> actor (a leased worker)
//   (checkin, actor worker, bool ok) -> unit
//   (drain)                          -> unit once nothing is in flight; new work
//                                       then gets shutting_down
//   (scale, size_t n)                -> {pool, from, size, workers} once the pool
//                                       serves with n workers: new ones started
//                                       (wK, the first free K), the idlest drained
//                                       and removed; 0 < n <= max_pool_size, one
//                                       resize at a time (else unavailable)
//   (reload, size_t surge)           -> {pool, reloaded, surge, ms, fork_server} once
//                                       every worker was replaced by one started
//                                       with freshly imported code (reload.hpp);
//                                       surge in [1, size]; not beside a resize
//                                       or another reload (unavailable)
//   (leaving)                        -> unit, from a worker asked to stop: the pool
//                                       routes nothing more to it and answers once it
//                                       holds nothing of the pool's (per-worker drain)
//   (status)                         -> json metrics: per worker state,
//                                       consecutive_faults (and rss_mb with
//                                       max_rss_mb); crashes, replaced
//                                       {timeout, health, failures, lease,
//                                       recycled_requests, recycled_rss,
//                                       recycled_age}, circuit,
//                                       circuit_opened, circuit_trials
// From its workers: (worker_up), (done, ok, tag), (timedout, pooled, tag),
// (recovered), (stuck), (initfail) — see worker.hpp. To its workers:
// (retire), and (adopt, pool) from a pool started while its workers run
// (restarted alone).
#pragma once

#include <dspex/actors/pool/circuit_breaker.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/pool/recycling.hpp>
#include <dspex/actors/pool/worker.hpp>
#include <dspex/bridge/io_loop.hpp>
#include <dspex/supervision/child_spec.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/actor.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace dspex {

/// The largest size a pool may have, in its config or by (scale).
constexpr std::size_t max_pool_size = 4096;

enum class idle_order { lifo, fifo };
enum class affinity_mode { hint, strict };

/// What a worker start function is told: which worker to start and the pool
/// it serves. The worker speaks the contract of worker.hpp with that pool:
/// (worker_up, id, overflow) once ready, (done, ok, tag) after every pooled
/// request (the request's tag; (done, ok) names the oldest), (retire),
/// (stats) with "inflight", exit messages.
struct worker_start_info {
  std::string id;       ///< "w1", "w3-lazy", "overflow4": its child id
  bool overflow = false;
  caf::actor pool;      ///< the pool as it is now (pool_links), at each (re)start
  worker_config worker; ///< pool_config::worker with id, pool and overflow filled in
};

/// Starts one worker from inside its supervisor (a child_spec start function).
using worker_starter
  = std::function<caf::expected<caf::actor>(caf::local_actor* ctx, const worker_start_info&)>;

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
  /// When an idle worker is retired and replaced (recycling.hpp); config:
  /// worker.max_requests, worker.max_rss_mb, worker.max_age_ms, worker.recycle_jitter.
  recycle_config recycle;
  /// Restart intensity of the worker supervisor; 0: max(3, size) in 5 s.
  int worker_intensity = 0;
  std::chrono::milliseconds worker_period{5000};
  /// Shutdown budget of one worker under its supervisor.
  std::chrono::milliseconds worker_shutdown{5000};
  /// The seam for tests: how a worker is started. Unset: a Python worker
  /// (spawn_worker with the pool's io_loop).
  worker_starter start_worker;
  /// The pool's default LM (configure_lm arguments, e.g. {"provider":
  /// "mock", "model": "m"}): it serves anonymous requests and sessions that
  /// configured none, until a configure_lm without a session replaces it.
  /// Null: none.
  json default_lm;
  /// Looks up the current session registry, which keeps every session's
  /// state (session_state.hpp); asked at each use, so a restarted registry
  /// is found. Unset: the pool keeps a private registry of its own.
  std::function<caf::actor()> registry;
  /// The clock of the pool's timers, as the supervisor's intensity has one
  /// (supervision/clock.hpp): the circuit breaker's window and open time,
  /// queue deadlines (checkout_timeout), idle pings (worker_idle_timeout)
  /// and recycling (max_age_ms, the RSS tick). Unset (the default): the pool
  /// reads std::chrono::steady_clock inline and arms its own timers. Set (a
  /// test's manual_clock): the pool reads this clock and arms none of those
  /// timers; whoever moves the clock fires them with (timers_atom), answered
  /// once everything due has fired. The drain timeout, restart backoff and
  /// each worker's own deadlines (worker.hpp) stay real timers.
  std::shared_ptr<supervision::clock> clk;
};

/// (timers) to a pool with pool_config::clk set: fire what is due by that
/// clock's now (queued requests past their deadline, idle pings, the
/// recycling tick). Answers an empty message when done.
using timers_atom = caf::atom_constant<caf::atom("timers")>;

/// Handles shared between the pool supervisor's children, which restart
/// independently: workers look up their current pool here, the pool its
/// current worker supervisor and fork server (none when workers spawn).
class pool_links {
public:
  caf::actor forker() const {
    std::lock_guard<std::mutex> g(mx_);
    return forker_;
  }
  void set_forker(caf::actor a) {
    std::lock_guard<std::mutex> g(mx_);
    forker_ = std::move(a);
  }
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
  caf::actor forker_;
};

/// The child spec of a pool supervisor (rest_for_one): the pool actor, then
/// a worker supervisor (one_for_one) with `size` workers (none when lazy).
/// Workers pre-warm in parallel; the pool answers (ready) once all are up.
/// `on_pool` is told the pool actor each time it (re)starts; `registry`, when
/// set, looks up the current session registry (at each use).
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
