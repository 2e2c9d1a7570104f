#include <dspex/actors/pool/pool.hpp>

#include <dspex/actors/process/detail/fork_server_child.hpp>

#include <dspex/actors/pool/detail/deadlines.hpp>
#include <dspex/actors/pool/detail/reload.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/pool/detail/latency_histogram.hpp>
#include <dspex/actors/session/session_registry.hpp>
#include <dspex/actors/session/detail/session_state.hpp>
#include <dspex/actors/pool/detail/worker_port.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <unordered_map>
#include <unordered_set>

namespace dspex {

const char* to_string(idle_order o) noexcept {
  return o == idle_order::lifo ? "lifo" : "fifo";
}

const char* to_string(affinity_mode m) noexcept {
  return m == affinity_mode::hint ? "hint" : "strict";
}

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::duration_cast;

/// (resize_deadline, op): the deadline of resize `op` (scale).
using resize_deadline_atom = caf::atom_constant<caf::atom("rsz_dl")>;
/// (leave_deadline, worker): a scaled-down worker's drain_timeout passed.
using leave_deadline_atom = caf::atom_constant<caf::atom("leave_dl")>;
using std::chrono::milliseconds;


// grace: free as far as any caller knows, but a request of its timed out
// and it may still answer; it takes no work until it recovers or is replaced.
enum class wstate { idle, busy, leased, grace, retiring };

const char* to_string(wstate s) {
  switch (s) {
    case wstate::idle: return "idle";
    case wstate::busy: return "busy";
    case wstate::leased: return "leased";
    case wstate::grace: return "grace";
    case wstate::retiring: return "retiring";
  }
  return "?";
}

// Why the pool replaced a worker on purpose (status "replaced").
enum class replace_cause {
  timeout, health, failures, lease, recycled_requests, recycled_rss, recycled_age,
  out_of_memory, cpu_limit };

const char* to_string(replace_cause c) {
  switch (c) {
    case replace_cause::timeout: return "timeout";
    case replace_cause::health: return "health";
    case replace_cause::failures: return "failures";
    case replace_cause::lease: return "lease";
    case replace_cause::recycled_requests: return replaced_key(recycle_cause::requests);
    case replace_cause::recycled_rss: return replaced_key(recycle_cause::rss);
    case replace_cause::recycled_age: return replaced_key(recycle_cause::age);
    case replace_cause::out_of_memory: return "out_of_memory";
    case replace_cause::cpu_limit: return "cpu_limit";
  }
  return "?";
}

// A pooled request on its worker, until (done) or (timedout) names it.
struct job {
  std::uint64_t tag = 0;
  std::uint64_t change = 0;  // session change its request makes, to settle
  std::uint64_t trial = 0;   // breaker ticket (0: none)
  clock_type::time_point submitted;  // when its caller asked (latency)
  std::uint64_t ref = 0;             // the caller's name for it (0: not cancellable)
  caf::actor_addr caller;
  bool sent = true;       // with the worker (false: waiting on the registry's plan)
  bool cancelled = false; // cancelled while not yet sent: never sent
};

bool is_recycling(replace_cause c) {
  return c == replace_cause::recycled_requests || c == replace_cause::recycled_rss
         || c == replace_cause::recycled_age;
}

struct worker_entry {
  caf::actor hdl;
  std::string id;
  bool overflow = false;
  wstate st = wstate::idle;
  caf::actor_addr lease_holder;
  /// Worker-level faults since its last answer (timeouts, failed checkins).
  int consecutive_faults = 0;
  bool in_grace = false;     // a request of its timed out; no answer yet
  std::uint64_t trial = 0;   // breaker ticket of its lease (0: none)
  /// Pooled requests in flight on it, oldest first: at most
  /// max_concurrency (a vector: no allocation per request once warm).
  std::vector<job> jobs;
  clock_type::time_point idle_since;  // set by worker_free
  std::uint64_t served = 0;
  /// What it has seen of each session's state and of the pool default LM
  /// (versions of the current registry's session_book).
  std::unordered_map<std::string, std::uint64_t> seen_sessions;
  std::uint64_t seen_default = 0;
  recycle_budget recycle;    // its recycling limits (recycling.hpp)
  /// Writes its requests to its pipe without the worker actor, while the
  /// worker accepts that (worker_port.hpp); null for a scripted worker.
  std::shared_ptr<worker_port> port;
  /// Draining before a deliberate stop (its own (leaving), or the pool's
  /// scale down): nothing more is routed to it; it departs once it holds
  /// nothing of the pool's (depart).
  bool leaving = false;
  bool remove_on_leave = false;  // scaled down: stopped and its spec deleted then
  std::vector<caf::response_promise> released;  // its (leaving), answered when it departs
};

struct waiter {
  std::uint64_t id = 0;
  bool lease = false;
  command_request req;
  std::optional<std::string> session;
  caf::response_promise rp;
  caf::actor_addr holder;  // lease: who asked
  std::uint64_t trial = 0; // breaker ticket when admitted as a half-open trial
  /// What a waiter gets when its queue timer fires: checkout_timeout, or
  /// command_timeout when its own deadline (the request's timeout counts
  /// from submission, queueing included) comes first.
  errc expiry = errc::checkout_timeout;
  milliseconds limit{0};
  clock_type::time_point enqueued;  // pool_state::now() when it was asked
  clock_type::time_point deadline;  // in the queue: enqueued + limit
};

struct pool_state {
  pool_config cfg;
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<pool_links> links;
  std::unordered_map<caf::actor_addr, worker_entry> workers;
  std::deque<caf::actor_addr> idle;
  std::deque<waiter> queue;
  deadline_book queue_deadlines;  // of the waiters in the queue, behind one timer
  std::unordered_map<std::string, caf::actor_addr> affinity;
  // Callers of cancellable requests (ref != 0), monitored: one that dies
  // has its requests cancelled. An entry goes when its caller does.
  std::unordered_set<caf::actor_addr> callers;
  // The session registry last used (a new one is announced to) and the
  // private one of a pool configured without a registry.
  caf::actor registry;
  caf::actor own_registry;
  // The registry's current versions, as far as this pool knows: from every
  // plan it answers and from what it pushes when a session (or this pool's
  // default LM) changes. A worker that has seen them needs no prepare round
  // trip for a request that changes nothing. No entry: unknown, ask.
  std::unordered_map<std::string, std::uint64_t> session_versions;
  std::optional<std::uint64_t> default_version;
  std::vector<caf::response_promise> ready_waiters;
  std::vector<caf::response_promise> drain_waiters;
  // A worker could not start as configured (invalid_config) before the pool
  // got ready: the answer to (ready) from then on, until it does get ready.
  caf::error config_error;
  bool ready = false;
  bool draining = false;
  std::uint64_t next_waiter = 1;
  std::uint64_t next_job = 1;       // tags of pooled requests
  std::uint64_t next_worker = 1;    // names for lazy and overflow workers
  std::size_t starting = 0;         // lazy workers asked for, not yet up
  std::size_t overflow_starting = 0;
  // A resize in progress (scale): one at a time; answered once the pool
  // serves with `to` workers, or at its deadline.
  struct resize_op {
    std::uint64_t id = 0;
    std::size_t from = 0, to = 0;
    caf::response_promise rp;
  };
  std::optional<resize_op> resizing;
  std::uint64_t next_resize = 1;
  // A rolling reload (reload.hpp): its actor while it runs (one at a time,
  // never beside a resize), its last progress report, and how each ended.
  caf::actor reloader;
  caf::response_promise reload_rp;  // its (reload)'s answer, kept for a stop
  json reload = json::object();
  std::map<std::string, std::uint64_t> reloads{{"ok", 0}, {"rolled_back", 0}};
  circuit_breaker breaker;
  recycler recycling;

  /// The pool's time: pool_config::clk when a test set one, else
  /// steady_clock read inline (no virtual call on the request path).
  clock_type::time_point now() const { return cfg.clk ? cfg.clk->now() : clock_type::now(); }
  /// Whether the pool arms its own timers (no clock set: real time).
  bool own_timers() const { return !cfg.clk; }

  // -- metrics --
  std::uint64_t checkouts = 0;
  std::uint64_t wait_total_us = 0;
  std::uint64_t wait_max_us = 0;
  std::uint64_t crashes = 0;  // worker exits nobody asked for
  // Timed-out requests whose handler ended within the grace (soft) or did
  // not, so that its worker was replaced (hard).
  std::uint64_t soft_timeouts = 0;
  std::uint64_t hard_timeouts = 0;
  std::map<std::string, std::uint64_t> replaced{
    {"timeout", 0}, {"health", 0}, {"failures", 0}, {"lease", 0},
    {"recycled_requests", 0}, {"recycled_rss", 0}, {"recycled_age", 0},
    {"out_of_memory", 0}, {"cpu_limit", 0}};
  std::uint64_t completed = 0;
  std::map<std::string, std::uint64_t> errors;
  /// How each request's caller was answered: "ok" or an errc name.
  std::map<std::string, std::uint64_t> results{{"ok", 0}};
  latency_histogram latency;  // submission to answer, answered requests

  static inline const char* name = "dspex.pool";

