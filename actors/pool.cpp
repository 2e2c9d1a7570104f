#include <dspex/actors/pool.hpp>

#include <dspex/actors/fork_server_child.hpp>

#include <dspex/actors/error.hpp>
#include <dspex/actors/session_registry.hpp>
#include <dspex/actors/session_state.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <unordered_map>

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
  timeout, health, failures, lease, recycled_requests, recycled_rss, recycled_age };

const char* to_string(replace_cause c) {
  switch (c) {
    case replace_cause::timeout: return "timeout";
    case replace_cause::health: return "health";
    case replace_cause::failures: return "failures";
    case replace_cause::lease: return "lease";
    case replace_cause::recycled_requests: return replaced_key(recycle_cause::requests);
    case replace_cause::recycled_rss: return replaced_key(recycle_cause::rss);
    case replace_cause::recycled_age: return replaced_key(recycle_cause::age);
  }
  return "?";
}

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
  std::uint64_t trial = 0;   // breaker ticket of the job it serves (0: none)
  clock_type::time_point idle_since = clock_type::now();
  std::uint64_t served = 0;
  /// What it has seen of each session's state and of the pool default LM
  /// (versions of the current registry's session_book).
  std::unordered_map<std::string, std::uint64_t> seen_sessions;
  std::uint64_t seen_default = 0;
  std::uint64_t change = 0;  // session change its request makes, to settle
  recycle_budget recycle;    // its recycling limits (recycling.hpp)
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
  clock_type::time_point enqueued = clock_type::now();
};

struct pool_state {
  pool_config cfg;
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<pool_links> links;
  std::unordered_map<caf::actor_addr, worker_entry> workers;
  std::deque<caf::actor_addr> idle;
  std::deque<waiter> queue;
  std::unordered_map<std::string, caf::actor_addr> affinity;
  // The session registry last used (a new one is announced to) and the
  // private one of a pool configured without a registry.
  caf::actor registry;
  caf::actor own_registry;
  std::vector<caf::response_promise> ready_waiters;
  std::vector<caf::response_promise> drain_waiters;
  bool ready = false;
  bool draining = false;
  std::uint64_t next_waiter = 1;
  std::uint64_t next_worker = 1;    // names for lazy and overflow workers
  std::size_t starting = 0;         // lazy workers asked for, not yet up
  std::size_t overflow_starting = 0;
  circuit_breaker breaker;
  recycler recycling;

  // -- metrics --
  std::uint64_t checkouts = 0;
  std::uint64_t wait_total_us = 0;
  std::uint64_t wait_max_us = 0;
  std::uint64_t crashes = 0;  // worker exits nobody asked for
  std::map<std::string, std::uint64_t> replaced{
    {"timeout", 0}, {"health", 0}, {"failures", 0}, {"lease", 0},
    {"recycled_requests", 0}, {"recycled_rss", 0}, {"recycled_age", 0}};
  std::uint64_t completed = 0;
  std::map<std::string, std::uint64_t> errors;

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

  /// The breaker hears how a trial ended, once.
  void end_trial(std::uint64_t& ticket, bool ok) {
    if (ticket != 0)
      breaker.trial_done(clock_type::now(), ticket, ok);
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
    if (reg)
      self->send(reg, pool_up_atom::value, st.cfg.name, st.cfg.default_lm);
  }
  return reg;
}

void worker_free(pool_actor* self, worker_entry& w);

// The registry hears how the change of a worker's request ended.
void settle(pool_actor* self, worker_entry& w, bool ok) {
  if (w.change != 0 && self->state.registry)
    self->send(self->state.registry, settle_atom::value, w.change, ok);
  w.change = 0;
}

// The one hook before dispatch: the registry records what the request
// changes in its session and says what this worker must be replayed first
// (session_state.hpp). The worker stays busy meanwhile.
void dispatch(pool_actor* self, worker_entry& w, waiter& wt) {
  auto reg = current_registry(self);
  if (!reg) {
    wt.rp.delegate(w.hdl, exec_atom::value, std::move(wt.req));
    return;
  }
  seen_versions seen{0, w.seen_default};
  if (wt.session) {
    auto it = w.seen_sessions.find(*wt.session);
    if (it != w.seen_sessions.end())
      seen.session = it->second;
  }
  auto hdl = w.hdl;
  auto session = wt.session;
  auto rp = std::move(wt.rp);
  // No deadline: the registry is local and always answers (or is gone, and
  // CAF answers request_receiver_down); a timer per request would hold
  // memory for its whole span (CAF 0.17 cannot cancel it).
  self->request(reg, caf::infinite, prepare_atom::value, self->state.cfg.name,
                std::move(wt.req), seen)
    .then(
      [self, hdl, session, rp](session_plan& plan) mutable {
        auto it = self->state.workers.find(hdl.address());
        if (it != self->state.workers.end()) {
          if (session)
            it->second.seen_sessions[*session] = plan.seen.session;
          it->second.seen_default = plan.seen.defaults;
          it->second.change = plan.change;
        }
        // In order before the request; their replies come here and are
        // dropped (a failure shows in the request's own answer).
        for (auto& c : plan.replay)
          self->request(hdl, caf::infinite, exec_atom::value, std::move(c))
            .then([](json&) {}, [](caf::error&) {});
        rp.delegate(hdl, exec_atom::value, std::move(plan.request));
      },
      [self, hdl, rp](caf::error& e) mutable {
        fail(self, rp, errc::unavailable, "session registry did not answer: " + describe(e));
        auto it = self->state.workers.find(hdl.address());
        if (it != self->state.workers.end() && it->second.st == wstate::busy)
          worker_free(self, it->second);
      });
}