  std::size_t count(wstate s, bool overflow_only = false) const {
    std::size_t n = 0;
    for (auto& [a, w] : workers)
      if (w.st == s && (!overflow_only || w.overflow))
        ++n;
    return n;
  }
  std::size_t overflow_count() const {
    std::size_t n = 0;
    for (auto& [a, w] : workers)
      if (w.overflow)
        ++n;
    return n;
  }
  std::size_t regular_count() const { return workers.size() - overflow_count(); }
  /// Workers serving a request or held by a lease: what a drain waits for.
  std::size_t in_use() const { return count(wstate::busy) + count(wstate::leased); }

  /// A busy worker may take another request (max_concurrency > 1): it
  /// serves requests (not a health ping), has room, is not in its grace and
  /// is not due for recycling (else a loaded worker would never be idle).
  bool has_room(const worker_entry& w) const {
    return w.st == wstate::busy && !w.jobs.empty() && w.jobs.size() < cfg.worker.max_concurrency
           && !w.in_grace && !w.leaving && w.recycle.due(w.served, now()) == recycle_cause::none;
  }

  /// The breaker hears how a trial ended, once.
  void end_trial(std::uint64_t& ticket, bool ok) {
    if (ticket != 0)
      breaker.trial_done(now(), ticket, ok);
    ticket = 0;
  }
  void drop_trial(std::uint64_t& ticket) {
    if (ticket != 0)
      breaker.trial_dropped(ticket);
    ticket = 0;
  }
};

using pool_actor = caf::stateful_actor<pool_state>;

void count_error(pool_actor* self, errc code) {
  ++self->state.errors[to_string(code)];
}

void fail(pool_actor* self, caf::response_promise& rp, errc code, std::string detail) {
  count_error(self, code);
  ++self->state.results[to_string(code)];
  rp.deliver(make_error(code, std::move(detail)));
}

// A waiter refused or timed out before it reached a worker: its trial slot,
// if it had one, is free again.
void fail(pool_actor* self, waiter& wt, errc code, std::string detail) {
  self->state.drop_trial(wt.trial);
  fail(self, wt.rp, code, std::move(detail));
}

// Stopping or draining: every caller still queued gets shutting_down now
// (CAF 0.17 does not tell a caller when a promise is dropped).
void fail_queued(pool_actor* self, const std::string& why) {
  auto& st = self->state;
  auto queued = std::move(st.queue);
  st.queue.clear();
  st.queue_deadlines.clear();
  for (auto& wt : queued)
    fail(self, wt, errc::shutting_down, "pool " + st.cfg.name + " " + why);
}

void remove_idle(pool_state& st, const caf::actor_addr& a) {
  auto it = std::find(st.idle.begin(), st.idle.end(), a);
  if (it != st.idle.end())
    st.idle.erase(it);
}

// The session registry as of now: looked up at each use, as it may have
// been restarted. A new one learns of this pool (pool_up), and what the
// workers saw under the old one no longer counts.
caf::actor current_registry(pool_actor* self) {
  auto& st = self->state;
  auto reg = st.cfg.registry ? st.cfg.registry() : st.own_registry;
  if (reg != st.registry) {
    st.registry = reg;
    for (auto& [a, w] : st.workers) {
      w.seen_sessions.clear();
      w.seen_default = 0;
    }
    st.session_versions.clear();
    st.default_version.reset();
    if (reg)
      self->send(reg, pool_up_atom::value, st.cfg.name, st.cfg.default_lm);
  }
  return reg;
}

void worker_free(pool_actor* self, worker_entry& w);
void depart(pool_actor* self, worker_entry& w);
void release(worker_entry& w);
void check_drained(pool_actor* self);
void fill(pool_actor* self, worker_entry& w);
void job_left(pool_actor* self, worker_entry& w);

// The registry hears how the change of a request ended.
void settle(pool_actor* self, job& j, bool ok) {
  if (j.change != 0 && self->state.registry)
    self->send(self->state.registry, settle_atom::value, j.change, ok);
  j.change = 0;
}

// The job named `tag` (0: the oldest, from a worker that names none) left
// worker `w`; nullopt when it is not there (already ended).
std::optional<job> take_job(worker_entry& w, std::uint64_t tag) {
  auto it = tag == 0 ? w.jobs.begin()
                     : std::find_if(w.jobs.begin(), w.jobs.end(),
                                    [tag](const job& j) { return j.tag == tag; });
  if (it == w.jobs.end())
    return std::nullopt;
  auto j = *it;
  w.jobs.erase(it);
  return j;
}

// Every job of a worker that is gone or replaced: its callers got an error.
void fail_jobs(pool_actor* self, worker_entry& w, bool trial_failed) {
  for (auto& j : w.jobs) {
    settle(self, j, false);
    if (trial_failed)
      self->state.end_trial(j.trial, false);
    else
      self->state.drop_trial(j.trial);
  }
  w.jobs.clear();
}

// Whether a worker that has seen `seen` has every version that a request
// changing nothing depends on, as far as the registry told this pool.
bool has_seen_all(const pool_state& st, const waiter& wt, seen_versions seen) {
  if (session_book::changes(wt.req) || !st.default_version || seen.defaults < *st.default_version)
    return false;
  if (!wt.session)
    return true;
  auto v = st.session_versions.find(*wt.session);
  return v != st.session_versions.end() && seen.session >= v->second;
}

// Straight into the worker's pipe when its port takes it, else through the
// worker actor, which holds, refuses or fails it as its state says.
void send_to_worker(worker_entry& w, waiter& wt) {
  if (w.port && w.port->send(wt.req, wt.rp))
    return;
  wt.rp.delegate(w.hdl, exec_atom::value, std::move(wt.req));
}

// The one hook before dispatch: the registry records what the request
// changes in its session and says what this worker must be replayed first
// (session_state.hpp). The worker stays busy meanwhile.
void dispatch(pool_actor* self, worker_entry& w, waiter& wt) {
  auto reg = current_registry(self);
  if (!reg) {
    send_to_worker(w, wt);
    return;
  }
  seen_versions seen{0, w.seen_default};
  if (wt.session) {
    auto it = w.seen_sessions.find(*wt.session);
    if (it != w.seen_sessions.end())
      seen.session = it->second;
  }
  if (has_seen_all(self->state, wt, seen)) {
    // Nothing to record, nothing to replay: straight to the worker. The
    // registry still hears of the session's use (its TTL), one way.
    if (wt.session)
      self->send(reg, touch_atom::value, *wt.session);
    send_to_worker(w, wt);
    return;
  }
  auto hdl = w.hdl;
  auto session = wt.session;
  auto tag = wt.req.tag;
  if (!w.jobs.empty() && w.jobs.back().tag == tag)
    w.jobs.back().sent = false;
  auto rp = std::move(wt.rp);
  // No deadline: the registry is local and always answers (or is gone, and
  // CAF answers request_receiver_down); a timer per request would hold
  // memory for its whole span (CAF 0.17 cannot cancel it).
  self->request(reg, caf::infinite, prepare_atom::value, self->state.cfg.name,
                std::move(wt.req), seen)
    .then(
      [self, hdl, session, rp, reg, tag](session_plan& plan) mutable {
        auto& st = self->state;
        if (reg == st.registry) {
          // The registry's latest, in the order it sent it (versions pushes
          // and plans come from the same actor, so they do not overtake).
          if (session)
            st.session_versions[*session] = plan.seen.session;
          st.default_version = plan.seen.defaults;
        }
        auto it = self->state.workers.find(hdl.address());
        if (it != self->state.workers.end()) {
          if (session)
            it->second.seen_sessions[*session] = plan.seen.session;
          it->second.seen_default = plan.seen.defaults;
          for (auto& j : it->second.jobs)
            if (j.tag == tag) {
              j.change = plan.change;
              j.sent = true;
              if (j.cancelled) {
                // Cancelled while the registry planned: it never runs.
                fail(self, rp, errc::cancelled, "request cancelled by its caller");
                auto left = take_job(it->second, tag);
                settle(self, *left, false);
                self->state.drop_trial(left->trial);
                job_left(self, it->second);
                check_drained(self);
                return;
              }
            }
        }
        // In order before the request; their replies come here and are
        // dropped (a failure shows in the request's own answer).
        for (auto& c : plan.replay)
          self->request(hdl, caf::infinite, exec_atom::value, std::move(c))
            .then([](json&) {}, [](caf::error&) {});
        rp.delegate(hdl, exec_atom::value, std::move(plan.request));
      },
      [self, hdl, rp, tag, session](caf::error& e) mutable {
        if (is(e, errc::resource_exhausted)) {
          // A new session over max_sessions: the registry holds nothing of
          // it, so neither may this pool (hand_over noted its affinity).
          if (session)
            self->state.affinity.erase(*session);
          fail(self, rp, errc::resource_exhausted, detail_of(e));
        } else {
          fail(self, rp, errc::unavailable, "session registry did not answer: " + describe(e));
        }
        auto it = self->state.workers.find(hdl.address());
        if (it != self->state.workers.end() && it->second.st == wstate::busy)
          if (auto j = take_job(it->second, tag)) {
            self->state.drop_trial(j->trial);
            job_left(self, it->second);
          }
      });
}

void hand_over(pool_actor* self, worker_entry& w, waiter& wt) {
  auto& st = self->state;
  auto waited = duration_cast<std::chrono::microseconds>(st.now() - wt.enqueued).count();
  ++st.checkouts;
  st.wait_total_us += static_cast<std::uint64_t>(waited);
  st.wait_max_us = std::max(st.wait_max_us, static_cast<std::uint64_t>(waited));
  ++w.served;
  if (wt.session)
    st.affinity[*wt.session] = w.hdl.address();
  if (wt.lease) {
    w.trial = wt.trial;
    wt.trial = 0;
    // Leases too: the registry's expiry is what removes the affinity entry.
    // (A request's touch is its prepare.)
    if (wt.session)
      if (auto reg = current_registry(self))
        self->send(reg, touch_atom::value, *wt.session);
    w.st = wstate::leased;
    w.lease_holder = wt.holder;
    if (wt.holder)
      self->monitor(wt.holder);
    wt.rp.deliver(w.hdl);
    return;
  }
  w.st = wstate::busy;
  wt.req.pooled = true;
  wt.req.tag = st.next_job++;
  w.jobs.push_back(job{wt.req.tag, 0, wt.trial, wt.enqueued, wt.req.ref,
                       caf::actor_cast<caf::actor_addr>(wt.rp.source())});
  wt.trial = 0;
  // The caller's deadline counts from submission: the worker gets what is
  // left of it after the wait.
  auto budget = wt.req.timeout.count() > 0 ? wt.req.timeout : st.cfg.worker.request_timeout;
  wt.req.timeout = std::max(milliseconds(1), budget - duration_cast<milliseconds>(std::chrono::microseconds(waited)));
  dispatch(self, w, wt);
}

// Whether waiter `wt` may take worker `a` (strict affinity binds a session
// to its worker while that worker lives).
bool may_take(pool_state& st, const waiter& wt, const caf::actor_addr& a) {
  if (st.cfg.affinity != affinity_mode::strict || !wt.session)
    return true;
  auto it = st.affinity.find(*wt.session);
  if (it == st.affinity.end() || st.workers.count(it->second) == 0)
    return true;
  return it->second == a;
}

// A worker for `wt`: its session's worker when free (or, for a request,
// with room), else an idle one in strategy order, else (a request, with
// max_concurrency > 1) the busy worker with most room. An idle worker it
// returns has left the idle list.
caf::actor_addr pick_idle(pool_state& st, const waiter& wt) {
  if (wt.session) {
    auto it = st.affinity.find(*wt.session);
    if (it != st.affinity.end()) {
      auto w = st.workers.find(it->second);
      if (w != st.workers.end() && w->second.st == wstate::idle) {
        remove_idle(st, it->second);
        return it->second;
      }
      if (w != st.workers.end() && !wt.lease && st.has_room(w->second))
        return it->second;
      if (st.cfg.affinity == affinity_mode::strict && w != st.workers.end())
        return {};
    }
  }
  if (st.idle.empty()) {
    if (wt.lease || st.cfg.worker.max_concurrency <= 1)
      return {};
    const worker_entry* best = nullptr;
    for (auto& [a, w] : st.workers)
      if (st.has_room(w) && (!best || w.jobs.size() < best->jobs.size()))
        best = &w;
    return best ? best->hdl.address() : caf::actor_addr{};
  }
  caf::actor_addr a;
  if (st.cfg.strategy == idle_order::lifo) {
    a = st.idle.back();
    st.idle.pop_back();
  } else {
    a = st.idle.front();
    st.idle.pop_front();
  }
  return a;
}

void start_worker(pool_actor* self, bool overflow) {
  auto& st = self->state;
  auto sup = st.links->worker_sup();
  if (!sup)
    return;
  auto id = std::string(overflow ? "overflow" : "w") + std::to_string(st.next_worker++)
            + (overflow ? "" : "-lazy");
  auto spec = worker_child_spec(id, st.cfg, st.loop, st.links, overflow);
  if (overflow)
    ++st.overflow_starting;
  else
    ++st.starting;
  self->request(sup, caf::infinite, supervision::start_child_atom::value, std::move(spec))
    .then([](caf::actor&) {},
          [self, overflow](caf::error&) {
            auto& st = self->state;
            if (overflow && st.overflow_starting > 0)
              --st.overflow_starting;
            else if (!overflow && st.starting > 0)
              --st.starting;
          });
}

// More hands are needed for the queue: lazy workers first, then overflow.
void grow_if_needed(pool_actor* self) {
  auto& st = self->state;
  if (st.queue.empty() || st.draining)
    return;
  auto waiting = st.queue.size();
  auto coming = st.starting + st.overflow_starting;
  if (waiting <= coming)
    return;
  if (st.cfg.lazy && st.regular_count() + st.starting < st.cfg.size) {
    start_worker(self, false);
    return;
  }
  if (st.overflow_count() + st.overflow_starting < st.cfg.max_overflow)
    start_worker(self, true);
}

void check_drained(pool_actor* self) {
  auto& st = self->state;
  if (!st.draining || st.drain_waiters.empty())
    return;
  if (st.in_use() == 0) {
    for (auto& rp : st.drain_waiters)
      rp.deliver(caf::unit);
    st.drain_waiters.clear();
  }
}

// Asks the worker supervisor to start worker `id` again after a deliberate
// terminate_child. "running" / "restarting": someone else did (or does) it;
// "not_found": the supervisor was replaced meanwhile, with fresh workers.
void restart_worker(pool_actor* self, caf::actor sup, std::string id, int attempt) {
  self->request(sup, caf::infinite, supervision::restart_child_atom::value, id)
    .then([](caf::actor&) {},
          [self, sup, id, attempt](caf::error& e) {
            using supervision::supervision_errc;
            if (supervision::is(e, supervision_errc::running)
                || supervision::is(e, supervision_errc::restarting)
                || supervision::is(e, supervision_errc::not_found) || self->state.draining)
              return;
            if (attempt < 5)
              self->delayed_send(self, std::chrono::milliseconds(100 * attempt),
                                 replace_atom::value, sup, id, attempt + 1);
          });
}

// The deliberate path, as OTP: terminate_child, then restart_child for a
// permanent worker (a temporary overflow one is just gone). The supervisor
// counts neither toward its restart intensity. (retire) goes first so that
// the worker kills its process at once: a worker stuck in Python could not
// read a shutdown frame, and the supervisor serves one request at a time.
// `limit`: the hard limit it goes for (limits.hpp); its callers in flight
// get that error, and are counted under it.
void replace(pool_actor* self, worker_entry& w, replace_cause cause, caf::error limit = {}) {
  auto& st = self->state;
  if (w.st == wstate::retiring)
    return;
  st.end_trial(w.trial, false);  // a trial on a worker that had to go failed
  if (limit) {
    count_error(self, *code_of(limit));
    st.results[to_string(*code_of(limit))] += w.jobs.size();
  }
  fail_jobs(self, w, true);
  w.st = wstate::retiring;
  remove_idle(st, w.hdl.address());
  release(w);
  ++st.replaced[to_string(cause)];
  // A recycled worker is idle and sound: its supervisor stops it gracefully.
  if (limit)
    self->send(w.hdl, retire_atom::value, std::move(limit));
  else if (!is_recycling(cause))
    self->send(w.hdl, retire_atom::value);
  auto sup = st.links->worker_sup();
  if (!sup) {  // a pool on its own (no worker supervisor): just stop it
    self->send_exit(w.hdl, caf::exit_reason::user_shutdown);
    return;
  }
  auto restart = !w.overflow;
  auto id = w.id;
  self->request(sup, caf::infinite, supervision::terminate_child_atom::value, w.hdl)
    .then(
      [self, sup, id, restart] {
        if (restart && !self->state.draining)
          restart_worker(self, sup, id, 1);
      },
      [](caf::error&) {
        // not_found: it exited by itself first; the supervisor handles that.
      });
}

// -- per-worker drain: before any deliberate stop -----------------------------

// A leaving worker's (leaving) is answered: its staged stop may begin.
void release(worker_entry& w) {
  for (auto& rp : w.released)
    rp.deliver(caf::unit);
  w.released.clear();
}

// A scaled-down worker is stopped and its spec deleted, so the supervisor
// neither restarts it nor lists it. Neither call spends restart intensity.
void remove_worker(pool_actor* self, const worker_entry& w) {
  auto sup = self->state.links->worker_sup();
  if (!sup) {
    self->send_exit(w.hdl, caf::exit_reason::user_shutdown);
    return;
  }
  auto id = w.id;
  self->request(sup, caf::infinite, supervision::terminate_child_atom::value, w.hdl)
    .then([self, sup, id] { self->request(sup, caf::infinite, supervision::delete_child_atom::value, id)
                              .then([] {}, [](caf::error&) {}); },
          [](caf::error&) {});
}

// A leaving worker holds nothing of the pool's any more (no request, lease
// or ping): its stop goes on, and its exit is one the pool expects.
void depart(pool_actor* self, worker_entry& w) {
  auto& st = self->state;
  w.st = wstate::retiring;
  remove_idle(st, w.hdl.address());
  release(w);
  if (w.remove_on_leave)
    remove_worker(self, w);
  check_drained(self);
}

// Strict waiters bound to a worker that is gone or leaving may take any
// worker now: an idle one takes the queue's head.
void requeue_on_idle(pool_actor* self) {
  auto& st = self->state;
  if (!st.idle.empty() && !st.queue.empty()) {
    auto a = st.idle.back();
    st.idle.pop_back();
    worker_free(self, st.workers[a]);
  }
}

// Stop routing to `w` (its session affinity goes too); it departs at once
// when it holds nothing, else when its last request, lease or ping ends
// (worker_free), bounded by the worker's drain_timeout.
void start_leaving(pool_actor* self, worker_entry& w) {
  auto& st = self->state;
  auto a = w.hdl.address();
  w.leaving = true;
  remove_idle(st, a);
  for (auto it = st.affinity.begin(); it != st.affinity.end();)
    it = it->second == a ? st.affinity.erase(it) : std::next(it);
  if (w.st == wstate::idle || w.st == wstate::grace)
    depart(self, w);
  requeue_on_idle(self);
}

// -- resize (scale): grow by starting workers, shrink by draining the idlest --

// Regular workers that serve on (not leaving, not on their way out).
std::size_t serving_count(const pool_state& st) {
  std::size_t n = 0;
  for (auto& [a, w] : st.workers)
    if (!w.overflow && !w.leaving && w.st != wstate::retiring)
      ++n;
  return n;
}

// A resize is done once the pool serves with its target (a lazy pool: at
// most its target, the rest start on demand) and every worker it let go
// has gone.
void check_resized(pool_actor* self) {
  auto& st = self->state;
  if (!st.resizing)
    return;
  for (auto& [a, w] : st.workers)
    if (w.remove_on_leave)
      return;
  auto n = serving_count(st);
  if (st.cfg.lazy ? n > st.resizing->to : n != st.resizing->to)
    return;
  auto op = std::move(*st.resizing);
  st.resizing.reset();
  op.rp.deliver(json{{"pool", st.cfg.name}, {"from", op.from}, {"size", op.to}, {"workers", n}});
}

// The idlest first: idle (longest idle first), in its grace, busy with the
// fewest requests in flight, leased last.
std::vector<worker_entry*> idlest_first(pool_state& st) {
  auto rank = [](const worker_entry& w) {
    switch (w.st) {
      case wstate::idle: return 0;
      case wstate::grace: return 1;
      case wstate::busy: return 2;
      default: return 3;
    }
  };
  std::vector<worker_entry*> out;
  for (auto& [a, w] : st.workers)
    if (!w.overflow && !w.leaving && w.st != wstate::retiring)
      out.push_back(&w);
  std::sort(out.begin(), out.end(), [&](const worker_entry* x, const worker_entry* y) {
    if (rank(*x) != rank(*y))
      return rank(*x) < rank(*y);
    if (x->jobs.size() != y->jobs.size())
      return x->jobs.size() < y->jobs.size();
    return x->idle_since < y->idle_since;
  });
  return out;
}

// The first "wK" no child of the worker supervisor is called.
std::string free_worker_id(const std::vector<supervision::child_info>& kids,
                           std::unordered_set<std::string>& taken) {
  for (auto& k : kids)
    taken.insert(k.id);
  return take_free_worker_id(taken);
}

// Applies a resize to `to` workers, from the worker supervisor's children:
// regular children running or restarting count; one stopped by an operator
// (status undefined) stays as it was left and does not count.
void apply_resize(pool_actor* self, std::uint64_t op, std::vector<supervision::child_info>& kids) {
  auto& st = self->state;
  if (!st.resizing || st.resizing->id != op)
    return;
  auto to = st.resizing->to;
  std::size_t current = 0;
  std::vector<std::string> restarting;  // not serving: the first to go on a shrink
  for (auto& k : kids) {
    if (k.id.rfind("overflow", 0) == 0 || k.status == supervision::child_status::undefined)
      continue;
    if (k.handle && st.workers.count(k.handle.address())
        && st.workers[k.handle.address()].leaving)
      continue;
    ++current;
    if (k.status == supervision::child_status::restarting)
      restarting.push_back(k.id);
  }
  auto sup = st.links->worker_sup();
  if (to > current && !st.cfg.lazy) {
    std::unordered_set<std::string> taken;
    for (auto n = current; n < to; ++n) {
      auto spec = worker_child_spec(free_worker_id(kids, taken), st.cfg, st.loop, st.links, false);
      self->request(sup, caf::infinite, supervision::start_child_atom::value, std::move(spec))
        .then([](caf::actor&) {}, [](caf::error&) {});
    }
  }
  for (auto n = current; n > to && !restarting.empty(); --n, --current) {
    auto id = restarting.back();
    restarting.pop_back();
    self->request(sup, caf::infinite, supervision::terminate_child_atom::value, id)
      .then([self, sup, id] { self->request(sup, caf::infinite, supervision::delete_child_atom::value, id)
                                .then([] {}, [](caf::error&) {}); },
            [](caf::error&) {});
  }
  if (current > to) {
    auto order = idlest_first(st);
    for (std::size_t i = 0; i < current - to && i < order.size(); ++i) {
      order[i]->remove_on_leave = true;
      // Bounded as a drain the worker asks for: past it, the hard path.
      self->delayed_send(self, st.cfg.drain_timeout, leave_deadline_atom::value,
                         order[i]->hdl.address());
      start_leaving(self, *order[i]);
    }
  }
  check_resized(self);
}

// (scale, n): the pool's size becomes n (status "size"; lazy and restart
// decisions follow it). Answered with {pool, from, size, workers} once done;
// at its deadline (every worker's start and drain fit in it) with
// unavailable saying how far it got.
caf::result<json> start_resize(pool_actor* self, std::size_t n) {
  auto& st = self->state;
  if (n < 1 || n > max_pool_size)
    return make_error(errc::invalid_request, "size: expected an integer in [1, "
                                               + std::to_string(max_pool_size) + "], found "
                                               + std::to_string(n));
  if (st.draining)
    return make_error(errc::shutting_down, "pool " + st.cfg.name + " is shutting down");
  if (st.reloader)
    return make_error(errc::unavailable, "pool " + st.cfg.name + " is being reloaded; "
                                           "try again once that is done");
  if (st.resizing)
    return make_error(errc::unavailable, "pool " + st.cfg.name + " is being resized to "
                                           + std::to_string(st.resizing->to) + " workers; "
                                           "try again once that is done");
  auto sup = st.links->worker_sup();
  if (!sup)
    return make_error(errc::unavailable, "pool " + st.cfg.name + " has no worker supervisor");
  auto op = st.next_resize++;
  st.resizing = pool_state::resize_op{op, st.cfg.size, n, self->make_response_promise()};
  auto rp = st.resizing->rp;
  st.cfg.size = n;
  self->request(sup, caf::infinite, supervision::which_children_atom::value)
    .then([self, op](std::vector<supervision::child_info>& kids) { apply_resize(self, op, kids); },
          [self, op](caf::error& e) {
            auto& st = self->state;
            if (!st.resizing || st.resizing->id != op)
              return;
            st.resizing->rp.deliver(make_error(errc::unavailable, "worker supervisor did not answer: " + describe(e)));
            st.resizing.reset();
          });
  auto budget = st.cfg.worker.init_timeout + st.cfg.drain_timeout + st.cfg.worker_shutdown
                + std::chrono::seconds(5);
  self->delayed_send(self, budget, resize_deadline_atom::value, op);
  return rp;
}

// (reload, surge): a rolling reload (reload.hpp), answered when it ends.
caf::result<json> start_reload(pool_actor* self, std::size_t surge) {
  auto& st = self->state;
  if (surge < 1 || surge > st.cfg.size)
    return make_error(errc::invalid_request, "surge: expected an integer in [1, "
                                               + std::to_string(st.cfg.size) + "] (the pool's size), found "
                                               + std::to_string(surge));
  if (st.draining)
    return make_error(errc::shutting_down, "pool " + st.cfg.name + " is shutting down");
  if (st.reloader)
    return make_error(errc::unavailable, "pool " + st.cfg.name + " is being reloaded already");
  if (st.resizing)
    return make_error(errc::unavailable, "pool " + st.cfg.name + " is being resized; "
                                           "try again once that is done");
  reload_plan plan{st.cfg, st.loop, st.links, surge, caf::actor_cast<caf::actor>(self)};
  st.reloader = spawn_reload(self, std::move(plan));
  st.reload = json{{"state", "starting"}, {"replaced", 0}, {"surge", surge}};
  st.reload_rp = self->make_response_promise<json>();
  self->request(st.reloader, caf::infinite, reload_run_atom::value)
    .then(
      [self](json& r) {
        auto& st = self->state;
        ++st.reloads["ok"];
        st.reloader = nullptr;
        st.reload_rp.deliver(std::move(r));
      },
      [self](caf::error& e) {
        auto& st = self->state;
        ++st.reloads["rolled_back"];
        st.reloader = nullptr;
        st.reload_rp.deliver(std::move(e));
      });
  return st.reload_rp;
}

// -- recycling (recycling.hpp): the policy is there; here only when and how --

replace_cause replace_cause_of(recycle_cause c) {
  switch (c) {
    case recycle_cause::rss: return replace_cause::recycled_rss;
    case recycle_cause::age: return replace_cause::recycled_age;
    default: return replace_cause::recycled_requests;
  }
}

// Called when `w` is free (idle, nothing in flight): retires it when it is
// past one of its limits.
bool recycle_if_due(pool_actor* self, worker_entry& w) {
  auto& st = self->state;
  if (st.draining || !st.recycling.config().enabled())
    return false;
  auto cause = w.recycle.due(w.served, st.now());
  if (cause == recycle_cause::none)
    return false;
  replace(self, w, replace_cause_of(cause));
  check_drained(self);
  return true;
}

// A worker joined: draw its limits, and learn its os pid when RSS counts.
void recycle_join(pool_actor* self, worker_entry& w) {
  auto& st = self->state;
  if (!st.recycling.config().enabled())
    return;
  w.recycle = st.recycling.draw(st.now());
  if (st.recycling.config().max_rss_mb == 0)
    return;
  auto hdl = w.hdl;
  self->request(hdl, caf::infinite, stats_atom::value)
    .then(
      [self, hdl](json& s) {
        auto it = self->state.workers.find(hdl.address());
        if (it != self->state.workers.end() && s.contains("os_pid") && s["os_pid"].is_number_integer())
          it->second.recycle.os_pid = s["os_pid"].get<int>();
      },
      [](caf::error&) {});
}

// The tick: sample every worker's RSS (a busy one over its limit goes when
// it checks in) and retire the idle ones that are due.
void recycle_tick(pool_actor* self) {
  auto& st = self->state;
  if (st.draining)
    return;
  if (st.recycling.config().max_rss_mb > 0)
    for (auto& [a, w] : st.workers) {
      w.recycle.sample_rss();
      // Busy over max_rss_mb: a handler still growing would not stop by
      // itself, so the worker is killed mid-request (out_of_memory).
      if ((w.st == wstate::busy || w.st == wstate::leased) && w.recycle.over_rss())
        replace(self, w, replace_cause::out_of_memory,
                make_error(errc::out_of_memory,
                           "worker " + w.id + " grew to " + std::to_string(w.recycle.rss_bytes >> 20)
                             + " MB resident, past max_rss_mb "
                             + std::to_string(st.recycling.config().max_rss_mb) + ", while busy"));
    }
  auto idle = st.idle;  // replace() edits the list
  for (auto& a : idle) {
    auto it = st.workers.find(a);
    if (it != st.workers.end() && it->second.st == wstate::idle)
      recycle_if_due(self, it->second);
  }
}

// A worker became free: give it to the first waiter that may take it, or
// park it (or stop it, when it is an overflow worker nobody needs).
void worker_free(pool_actor* self, worker_entry& w) {
  auto& st = self->state;
  w.st = wstate::idle;
  w.lease_holder = caf::actor_addr{};
  w.idle_since = st.now();
  st.drop_trial(w.trial);  // a trial whose job ended without an outcome
  if (w.leaving) {
    depart(self, w);
    return;
  }
  if (st.cfg.max_consecutive_failures > 0
      && w.consecutive_faults >= st.cfg.max_consecutive_failures) {
    replace(self, w, replace_cause::failures);
    return;
  }
  if (w.in_grace) {
    w.st = wstate::grace;
    check_drained(self);
    return;
  }
  if (recycle_if_due(self, w))
    return;
  auto a = w.hdl.address();
  for (auto it = st.queue.begin(); it != st.queue.end(); ++it) {
    if (!may_take(st, *it, a))
      continue;
    auto wt = std::move(*it);
    st.queue.erase(it);
    st.queue_deadlines.remove(wt.deadline, wt.id);
    hand_over(self, w, wt);
    fill(self, w);
    return;
  }
  if (w.overflow && !st.draining) {
    auto sup = st.links->worker_sup();
    w.st = wstate::retiring;
    if (sup)  // a request, so the supervisor's answer does not land in our mailbox unasked
      self->request(sup, caf::infinite, supervision::terminate_child_atom::value, w.hdl)
        .then([] {}, [](caf::error&) {});
    else
      self->send_exit(w.hdl, caf::exit_reason::user_shutdown);
    return;
  }
  st.idle.push_back(a);
  check_drained(self);
}

// A worker with room (max_concurrency > 1) takes queued requests, in queue
// order, until it is full; leases wait for a worker that is idle.
void fill(pool_actor* self, worker_entry& w) {
  auto& st = self->state;
  auto a = w.hdl.address();
  for (auto it = st.queue.begin(); it != st.queue.end() && st.has_room(w);) {
    if (it->lease || !may_take(st, *it, a)) {
      ++it;
      continue;
    }
    auto wt = std::move(*it);
    it = st.queue.erase(it);
    st.queue_deadlines.remove(wt.deadline, wt.id);
    hand_over(self, w, wt);
  }
}

// A pooled request left worker `w` (answered, timed out, or never sent):
// free once nothing is left on it, else it takes more from the queue.
void job_left(pool_actor* self, worker_entry& w) {
  if (w.st != wstate::busy)
    return;
  if (w.jobs.empty())
    worker_free(self, w);
  else
    fill(self, w);
}

// The queue's deadline timer, armed only when the pool keeps real time
// (with pool_config::clk set, (timers) fires deadlines instead).
void arm_queue_deadline(pool_actor* self, std::optional<clock_type::time_point> at) {
  if (self->state.own_timers())
    arm_deadline(self, at);
}

// The queue timer armed for `fired` went off (or (timers) came): every
// waiter due by now gets its expiry error.
void expire_queued(pool_actor* self, clock_type::time_point fired) {
  auto& st = self->state;
  for (auto waiter_id : st.queue_deadlines.fire(fired, st.now())) {
    auto it = std::find_if(st.queue.begin(), st.queue.end(),
                           [&](const waiter& w) { return w.id == waiter_id; });
    if (it == st.queue.end())
      continue;
    auto wt = std::move(*it);
    st.queue.erase(it);
    fail(self, wt, wt.expiry,
         "no worker of pool " + st.cfg.name + " became free within "
           + std::to_string(wt.limit.count()) + " ms"
           + (wt.expiry == errc::command_timeout ? " (the request's timeout)" : ""));
  }
  arm_queue_deadline(self, st.queue_deadlines.next());
}

void submit(pool_actor* self, waiter wt) {
  auto& st = self->state;
  if (st.draining) {
    fail(self, wt.rp, errc::shutting_down, "pool " + st.cfg.name + " is shutting down");
    return;
  }
  auto admitted = st.breaker.admit(st.now());
  if (!admitted) {
    fail(self, wt.rp, errc::circuit_open,
         "pool " + st.cfg.name + ": too many worker failures; failing fast");
    return;
  }
  wt.trial = admitted.trial;
  if (st.queue.empty()) {
    auto a = pick_idle(st, wt);
    if (a) {
      hand_over(self, st.workers[a], wt);
      return;
    }
  }
  if (st.queue.size() >= st.cfg.max_queue) {
    fail(self, wt, errc::pool_saturated,
         "pool " + st.cfg.name + ": " + std::to_string(st.queue.size())
           + " requests already waiting");
    return;
  }
  wt.id = st.next_waiter++;
  wt.limit = st.cfg.checkout_timeout;
  if (!wt.lease) {
    auto budget = wt.req.timeout.count() > 0 ? wt.req.timeout : st.cfg.worker.request_timeout;
    if (budget < wt.limit) {
      wt.limit = budget;
      wt.expiry = errc::command_timeout;
    }
  }
  wt.deadline = wt.enqueued + wt.limit;
  arm_queue_deadline(self, st.queue_deadlines.add(wt.deadline, wt.id));
  st.queue.push_back(std::move(wt));
  grow_if_needed(self);
}

// (cancel, ref) from `caller`: a queued request is answered `cancelled`
// here; one on a worker is cancelled there (its slot stays taken until the
// handler ends); one still waiting on the registry is never sent.
void cancel_request(pool_actor* self, const caf::actor_addr& caller, std::uint64_t ref) {
  auto& st = self->state;
  if (ref == 0 || !caller)
    return;
  auto q = std::find_if(st.queue.begin(), st.queue.end(), [&](const waiter& wt) {
    return !wt.lease && wt.req.ref == ref && caf::actor_cast<caf::actor_addr>(wt.rp.source()) == caller;
  });
  if (q != st.queue.end()) {
    auto wt = std::move(*q);
    st.queue.erase(q);
    st.queue_deadlines.remove(wt.deadline, wt.id);
    fail(self, wt, errc::cancelled, "request cancelled by its caller while queued");
    check_drained(self);
    return;
  }
  for (auto& [a, w] : st.workers)
    for (auto& j : w.jobs)
      if (j.ref == ref && j.caller == caller) {
        if (j.sent)
          self->send(w.hdl, cancel_atom::value, ref, caller);
        else
          j.cancelled = true;
        return;
      }
}

// A caller of cancellable requests died: each of them is cancelled.
void cancel_all_of(pool_actor* self, const caf::actor_addr& caller) {
  auto& st = self->state;
  std::vector<std::uint64_t> refs;
  for (auto& wt : st.queue)
    if (!wt.lease && wt.req.ref != 0 && caf::actor_cast<caf::actor_addr>(wt.rp.source()) == caller)
      refs.push_back(wt.req.ref);
  for (auto& [a, w] : st.workers)
    for (auto& j : w.jobs)
      if (j.ref != 0 && j.caller == caller)
        refs.push_back(j.ref);
  for (auto ref : refs)
    cancel_request(self, caller, ref);
}

void on_worker_down(pool_actor* self, const caf::down_msg& dm) {
  auto& st = self->state;
  auto it = st.workers.find(dm.source);
  if (it == st.workers.end())
    return;
  auto& w = it->second;
  // A shutdown exit is one its supervisor asked for (an operator's
  // stop_child or restart_child, a tree stopping): no fault of the worker.
  bool expected = w.st == wstate::retiring || st.draining
                  || supervision::classify(dm.reason) == supervision::exit_class::shutdown;
  if (!expected) {
    // An exit nobody asked for (crash, protocol error, a timed-out worker
    // outside the deliberate path): its supervisor counts it, and so does
    // the breaker.
    ++st.crashes;
    st.end_trial(w.trial, false);
    st.breaker.record_failure(st.now());
    auto code = code_of(dm.reason);
    auto why = code ? (*code == errc::process_exited ? errc::worker_crashed : *code)
                    : errc::worker_crashed;
    if (code || dm.reason != caf::exit_reason::normal)
      count_error(self, why);
    // Each caller in flight on it got that error from the worker.
    st.results[to_string(why)] += w.jobs.size();
    fail_jobs(self, w, true);
  } else {
    st.drop_trial(w.trial);
    fail_jobs(self, w, false);
  }
  remove_idle(st, dm.source);
  for (auto a = st.affinity.begin(); a != st.affinity.end();)
    a = a->second == dm.source ? st.affinity.erase(a) : std::next(a);
  st.workers.erase(it);
  requeue_on_idle(self);
  grow_if_needed(self);
  check_drained(self);
  check_resized(self);
}

void on_holder_down(pool_actor* self, const caf::down_msg& dm) {
  auto& st = self->state;
  for (auto& [a, w] : st.workers) {
    if (w.st != wstate::leased || w.lease_holder != dm.source)
      continue;
    // Ask the worker whether a request is still pending: if so, the
    // reply would go nowhere and the worker is replaced; else it is simply
    // taken back.
    auto hdl = w.hdl;
    self->request(hdl, std::chrono::seconds(5), stats_atom::value)
      .then(
        [self, hdl](json& s) {
          auto it = self->state.workers.find(hdl.address());
          if (it == self->state.workers.end())
            return;
          if (it->second.st != wstate::leased)
            return;
          if (s.value("inflight", 0) > 0)
            replace(self, it->second, replace_cause::lease);
          else
            worker_free(self, it->second);
        },
        [self, hdl](caf::error&) {
          auto it = self->state.workers.find(hdl.address());
          if (it != self->state.workers.end() && it->second.st == wstate::leased)
            replace(self, it->second, replace_cause::lease);
        });
  }
}

// Requests in flight: a busy worker's jobs, or 1 for its health ping.
std::size_t in_flight(const pool_state& st) {
  std::size_t n = 0;
  for (auto& [a, w] : st.workers)
    if (w.st == wstate::busy)
      n += std::max<std::size_t>(1, w.jobs.size());
  return n;
}

// Workers draining before a deliberate stop, not yet departed.
std::size_t leaving_count(const pool_state& st) {
  std::size_t n = 0;
  for (auto& [a, w] : st.workers)
    if (w.leaving && w.st != wstate::retiring)
      ++n;
  return n;
}

json status_of(pool_actor* self) {
  auto& st = self->state;
  json workers = json::array();
  for (auto& [a, w] : st.workers) {
    workers.push_back({{"id", w.id},
                       {"state", w.leaving && w.st != wstate::retiring ? "draining" : to_string(w.st)},
                       {"overflow", w.overflow},
                       {"served", w.served},
                       {"consecutive_faults", w.consecutive_faults},
                       {"inflight", w.jobs.size()},
                       {"in_grace", w.in_grace}});
    if (w.recycle.rss_bytes > 0)  // sampled for max_rss_mb only
      workers.back()["rss_mb"] = static_cast<double>(w.recycle.rss_bytes) / (1024.0 * 1024.0);
  }
  std::uint64_t replaced = 0;
  for (auto& [cause, n] : st.replaced)
    replaced += n;
  auto now = st.now();
  return json{
    {"name", st.cfg.name},
    {"size", st.cfg.size},
    {"max_overflow", st.cfg.max_overflow},
    {"ready", st.ready},
    {"draining", st.draining},
    {"workers", st.workers.size()},
    {"idle", st.count(wstate::idle)},
    {"busy", st.count(wstate::busy)},
    {"leased", st.count(wstate::leased)},
    {"draining_workers", leaving_count(st)},
    {"overflow", st.overflow_count()},
    {"queue", st.queue.size()},
    {"in_flight", in_flight(st)},
    {"checkouts", st.checkouts},
    {"completed", st.completed},
    {"checkout_wait_ms_avg",
     st.checkouts ? static_cast<double>(st.wait_total_us) / st.checkouts / 1000.0 : 0.0},
    {"checkout_wait_ms_max", static_cast<double>(st.wait_max_us) / 1000.0},
    {"restarts", st.crashes + replaced},  // every worker lost and started again
    {"crashes", st.crashes},
    {"replaced", st.replaced},
    {"timeouts", {{"soft", st.soft_timeouts}, {"hard", st.hard_timeouts}}},
    {"grace", st.count(wstate::grace)},
    {"errors", st.errors},
    {"requests", st.results},
    {"latency", st.latency.to_json()},
    {"sessions", st.affinity.size()},
    {"circuit", to_string(st.breaker.current(now))},
    {"circuit_opened", st.breaker.opened_count()},
    {"circuit_trials", st.breaker.trials_in_flight()},
    {"reload", st.reload},
    {"reloads", st.reloads},
    {"worker_list", std::move(workers)},
  };
}

void idle_pings(pool_actor* self) {
  auto& st = self->state;
  auto now = st.now();
  std::vector<caf::actor_addr> due;
  for (auto a : st.idle)
    if (now - st.workers[a].idle_since >= st.cfg.worker_idle_timeout)
      due.push_back(a);
  for (auto& a : due) {
    auto& w = st.workers[a];
    remove_idle(st, a);
    w.st = wstate::busy;
    // Not pooled: the answer comes here, not to a client. A ping that fails
    // (times out) is a worker-level fault: the breaker hears it and the
    // worker is replaced on purpose.
    auto ping = make_command("ping", json::object(), std::nullopt, st.cfg.worker.init_timeout);
    auto hdl = w.hdl;
    self->request(w.hdl, caf::infinite, exec_atom::value, std::move(ping))
      .then(
        [self, hdl](json&) {
          auto it = self->state.workers.find(hdl.address());
          if (it != self->state.workers.end() && it->second.st == wstate::busy)
            worker_free(self, it->second);
        },
        [self, hdl](caf::error& e) {
          auto& st = self->state;
          auto it = st.workers.find(hdl.address());
          if (it == st.workers.end() || it->second.st == wstate::retiring)
            return;
          // A worker that crashed or broke the protocol answers with that
          // error just before it exits: the down message tells.
          if (!is(e, errc::command_timeout))
            return;
          st.breaker.record_failure(st.now());
          replace(self, it->second, replace_cause::health);
          check_drained(self);
        });
  }
}

// (done, ok, tag): a pooled request on the sender was answered.
// `result`: the class the caller got when it is not "ok" / "python_error"
// by `ok` (error.hpp reply_class: invalid_request, result_too_deep). Each
// is an answer: no fault, no breaker input.
void on_done(pool_actor* self, bool ok, std::uint64_t tag, const std::string& result = {}) {
  auto& st = self->state;
  auto it = st.workers.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
  if (it == st.workers.end() || it->second.st != wstate::busy)
    return;
  auto& w = it->second;
  auto j = take_job(w, tag);
  if (!j)
    return;
  ++st.completed;
  const std::string cls = !result.empty() ? result : ok ? "ok" : to_string(errc::python_error);
  ++st.results[cls];
  st.latency.observe(st.now() - j->submitted);
  // An answer is an answer: a Python exception (ok false) is the caller's
  // business, not a worker fault, and a trial that got one shows the pool
  // serves again.
  if (cls != "ok")
    ++st.errors[cls];
  settle(self, *j, ok);
  w.consecutive_faults = 0;
  st.end_trial(j->trial, true);
  if (cls == to_string(errc::out_of_memory)) {
    // Past worker.limits memory_mb: the worker goes (its heap may be left
    // fragmented, its other requests near the limit too), on purpose.
    replace(self, w, replace_cause::out_of_memory,
            make_error(errc::out_of_memory, "worker " + w.id + " ran out of memory (worker.limits memory_mb)"));
    check_drained(self);
    return;
  }
  job_left(self, w);
  check_drained(self);
}

// (timedout, pooled, tag): a request on the sender timed out (its caller
// has command_timeout) and the worker is in its grace. A pooled request's
// job ends here; the worker takes no more work until it recovers.
void on_timedout(pool_actor* self, bool pooled, std::uint64_t tag) {
  auto& st = self->state;
  auto it = st.workers.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
  if (it == st.workers.end() || it->second.st == wstate::retiring)
    return;
  auto& w = it->second;
  count_error(self, errc::command_timeout);
  w.in_grace = true;
  if (!pooled) {
    // A leased worker's (its checkin decides), a health ping's (handled
    // there), or a direct request to an idle worker: out of rotation.
    if (w.st == wstate::idle) {
      remove_idle(st, w.hdl.address());
      w.st = wstate::grace;
    }
    return;
  }
  ++w.consecutive_faults;
  if (auto j = take_job(w, tag)) {
    // A trial passes only if its worker answers in time. The change is
    // kept: the command may still have taken effect on the worker.
    ++st.results[to_string(errc::command_timeout)];
    settle(self, *j, true);
    st.end_trial(j->trial, false);
  }
  job_left(self, w);  // parks it in grace (or replaces it) once nothing is left
  check_drained(self);
}

// A pool restarted on its own (an operator's restart_child of it; rest_for_one
// restarts the workers after a pool that died, so none run then) takes over
// the workers still running under its supervisor, which serve the old pool.
void adopt_workers(pool_actor* self) {
  auto sup = self->state.links->worker_sup();
  if (!sup)
    return;
  self->request(sup, std::chrono::seconds(30), supervision::which_children_atom::value)
    .then(
      [self](std::vector<supervision::child_info>& kids) {
        for (auto& k : kids)
          if (k.handle && !self->state.workers.count(k.handle.address()))
            self->send(k.handle, adopt_atom::value, caf::actor_cast<caf::actor>(self));
      },
      [](caf::error&) {});
}

// A worker of ours is up (started, recovered from its replacement, or
// adopted): it joins the books and takes work.
void worker_up(pool_actor* self, std::string id, bool overflow, std::shared_ptr<worker_port> port) {
  auto& st = self->state;
  auto hdl = caf::actor_cast<caf::actor>(self->current_sender());
  if (!hdl || st.workers.count(hdl.address()))
    return;
  self->monitor(hdl);
  if (overflow && st.overflow_starting > 0)
    --st.overflow_starting;
  else if (!overflow && st.starting > 0)
    --st.starting;
  auto& w = st.workers[hdl.address()];
  w.hdl = hdl;
  w.id = std::move(id);
  w.overflow = overflow;
  w.port = std::move(port);
  recycle_join(self, w);
  if (st.draining) {
    w.st = wstate::idle;
    st.idle.push_back(hdl.address());
    return;
  }
  if (!st.ready && st.regular_count() >= st.cfg.size) {
    st.ready = true;
    for (auto& rp : st.ready_waiters)
      rp.deliver(caf::unit);
    st.ready_waiters.clear();
  }
  worker_free(self, w);
  check_resized(self);
}

caf::behavior pool_impl(pool_actor* self, pool_config cfg, std::shared_ptr<bridge::io_loop> loop,
                        std::shared_ptr<pool_links> links) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.loop = std::move(loop);
  st.links = std::move(links);
  st.breaker = circuit_breaker(st.cfg.circuit);
  st.ready = st.cfg.lazy || st.cfg.size == 0;
  // Asked to stop (by the pool supervisor, or a whole tree going down):
  // nobody queued here may be left without an answer. CAF 0.17 does not
  // tell a caller when a promise is dropped, so answer every waiter now.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    st.draining = true;
    fail_queued(self, "is stopping");
    for (auto& rp : st.ready_waiters)
      rp.deliver(make_error(errc::shutting_down, "pool " + st.cfg.name + " is stopping"));
    st.ready_waiters.clear();
    for (auto& rp : st.drain_waiters)
      rp.deliver(caf::unit);
    st.drain_waiters.clear();
    for (auto& [a, w] : st.workers)
      release(w);
    if (st.resizing)
      st.resizing->rp.deliver(make_error(errc::shutting_down, "pool " + st.cfg.name + " is stopping"));
    if (st.reloader) {  // it ends too (reload.hpp: what it leaves behind)
      st.reload_rp.deliver(make_error(errc::shutting_down, "pool " + st.cfg.name + " is stopping"));
      self->send_exit(st.reloader, msg.reason);
    }
    if (st.own_registry)
      self->send_exit(st.own_registry, msg.reason);
    self->quit(msg.reason);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    // A caller may be one of our own workers (a handler's host call to its
    // own pool): both apply.
    if (self->state.callers.erase(dm.source) > 0)
      cancel_all_of(self, dm.source);
    if (self->state.workers.count(dm.source)) {
      on_worker_down(self, dm);
      return;
    }
    on_holder_down(self, dm);
  });
  // Session state lives in the registry, so it outlives this pool; without
  // one, the pool keeps a private registry that goes with it.
  if (!st.cfg.registry) {
    st.own_registry = spawn_session_registry(self, session_registry_config{});
    self->link_to(st.own_registry);
  }
  current_registry(self);
  adopt_workers(self);
  if (st.cfg.worker_idle_timeout.count() > 0 && st.own_timers())
    self->delayed_send(self, st.cfg.worker_idle_timeout, tick_atom::value);
  st.recycling = recycler(st.cfg.recycle);
  if (st.cfg.recycle.needs_tick() && st.own_timers())
    self->delayed_send(self, st.cfg.recycle.tick_interval(), recycle_atom::value);

  return {
    [self](ready_atom) -> caf::result<void> {
      if (self->state.ready)
        return caf::unit;
      if (self->state.config_error)
        return self->state.config_error;
      self->state.ready_waiters.push_back(self->make_response_promise());
      return caf::delegated<void>();
    },
    [self](exec_atom, command_request& req) -> caf::result<json> {
      // Before anything copies, stores (the registry's session state) or
      // writes the args: an actor may send anything.
      if (auto max = self->state.cfg.worker.max_json_depth; bridge::value_depth_exceeds(req.args, max)) {
        auto rp = self->make_response_promise();
        fail(self, rp, errc::invalid_request, bridge::depth_message("args", max));
        return caf::delegated<json>();
      }
      waiter wt;
      wt.enqueued = self->state.now();
      wt.session = req.session_id;
      wt.req = std::move(req);
      wt.rp = self->make_response_promise();
      if (wt.req.ref != 0) {
        // A cancellable request: its caller's death cancels it.
        // (The promise took the sender out of the message: ask it.)
        auto caller = caf::actor_cast<caf::actor_addr>(wt.rp.source());
        if (caller && self->state.callers.insert(caller).second)
          self->monitor(caller);
      }
      submit(self, std::move(wt));
      return caf::delegated<json>();
    },
    [self](cancel_atom, std::uint64_t ref) {
      cancel_request(self, caf::actor_cast<caf::actor_addr>(self->current_sender()), ref);
    },
    [self](checkout_atom, std::optional<std::string>& session) -> caf::result<caf::actor> {
      waiter wt;
      wt.enqueued = self->state.now();
      wt.lease = true;
      wt.session = std::move(session);
      wt.holder = self->current_sender() ? caf::actor_cast<caf::actor_addr>(self->current_sender())
                                         : caf::actor_addr{};
      wt.rp = self->make_response_promise();
      auto reg = wt.session ? current_registry(self) : caf::actor{};
      if (!reg) {
        submit(self, std::move(wt));
        return caf::delegated<caf::actor>();
      }
      // A lease in a session: the registry admits the session first (a new
      // one must fit under max_sessions); the lease's requests bypass prepare.
      auto sid = *wt.session;
      auto held = std::make_shared<waiter>(std::move(wt));
      self->request(reg, caf::infinite, sess_use_atom::value, sid)
        .then([self, held] { submit(self, std::move(*held)); },
              [self, held](caf::error& e) {
                if (is(e, errc::resource_exhausted))
                  fail(self, *held, errc::resource_exhausted, detail_of(e));
                else
                  fail(self, *held, errc::unavailable,
                       "session registry did not answer: " + describe(e));
              });
      return caf::delegated<caf::actor>();
    },
    [self](checkin_atom, caf::actor& worker, bool ok) {
      auto it = self->state.workers.find(worker.address());
      if (it == self->state.workers.end() || it->second.st != wstate::leased)
        return;
      auto& w = it->second;
      if (w.lease_holder)
        self->demonitor(w.lease_holder);
      // The holder judges its lease: ok, or the worker failed it (a worker
      // fault, not a Python exception, which is an answer like any other).
      w.consecutive_faults = ok ? 0 : w.consecutive_faults + 1;
      self->state.end_trial(w.trial, ok);
      worker_free(self, w);
    },
    [self](worker_up_atom, std::string& id, bool overflow) {
      worker_up(self, std::move(id), overflow, nullptr);
    },
    [self](worker_up_atom, std::string& id, bool overflow, std::shared_ptr<worker_port>& port) {
      worker_up(self, std::move(id), overflow, std::move(port));
    },
    [self](done_atom, bool ok, std::uint64_t tag) { on_done(self, ok, tag); },
    [self](done_atom, bool ok, std::uint64_t tag, const std::string& result) {
      on_done(self, ok, tag, result);
    },
    [self](done_atom, bool ok) { on_done(self, ok, 0); },
    [self](timedout_atom, bool pooled) { on_timedout(self, pooled, 0); },
    [self](timedout_atom, bool pooled, std::uint64_t tag) { on_timedout(self, pooled, tag); },
    [self](limit_atom, caf::error& why) {
      // Its process was ended by a hard limit (SIGXCPU): replaced on purpose.
      auto it = self->state.workers.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (it != self->state.workers.end() && is(why, errc::cpu_limit))
        replace(self, it->second, replace_cause::cpu_limit, std::move(why));
    },
    [self](leaving_atom) -> caf::result<void> {
      // A worker asked to stop (its supervisor's terminate_child: an
      // operator's restart or stop, a pool supervisor stopping) drains
      // first. A stopping pool (drained or given up) lets it go at once.
      auto& st = self->state;
      auto it = st.workers.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (it == st.workers.end() || st.draining || it->second.st == wstate::retiring)
        return caf::unit;
      auto rp = self->make_response_promise();
      it->second.released.push_back(rp);
      if (!it->second.leaving)
        start_leaving(self, it->second);
      return caf::delegated<void>();
    },
    [self](scale_atom, std::size_t n) -> caf::result<json> { return start_resize(self, n); },
    [self](reload_atom, std::size_t surge) -> caf::result<json> { return start_reload(self, surge); },
    [self](reload_progress_atom, json& p) { self->state.reload = std::move(p); },
    [self](leave_deadline_atom, caf::actor_addr& a) {
      // Still holding a request: it is stopped anyway; the worker's staged
      // stop answers what it still has (shutting_down).
      auto it = self->state.workers.find(a);
      if (it != self->state.workers.end() && it->second.leaving && it->second.st != wstate::retiring)
        depart(self, it->second);
    },
    [self](resize_deadline_atom, std::uint64_t op) {
      auto& st = self->state;
      if (!st.resizing || st.resizing->id != op)
        return;
      st.resizing->rp.deliver(make_error(
        errc::unavailable, "pool " + st.cfg.name + " serves with " + std::to_string(serving_count(st))
                             + " of " + std::to_string(st.resizing->to)
                             + " workers so far; the resize goes on"));
      st.resizing.reset();
    },
    [self](recovered_atom) {
      // Every late reply came within the grace: the worker is sound.
      auto& st = self->state;
      auto it = st.workers.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (it == st.workers.end() || it->second.st == wstate::retiring)
        return;
      it->second.in_grace = false;
      if (it->second.st == wstate::grace)
        worker_free(self, it->second);
    },
    [self](stuck_atom) {
      // No reply within the grace: replaced on purpose.
      auto& st = self->state;
      auto it = st.workers.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (it == st.workers.end())
        return;
      ++st.hard_timeouts;
      replace(self, it->second, replace_cause::timeout);
      check_drained(self);
    },
    [self](soft_timeout_atom) { ++self->state.soft_timeouts; },
    [self](init_fail_atom, const std::string&, const caf::error& err) {
      // A worker that never came up: it exits with init_failed (an exit its
      // supervisor counts); the breaker hears of it here.
      count_error(self, errc::init_failed);
      self->state.breaker.record_failure(self->state.now());
      // A configuration error (a handler module that does not import) will
      // not heal by restarting: whoever waits for this pool to get ready
      // (node::start) hears it now, in the worker's one line, instead of
      // after the restarts have run the tree out of intensity.
      auto& st = self->state;
      if (is(err, errc::invalid_config) && !st.ready) {
        st.config_error = err;
        for (auto& rp : st.ready_waiters)
          rp.deliver(err);
        st.ready_waiters.clear();
      }
    },
    [self](replace_atom, caf::actor& sup, std::string& id, int attempt) {
      restart_worker(self, sup, id, attempt);
    },
    [self](deadline_atom, std::int64_t at_ns) {
      expire_queued(self, deadline_book::from_ns(at_ns));
    },
    [self](timers_atom) {
      // Time moved by hand (pool_config::clk): fire what is due by now.
      auto& st = self->state;
      expire_queued(self, st.now());
      if (st.cfg.worker_idle_timeout.count() > 0 && !st.draining)
        idle_pings(self);
      if (st.cfg.recycle.needs_tick())
        recycle_tick(self);
    },
    [self](versions_atom, const std::string& pool, std::optional<std::string>& sid,
           std::uint64_t version) {
      // Pushed by the registry when state changed through any pool: only
      // what this pool asked about before is kept (no entry means ask).
      auto& st = self->state;
      if (caf::actor_cast<caf::actor>(self->current_sender()) != st.registry)
        return;
      if (!sid) {
        if (pool == st.cfg.name && st.default_version)
          st.default_version = version;
        return;
      }
      auto it = st.session_versions.find(*sid);
      if (it != st.session_versions.end())
        it->second = version;
    },
    [self](tick_atom) {
      if (!self->state.draining)
        idle_pings(self);
      self->delayed_send(self, self->state.cfg.worker_idle_timeout, tick_atom::value);
    },
    [self](recycle_atom) {
      recycle_tick(self);
      self->delayed_send(self, self->state.cfg.recycle.tick_interval(), recycle_atom::value);
    },
    [self](drain_atom) -> caf::result<void> {
      auto& st = self->state;
      st.draining = true;
      fail_queued(self, "is shutting down");
      if (st.in_use() == 0)
        return caf::unit;
      st.drain_waiters.push_back(self->make_response_promise());
      self->delayed_send(self, st.cfg.drain_timeout, drain_atom::value, true);
      return caf::delegated<void>();
    },
    [self](drain_atom, bool) {
      // The drain timeout: stop waiting for stragglers.
      for (auto& rp : self->state.drain_waiters)
        rp.deliver(caf::unit);
      self->state.drain_waiters.clear();
    },
    [self](status_atom) -> json { return status_of(self); },
    [self](stats_atom) -> json { return status_of(self); },
    [self](workers_atom) -> std::vector<caf::actor> {
      std::vector<caf::actor> out;
      for (auto& [a, w] : self->state.workers)
        out.push_back(w.hdl);
      return out;
    },
    [self](cleanup_atom, const std::string& sid) {
      // A session ended: forget it here and in every worker.
      auto& st = self->state;
      st.affinity.erase(sid);
      st.session_versions.erase(sid);
      for (auto& [a, w] : st.workers) {
        w.seen_sessions.erase(sid);
        // No timeout: a CAF request timer lives its full span even after the
        // reply, and one per worker per ended session adds up; the worker
        // answers or fails every request itself.
        self->request(w.hdl, caf::infinite, exec_atom::value,
                      make_command("cleanup_session", json{{"session_id", sid}}, sid))
          .then([](json&) {}, [](caf::error&) {});
      }
    },
  };
}

} // namespace

caf::actor spawn_pool(caf::local_actor* ctx, pool_config cfg, std::shared_ptr<bridge::io_loop> loop,
                      std::shared_ptr<pool_links> links) {
  return ctx->spawn(pool_impl, std::move(cfg), std::move(loop), std::move(links));
}

supervision::child_spec worker_child_spec(std::string id, const pool_config& cfg,
                                          std::shared_ptr<bridge::io_loop> loop,
                                          std::shared_ptr<pool_links> links, bool overflow) {
  supervision::child_spec spec;
  spec.id = id;
  auto wcfg = cfg.worker;
  wcfg.id = id;
  wcfg.overflow = overflow;
  wcfg.drain_timeout = cfg.drain_timeout;
  // The pool is looked up at each (re)start: a restarted pool has a new handle.
  spec.start = [wcfg, loop, links,
                starter = cfg.start_worker](caf::local_actor* ctx) -> caf::expected<caf::actor> {
    worker_start_info info{wcfg.id, wcfg.overflow, links->pool(), wcfg};
    info.worker.pool = info.pool;
    if (starter)
      return starter(ctx, info);
    return spawn_worker(ctx, loop, std::move(info.worker));
  };
  // Overflow and lazy workers come and go on demand; the fixed ones are permanent.
  spec.restart = overflow ? supervision::restart_type::temporary
                          : supervision::restart_type::permanent;
  // A worker drains before its staged stop (worker.hpp): both fit.
  spec.shutdown = supervision::shutdown_spec::timeout(cfg.drain_timeout + cfg.worker_shutdown);
  return spec;
}