void hand_over(pool_actor* self, worker_entry& w, waiter& wt) {
  auto& st = self->state;
  auto waited = duration_cast<std::chrono::microseconds>(clock_type::now() - wt.enqueued).count();
  ++st.checkouts;
  st.wait_total_us += static_cast<std::uint64_t>(waited);
  st.wait_max_us = std::max(st.wait_max_us, static_cast<std::uint64_t>(waited));
  ++w.served;
  w.trial = wt.trial;
  wt.trial = 0;
  if (wt.session)
    st.affinity[*wt.session] = w.hdl.address();
  if (wt.lease) {
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

caf::actor_addr pick_idle(pool_state& st, const waiter& wt) {
  if (wt.session) {
    auto it = st.affinity.find(*wt.session);
    if (it != st.affinity.end()) {
      auto w = st.workers.find(it->second);
      if (w != st.workers.end() && w->second.st == wstate::idle) {
        remove_idle(st, it->second);
        return it->second;
      }
      if (st.cfg.affinity == affinity_mode::strict && w != st.workers.end())
        return {};
    }
  }
  if (st.idle.empty())
    return {};
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
void replace(pool_actor* self, worker_entry& w, replace_cause cause) {
  auto& st = self->state;
  if (w.st == wstate::retiring)
    return;
  st.end_trial(w.trial, false);  // a trial on a worker that had to go failed
  w.st = wstate::retiring;
  remove_idle(st, w.hdl.address());
  ++st.replaced[to_string(cause)];
  // A recycled worker is idle and sound: its supervisor stops it gracefully.
  if (!is_recycling(cause))
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
  auto cause = w.recycle.due(w.served, clock_type::now());
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
  w.recycle = st.recycling.draw(clock_type::now());
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
    for (auto& [a, w] : st.workers)
      w.recycle.sample_rss();
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
  w.idle_since = clock_type::now();
  st.drop_trial(w.trial);  // a trial whose job ended without an outcome
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
    hand_over(self, w, wt);
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

void submit(pool_actor* self, waiter wt) {
  auto& st = self->state;
  if (st.draining) {
    fail(self, wt.rp, errc::shutting_down, "pool " + st.cfg.name + " is shutting down");
    return;
  }
  auto admitted = st.breaker.admit(clock_type::now());
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
  self->delayed_send(self, wt.limit, timeout_atom::value, wt.id);
  st.queue.push_back(std::move(wt));
  grow_if_needed(self);
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
    st.breaker.record_failure(clock_type::now());
    if (auto code = code_of(dm.reason))
      count_error(self, *code == errc::process_exited ? errc::worker_crashed : *code);
    else if (dm.reason != caf::exit_reason::normal)
      count_error(self, errc::worker_crashed);
  } else {
    st.drop_trial(w.trial);
  }
  settle(self, w, false);  // its caller got an error
  remove_idle(st, dm.source);
  for (auto a = st.affinity.begin(); a != st.affinity.end();)
    a = a->second == dm.source ? st.affinity.erase(a) : std::next(a);
  st.workers.erase(it);
  // Strict waiters bound to the dead worker may now take any worker.
  if (!st.idle.empty() && !st.queue.empty()) {
    auto a = st.idle.back();
    st.idle.pop_back();
    worker_free(self, st.workers[a]);
  }
  grow_if_needed(self);
  check_drained(self);
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

json status_of(pool_actor* self) {
  auto& st = self->state;
  json workers = json::array();
  for (auto& [a, w] : st.workers) {
    workers.push_back({{"id", w.id},
                       {"state", to_string(w.st)},
                       {"overflow", w.overflow},
                       {"served", w.served},
                       {"consecutive_faults", w.consecutive_faults},
                       {"in_grace", w.in_grace}});
    if (w.recycle.rss_bytes > 0)  // sampled for max_rss_mb only
      workers.back()["rss_mb"] = static_cast<double>(w.recycle.rss_bytes) / (1024.0 * 1024.0);
  }
  std::uint64_t replaced = 0;
  for (auto& [cause, n] : st.replaced)
    replaced += n;
  auto now = clock_type::now();
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
    {"overflow", st.overflow_count()},
    {"queue", st.queue.size()},
    {"in_flight", st.count(wstate::busy)},
    {"checkouts", st.checkouts},
    {"completed", st.completed},
    {"checkout_wait_ms_avg",
     st.checkouts ? static_cast<double>(st.wait_total_us) / st.checkouts / 1000.0 : 0.0},
    {"checkout_wait_ms_max", static_cast<double>(st.wait_max_us) / 1000.0},
    {"restarts", st.crashes + replaced},  // every worker lost and started again
    {"crashes", st.crashes},
    {"replaced", st.replaced},
    {"grace", st.count(wstate::grace)},
    {"errors", st.errors},
    {"sessions", st.affinity.size()},
    {"circuit", to_string(st.breaker.current(now))},
    {"circuit_opened", st.breaker.opened_count()},
    {"circuit_trials", st.breaker.trials_in_flight()},
    {"worker_list", std::move(workers)},
  };
}

void idle_pings(pool_actor* self) {
  auto& st = self->state;
  auto now = clock_type::now();
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
    command_request ping{"ping", json::object(), std::nullopt, st.cfg.worker.init_timeout, false};
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
          st.breaker.record_failure(clock_type::now());
          replace(self, it->second, replace_cause::health);
          check_drained(self);
        });
  }
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
    if (st.own_registry)
      self->send_exit(st.own_registry, msg.reason);
    self->quit(msg.reason);
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    if (self->state.workers.count(dm.source))
      on_worker_down(self, dm);
    else
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
  if (st.cfg.worker_idle_timeout.count() > 0)
    self->delayed_send(self, st.cfg.worker_idle_timeout, tick_atom::value);
  st.recycling = recycler(st.cfg.recycle);
  if (st.cfg.recycle.needs_tick())
    self->delayed_send(self, st.cfg.recycle.tick_interval(), recycle_atom::value);

  return {
    [self](ready_atom) -> caf::result<void> {
      if (self->state.ready)
        return caf::unit;
      self->state.ready_waiters.push_back(self->make_response_promise());
      return caf::delegated<void>();
    },
    [self](exec_atom, command_request& req) -> caf::result<json> {
      waiter wt;
      wt.session = req.session_id;
      wt.req = std::move(req);
      wt.rp = self->make_response_promise();
      submit(self, std::move(wt));
      return caf::delegated<json>();
    },
    [self](checkout_atom, std::optional<std::string>& session) -> caf::result<caf::actor> {
      waiter wt;
      wt.lease = true;
      wt.session = std::move(session);
      wt.holder = self->current_sender() ? caf::actor_cast<caf::actor_addr>(self->current_sender())
                                         : caf::actor_addr{};
      wt.rp = self->make_response_promise();
      submit(self, std::move(wt));
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
    },
    [self](done_atom, bool ok) {
      auto& st = self->state;
      auto it = st.workers.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
      if (it == st.workers.end() || it->second.st != wstate::busy)
        return;
      auto& w = it->second;
      ++st.completed;
      // An answer is an answer: a Python exception (ok false) is the
      // caller's business, not a worker fault, and a trial that got one
      // shows the pool serves again.
      if (!ok)
        count_error(self, errc::python_error);
      settle(self, w, ok);
      w.consecutive_faults = 0;
      st.end_trial(w.trial, true);
      worker_free(self, w);
      check_drained(self);
    },
    [self](timedout_atom, bool pooled) {
      // A request on this worker timed out (its caller has command_timeout);
      // the worker is in its grace. A pooled request's job ends here.
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
      // A trial passes only if its worker answers in time.
      st.end_trial(w.trial, false);
      if (w.st == wstate::busy)
        worker_free(self, w);  // parks it in grace (or replaces it)
      check_drained(self);
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
      replace(self, it->second, replace_cause::timeout);
      check_drained(self);
    },
    [self](init_fail_atom, const std::string&, const std::string&) {
      // A worker that never came up: it exits with init_failed (an exit its
      // supervisor counts); the breaker hears of it here.
      count_error(self, errc::init_failed);
      self->state.breaker.record_failure(clock_type::now());
    },
    [self](replace_atom, caf::actor& sup, std::string& id, int attempt) {
      restart_worker(self, sup, id, attempt);
    },
    [self](timeout_atom, std::uint64_t waiter_id) {
      auto& st = self->state;
      auto it = std::find_if(st.queue.begin(), st.queue.end(),
                             [&](const waiter& w) { return w.id == waiter_id; });
      if (it == st.queue.end())
        return;
      auto wt = std::move(*it);
      st.queue.erase(it);
      fail(self, wt, wt.expiry,
           "no worker of pool " + st.cfg.name + " became free within "
             + std::to_string(wt.limit.count()) + " ms"
             + (wt.expiry == errc::command_timeout ? " (the request's timeout)" : ""));
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
  spec.shutdown = supervision::shutdown_spec::timeout(cfg.worker_shutdown);
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