supervision::child_spec pool_supervisor_spec(std::string id, pool_config cfg,
                                             std::shared_ptr<bridge::io_loop> loop,
                                             std::function<void(caf::actor)> on_pool,
                                             std::function<caf::actor()> registry) {
  auto links = std::make_shared<pool_links>();
  // start: fork puts the pool's fork server first (rest_for_one): its crash
  // restarts the pool and every worker forked from it.
  std::optional<supervision::child_spec> forker_spec;
  if (cfg.worker.start == "fork" && cfg.worker.module == "dspex_worker") {
    cfg.worker.forker = std::make_shared<bridge::fork_server_slot>();
    forker_spec = fork_server_child_spec("fork_server", cfg.worker, loop, cfg.worker.forker);
    auto inner = forker_spec->start;
    forker_spec->start = [inner, links](caf::local_actor* ctx) -> caf::expected<caf::actor> {
      auto r = inner(ctx);
      if (r)
        links->set_forker(*r);
      return r;
    };
  }
  supervision::child_spec pool_spec;
  pool_spec.id = "pool";
  pool_spec.start = [cfg, loop, links, on_pool,
                     registry](caf::local_actor* ctx) -> caf::expected<caf::actor> {
    auto c = cfg;
    if (registry)
      c.registry = registry;
    auto p = spawn_pool(ctx, std::move(c), loop, links);
    links->set_pool(p);
    if (on_pool)
      on_pool(p);
    return p;
  };
  pool_spec.shutdown = supervision::shutdown_spec::timeout(cfg.drain_timeout);

  std::vector<supervision::child_spec> workers;
  if (!cfg.lazy)
    for (std::size_t i = 1; i <= cfg.size; ++i)
      workers.push_back(worker_child_spec("w" + std::to_string(i), cfg, loop, links, false));
  supervision::supervisor_flags wflags;
  wflags.strat = supervision::strategy::one_for_one;
  wflags.intensity = cfg.worker_intensity > 0 ? cfg.worker_intensity
                                              : static_cast<int>(std::max<std::size_t>(3, cfg.size));
  wflags.period = cfg.worker_period;
  auto worker_sup = supervision::supervisor_child("workers", wflags, std::move(workers));
  auto inner = worker_sup.start;
  worker_sup.start = [inner, links](caf::local_actor* ctx) -> caf::expected<caf::actor> {
    auto r = inner(ctx);
    if (r)
      links->set_worker_sup(*r);
    return r;
  };

  supervision::supervisor_flags flags;
  flags.strat = supervision::strategy::rest_for_one;
  flags.intensity = 3;
  flags.period = std::chrono::milliseconds(5000);
  std::vector<supervision::child_spec> children;
  if (forker_spec)
    children.push_back(std::move(*forker_spec));
  children.push_back(std::move(pool_spec));
  children.push_back(std::move(worker_sup));
  return supervision::supervisor_child(std::move(id), flags, std::move(children));
}

} // namespace dspex
