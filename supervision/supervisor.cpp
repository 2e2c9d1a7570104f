// The supervisor actor. Semantics: the manual at the top of supervisor.hpp.
//
// How it is built:
// - One CAF stateful actor per supervisor; all of its state is below, nothing
//   is shared between supervisors.
// - Children are watched with monitor + down_msg; they are not linked. If the
//   supervisor dies without stopping them (killed, or its last handle
//   dropped), its state's destructor or a tie attached to the actor kills
//   them, so no child outlives its supervisor.
// - Work that waits on children (starting with a ready request, stopping
//   with a shutdown timeout) is asynchronous, written as continuations. OTP's
//   supervisor does it all synchronously inside one gen_server callback; to
//   keep its semantics we serialise the same units of work as *jobs*: one
//   runs at a time, requests and child exits that arrive meanwhile queue up
//   behind it. down_msgs, ready answers and shutdown timers are never
//   queued: they drive the job in progress.
// - A child's down_msg updates its record at once (handle gone, event
//   sent); the restart decision is a job. A job that stops or starts that
//   child before the decision runs consumes it (exit_pending / incarnation),
//   as OTP's shutdown/2 consumes the EXIT message of a child already dead.
#include <dspex/supervision/supervisor.hpp>

#include <deque>
#include <exception>
#include <functional>
#include <list>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <caf/actor_cast.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/response_promise.hpp>
#include <caf/sec.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/system_messages.hpp>

#include <dspex/supervision/restart_intensity.hpp>

namespace dspex::supervision {

namespace {

// -- internal messages ----------------------------------------------------------

/// (retry_atom, child id, incarnation): try a failed restart again.
using retry_atom = caf::atom_constant<caf::atom("sup_retry")>;

/// (stop_timer_atom, stop operation id, timeout in ms): a shutdown timeout
/// expired. Stale timers (operation finished) are ignored: CAF 0.17 cannot
/// cancel a delayed_send.
using stop_timer_atom = caf::atom_constant<caf::atom("sup_stopto")>;

caf::error shutdown_reason() {
  return caf::make_error(caf::exit_reason::user_shutdown);
}

/// The exit reason of a supervisor whose init failed: OTP's
/// {shutdown, {failed_to_start_child, Id, Reason}}; the init error rides
/// along as context so start_supervisor can return it.
caf::error init_failure_reason(const caf::error& init_error) {
  return caf::error{static_cast<std::uint8_t>(caf::exit_reason::user_shutdown),
                    caf::atom("exit"), caf::make_message(init_error)};
}

caf::error init_error_of(const caf::error& exit_reason) {
  if (classify(exit_reason) == exit_class::shutdown
      && exit_reason.context().match_elements<caf::error>())
    return exit_reason.context().get_as<caf::error>(0);
  return caf::none;
}

/// "child 'w1' failed to start: <reason>", keeping the detail of our own
/// start_failed errors instead of nesting them.
caf::error start_failure(const std::string& id, const caf::error& reason) {
  std::string detail;
  if (is(reason, supervision_errc::start_failed)
      && reason.context().match_elements<std::string>())
    detail = reason.context().get_as<std::string>(0);
  else
    detail = render_reason(reason);
  return make_error(supervision_errc::start_failed,
                    "child '" + id + "' failed to start: " + detail);
}

// -- children ---------------------------------------------------------------------

/// What the supervisor is waiting for from a child.
enum class phase {
  /// Nothing (running or not running).
  idle,
  /// Spawned, ready request sent, no answer yet.
  starting,
  /// The ready answer was an error or timed out: killed, awaiting its down.
  failing,
  /// Asked to stop (or killed), awaiting its down.
  stopping,
};

struct child_record {
  /// Shared by all children of a simple_one_for_one supervisor.
  std::shared_ptr<const child_spec> spec;
  /// spec->id, or "<spec id>#<n>" for dynamic children.
  std::string id;
  /// Dynamic children: the arguments of start_child, reused on restart.
  caf::message args;
  /// Valid while the child actor lives (as far as we know: until its
  /// down_msg).
  caf::actor handle;
  child_status status = child_status::undefined;
  phase ph = phase::idle;
  /// +1 per start attempt. Tags ready answers, restart decisions and retries,
  /// so that ones meant for an earlier incarnation are ignored.
  std::uint64_t incarnation = 0;
  /// The child exited by itself and the restart decision is queued.
  bool exit_pending = false;
  /// The start in progress is a restart (event child_restarted).
  bool restarting_start = false;
  /// phase stopping: the stop operation waiting for this child.
  std::uint64_t stop_op = 0;
  /// phase failing: why the start failed.
  caf::error failure;
  /// The last exit or start failure reason (for intensity_reached).
  caf::error last_reason;
  /// The OS process of the current (or last) incarnation, when its start
  /// function reported one (report_os_pid); kept after the exit so the exit
  /// event carries it.
  std::optional<int> os_pid;
  /// phase starting / failing: continuation of the start.
  std::function<void(caf::error)> on_started;
};

using child_list = std::list<child_record>;
using child_iter = child_list::iterator;

/// Handles of live children, shared with the tie attached to the actor.
using live_children = std::unordered_map<caf::actor_addr, caf::actor>;

// -- jobs ------------------------------------------------------------------------

using done_fn = std::function<void()>;

struct job {
  /// Runs the job; it calls `done` exactly once when finished, or never when
  /// the supervisor terminates.
  std::function<void(done_fn)> run;
  /// Called instead of `run` when the supervisor terminates first (answers
  /// the request that queued the job); may be empty.
  std::function<void(const caf::error&)> drop;
};

/// Several children stopped together (a batch of one, or every child of a
/// simple_one_for_one supervisor).
struct stop_operation {
  std::unordered_set<std::string> pending;
  std::function<void()> then;
};

struct init_args {
  supervisor_flags flags;
  std::vector<child_spec> children;
  std::string path;
  std::shared_ptr<clock> clk;
  std::vector<caf::actor> subscribers;
  /// The parent supervisor (weak): receives our events.
  caf::actor_addr upstream;
};

struct supervisor_state;
using supervisor_actor = caf::stateful_actor<supervisor_state>;

struct supervisor_state {
  supervisor_actor* self = nullptr;
  supervisor_flags flags;
  std::string path;
  std::shared_ptr<clock> clk;
  std::optional<restart_intensity> intensity;
  caf::actor_addr upstream;
  std::vector<caf::actor> subscribers;

  // -- the children --------------------------------------------------------------
  /// Children in start order (invariant), running or not.
  child_list children;
  /// Every record in `children`, by id.
  std::unordered_map<std::string, child_iter> by_id;
  /// Records with a valid handle, by the handle's address.
  std::unordered_map<caf::actor_addr, child_iter> by_addr;
  /// The same handles, shared with the tie (see kill_live_children).
  std::shared_ptr<live_children> live = std::make_shared<live_children>();
  /// simple_one_for_one: the template; null otherwise.
  std::shared_ptr<const child_spec> dynamic_spec;
  std::uint64_t dynamic_serial = 0;
  /// The path of the child whose start function runs (supervisor_child
  /// reads it).
  std::string starting_path;
  /// Set by report_os_pid while a start function runs.
  std::optional<int> starting_os_pid;
  bool in_start_fn = false;

  // -- jobs ------------------------------------------------------------------------
  /// Jobs waiting, in arrival order.
  std::deque<job> jobs;
  /// A job runs.
  bool busy = false;
  /// pump() is on the stack (jobs that finish synchronously loop there).
  bool pumping = false;
  /// Stopping for good: no job starts any more.
  bool terminating = false;
  bool initialized = false;
  /// ready requests received before the init finished.
  std::vector<caf::response_promise> ready_waiters;

  std::uint64_t next_stop_op = 0;
  std::unordered_map<std::uint64_t, stop_operation> stops;

  ~supervisor_state() {
    kill_live_children(*live);
  }

  static void kill_live_children(live_children& xs) {
    for (auto& kvp : xs)
      caf::anon_send_exit(kvp.second, caf::exit_reason::kill);
    xs.clear();
  }

  // -- lookup ----------------------------------------------------------------------

  child_iter find(const std::string& id) {
    auto i = by_id.find(id);
    return i != by_id.end() ? i->second : children.end();
  }

  child_iter find(const caf::actor_addr& addr) {
    auto i = by_addr.find(addr);
    return i != by_addr.end() ? i->second : children.end();
  }

  bool dynamic() const {
    return dynamic_spec != nullptr;
  }

  child_iter add_record(std::shared_ptr<const child_spec> spec, std::string id,
                        caf::message args) {
    child_record rec;
    rec.spec = std::move(spec);
    rec.id = std::move(id);
    rec.args = std::move(args);
    children.push_back(std::move(rec));
    auto i = std::prev(children.end());
    by_id.emplace(i->id, i);
    return i;
  }

  void forget_handle(child_iter c) {
    if (!c->handle)
      return;
    auto addr = c->handle.address();
    by_addr.erase(addr);
    live->erase(addr);
    c->handle = nullptr;
  }

  void remove_record(child_iter c) {
    forget_handle(c);
    by_id.erase(c->id);
    children.erase(c);
  }

  std::vector<std::string> all_ids() const {
    std::vector<std::string> xs;
    xs.reserve(children.size());
    for (auto& c : children)
      xs.push_back(c.id);
    return xs;
  }

  // -- events ------------------------------------------------------------------------

  void publish(const supervision_event& ev) {
    for (auto& s : subscribers)
      self->send(s, ev);
    if (upstream)
      if (auto up = caf::actor_cast<caf::actor>(upstream))
        self->send(up, ev);
  }

  bool has_audience() const {
    return !subscribers.empty() || static_cast<bool>(upstream);
  }

  void emit(event_kind kind, const std::string& child_id,
            const caf::actor_addr& child, const caf::error* reason,
            std::optional<int> os_pid = std::nullopt) {
    if (!has_audience())
      return;
    supervision_event ev;
    ev.kind = kind;
    ev.path = child_id.empty() ? path : path + "/" + child_id;
    ev.child_id = child_id;
    if (reason) {
      ev.reason_class = kind == event_kind::child_start_failed
                          ? exit_class::crash
                          : classify(*reason);
      ev.reason = render_reason(*reason);
      ev.exit_reason = *reason;
      if (kind == event_kind::child_exited
          || kind == event_kind::child_start_failed)
        ev.exit = os_exit_of(*reason);
    }
    ev.child = child;
    ev.os_pid = os_pid;
    ev.ts = std::chrono::system_clock::now();
    publish(ev);
  }

  void add_subscriber(const caf::actor& x) {
    if (!x)
      return;
    for (auto& s : subscribers)
      if (s == x)
        return;
    subscribers.push_back(x);
    self->monitor(x);
  }

  void remove_subscriber(const caf::actor_addr& x) {
    for (auto i = subscribers.begin(); i != subscribers.end(); ++i)
      if (i->address() == x) {
        subscribers.erase(i);
        return;
      }
  }

  // -- the job queue -------------------------------------------------------------------

  void submit(job j) {
    if (terminating) {
      if (j.drop)
        j.drop(make_error(supervision_errc::shutting_down));
      return;
    }
    jobs.push_back(std::move(j));
    pump();
  }

  void pump() {
    if (pumping)
      return;
    pumping = true;
    while (!busy && !terminating && !jobs.empty()) {
      auto j = std::move(jobs.front());
      jobs.pop_front();
      busy = true;
      j.run([this] {
        busy = false;
        pump();
      });
    }
    pumping = false;
  }

  // -- starting a child ------------------------------------------------------------------

  /// Starts the child of record `c` (OTP's do_start_child): calls its start
  /// function, monitors the child and, with await_ready, asks it `ready`.
  /// Emits child_started / child_restarted or child_start_failed. Returns
  /// the outcome (none = started) when known at once; otherwise returns
  /// nullopt and calls `then` later. A start that returned ignore succeeds
  /// without a child (a temporary or dynamic record is then removed: `c`
  /// must not be used after this call).
  std::optional<caf::error> start_child(child_iter c, bool is_restart,
                                        std::function<void(caf::error)> then) {
    ++c->incarnation;
    c->exit_pending = false;
    c->restarting_start = is_restart;
    auto& spec = *c->spec;
    caf::expected<caf::actor> res{caf::actor{}};
    starting_path = path + "/" + c->id;
    starting_os_pid.reset();
    in_start_fn = true;
    try {
      if (dynamic() && spec.start_with_args)
        res = spec.start_with_args(self, c->args);
      else if (spec.start)
        res = spec.start(self);
      else
        res = make_error(supervision_errc::invalid_spec, "no start function");
    } catch (const std::exception& e) {
      res = make_error(supervision_errc::start_failed,
                       std::string{"exception: "} + e.what());
    } catch (...) {
      res = make_error(supervision_errc::start_failed, "unknown exception");
    }
    starting_path.clear();
    in_start_fn = false;
    c->os_pid = starting_os_pid;
    starting_os_pid.reset();
    if (!res) {
      auto err = res.error();
      if (!err)
        err = make_error(supervision_errc::start_failed, "start returned no error");
      c->last_reason = err;
      emit(event_kind::child_start_failed, c->id, caf::actor_addr{}, &err,
           c->os_pid);
      return err;
    }
    if (!*res) {
      // OTP's ignore: no child; the spec stays unless temporary / dynamic.
      if (spec.restart == restart_type::temporary || dynamic())
        remove_record(c);
      else
        c->status = child_status::undefined;
      return caf::error{};
    }
    c->handle = std::move(*res);
    auto addr = c->handle.address();
    by_addr[addr] = c;
    (*live)[addr] = c->handle;
    self->monitor(c->handle);
    if (!spec.await_ready) {
      c->status = child_status::running;
      emit(is_restart ? event_kind::child_restarted : event_kind::child_started,
           c->id, addr, nullptr, c->os_pid);
      return caf::error{};
    }
    c->ph = phase::starting;
    c->on_started = std::move(then);
    auto id = c->id;
    auto inc = c->incarnation;
    auto wait = *spec.await_ready;
    caf::duration timeout = wait == no_ready_timeout
                              ? caf::duration{caf::infinite}
                              : caf::duration{wait};
    self->request(c->handle, timeout, ready_atom::value)
      .then([this, id, inc]() { on_ready(id, inc, caf::error{}); },
            [this, id, inc, wait](caf::error& err) {
              if (err == caf::sec::unexpected_response
                  && err.context().match_elements<caf::ok_atom>())
                on_ready(id, inc, caf::error{});
              else if (err == caf::sec::request_timeout)
                on_ready(id, inc,
                         make_error(supervision_errc::start_failed,
                                    "not ready within "
                                      + std::to_string(wait.count()) + " ms"));
              else
                on_ready(id, inc, std::move(err));
            });
    return std::nullopt;
  }

  /// The answer to a ready request.
  void on_ready(const std::string& id, std::uint64_t inc, caf::error err) {
    auto c = find(id);
    if (c == children.end() || c->incarnation != inc
        || c->ph != phase::starting)
      return; // stale
    if (!err) {
      c->ph = phase::idle;
      c->status = child_status::running;
      emit(c->restarting_start ? event_kind::child_restarted
                               : event_kind::child_started,
           c->id, c->handle.address(), nullptr, c->os_pid);
      auto k = std::move(c->on_started);
      c->on_started = nullptr;
      k(caf::error{});
      return;
    }
    if (err == caf::sec::request_receiver_down)
      return; // the child is gone: its down_msg (which follows) says why
    // It may still be alive: kill it and finish once it is gone.
    c->ph = phase::failing;
    c->failure = std::move(err);
    self->send_exit(c->handle, caf::exit_reason::kill);
  }

  /// A start that awaited readiness failed (the child is gone).
  void start_failed_async(child_iter c, caf::error err) {
    c->ph = phase::idle;
    c->last_reason = err;
    emit(event_kind::child_start_failed, c->id, caf::actor_addr{}, &err,
         c->os_pid);
    auto k = std::move(c->on_started);
    c->on_started = nullptr;
    k(std::move(err));
  }

  /// Starts the children with ids `ids` in order, stopping at the first that
  /// fails (OTP's start_children). Calls then(failed id, error), with an
  /// empty id and no error when all started.
  void start_in_order(std::vector<std::string> ids, bool is_restart,
                      std::function<void(const std::string&, caf::error)> then) {
    struct seq {
      std::vector<std::string> ids;
      std::size_t next = 0;
      bool is_restart;
      std::function<void(const std::string&, caf::error)> then;
    };
    auto s = std::make_shared<seq>(
      seq{std::move(ids), 0, is_restart, std::move(then)});
    start_loop(s);
  }

  template <class Seq>
  void start_loop(std::shared_ptr<Seq> s) {
    while (s->next < s->ids.size()) {
      auto c = find(s->ids[s->next]);
      if (c == children.end()) {
        ++s->next;
        continue;
      }
      auto r = start_child(c, s->is_restart, [this, s](caf::error err) {
        if (err) {
          auto k = std::move(s->then);
          k(s->ids[s->next], std::move(err));
          return;
        }
        ++s->next;
        start_loop(s);
      });
      if (!r)
        return; // resumes in the continuation
      if (*r) {
        auto k = std::move(s->then);
        k(s->ids[s->next], std::move(*r));
        return;
      }
      ++s->next;
    }
    auto k = std::move(s->then);
    k(std::string{}, caf::error{});
  }

  // -- stopping children: the shutdown protocol ------------------------------------------

  /// OTP's shutdown/2, for one child or a batch stopped concurrently: each
  /// child is asked with exit_reason::user_shutdown (brutal_kill: killed at
  /// once); one timer per distinct timeout kills whoever is still alive when
  /// it fires (infinity: no timer); the operation ends when every child's
  /// down_msg is in (the monitor is the one taken at start). A child already
  /// dead has its pending exit consumed. Returns true when children are being
  /// stopped (`then` runs later), false when none was running (`then` is
  /// not called).
  bool shutdown(const std::vector<child_iter>& batch,
                std::function<void()> then) {
    auto op_id = ++next_stop_op;
    stop_operation op;
    std::set<std::int64_t> timeouts;
    for (auto c : batch) {
      c->exit_pending = false;
      if (!c->handle || c->ph != phase::idle)
        continue;
      auto how = c->spec->shutdown.resolve(c->spec->type);
      c->ph = phase::stopping;
      c->stop_op = op_id;
      op.pending.insert(c->id);
      switch (how.how()) {
        case shutdown_spec::kind::brutal_kill:
          self->send_exit(c->handle, caf::exit_reason::kill);
          break;
        case shutdown_spec::kind::timeout:
          self->send_exit(c->handle, caf::exit_reason::user_shutdown);
          timeouts.insert(how.time().count());
          break;
        default:
          self->send_exit(c->handle, caf::exit_reason::user_shutdown);
          break;
      }
    }
    if (op.pending.empty())
      return false;
    op.then = std::move(then);
    stops.emplace(op_id, std::move(op));
    for (auto ms : timeouts)
      self->delayed_send(self, std::chrono::milliseconds{ms},
                         stop_timer_atom::value, op_id, ms);
    return true;
  }

  void on_stop_timer(std::uint64_t op_id, std::int64_t ms) {
    auto i = stops.find(op_id);
    if (i == stops.end())
      return; // stale: everyone stopped in time
    for (auto& id : i->second.pending) {
      auto c = find(id);
      if (c == children.end() || c->ph != phase::stopping
          || c->stop_op != op_id || !c->handle)
        continue;
      auto how = c->spec->shutdown.resolve(c->spec->type);
      if (how.how() == shutdown_spec::kind::timeout && how.time().count() == ms)
        self->send_exit(c->handle, caf::exit_reason::kill);
    }
  }

  void on_stopped(child_iter c, const caf::error& reason) {
    c->ph = phase::idle;
    c->status = child_status::undefined;
    c->last_reason = reason;
    auto op_id = c->stop_op;
    auto id = c->id;
    auto i = stops.find(op_id);
    if (i == stops.end())
      return;
    i->second.pending.erase(id);
    if (!i->second.pending.empty())
      return;
    auto k = std::move(i->second.then);
    stops.erase(i);
    k();
  }

  /// Stops the children with ids `ids` (start order) one at a time in
  /// reverse order, each with its shutdown spec; then `then`.
  void stop_in_reverse(std::vector<std::string> ids, std::function<void()> then) {
    struct seq {
      std::vector<std::string> ids;
      std::size_t next;
      std::function<void()> then;
    };
    auto n = ids.size();
    auto s = std::make_shared<seq>(seq{std::move(ids), n, std::move(then)});
    stop_loop(s);
  }

  template <class Seq>
  void stop_loop(std::shared_ptr<Seq> s) {
    while (s->next > 0) {
      auto c = find(s->ids[--s->next]);
      if (c == children.end())
        continue;
      if (shutdown({c}, [this, s] { stop_loop(s); }))
        return; // resumes when the child is down
    }
    auto k = std::move(s->then);
    k();
  }

  /// Stops every child: in reverse start order, or all at once for
  /// simple_one_for_one (OTP's terminate_dynamic_children).
  void stop_all(std::function<void()> then) {
    if (!dynamic()) {
      stop_in_reverse(all_ids(), std::move(then));
      return;
    }
    std::vector<child_iter> batch;
    batch.reserve(children.size());
    for (auto i = children.begin(); i != children.end(); ++i)
      batch.push_back(i);
    auto k = then;
    if (!shutdown(batch, std::move(then)))
      k();
  }

  // -- terminating the supervisor ----------------------------------------------------------

  /// Stops all children, then the supervisor with `reason`.
  void terminate(caf::error reason) {
    terminating = true;
    stop_all([this, reason] { finish(reason); });
  }

  void finish(const caf::error& reason) {
    terminating = true;
    emit(event_kind::supervisor_stopped, std::string{}, caf::actor_addr{},
         &reason);
    auto dropped = std::move(jobs);
    jobs.clear();
    for (auto& j : dropped)
      if (j.drop)
        j.drop(make_error(supervision_errc::shutting_down));
    for (auto& rp : ready_waiters)
      rp.deliver(make_error(supervision_errc::shutting_down));
    ready_waiters.clear();
    self->quit(reason);
  }

  // -- init ---------------------------------------------------------------------------------

  void run_init(std::vector<child_spec> specs, done_fn done) {
    if (auto err = validate(flags, specs)) {
      init_failed(err);
      return;
    }
    intensity.emplace(flags.intensity, flags.period);
    if (flags.strat == strategy::simple_one_for_one) {
      dynamic_spec = std::make_shared<const child_spec>(std::move(specs.front()));
      init_succeeded(done);
      return;
    }
    for (auto& spec : specs) {
      auto id = spec.id;
      add_record(std::make_shared<const child_spec>(std::move(spec)),
                 std::move(id), caf::message{});
    }
    start_in_order(all_ids(), false,
                   [this, done](const std::string& failed, caf::error err) {
                     if (!err) {
                       init_succeeded(done);
                       return;
                     }
                     auto reason = start_failure(failed, err);
                     stop_in_reverse(all_ids(),
                                     [this, reason] { init_failed(reason); });
                   });
  }

  void init_succeeded(const done_fn& done) {
    initialized = true;
    for (auto& rp : ready_waiters)
      rp.deliver(caf::ok_atom::value);
    ready_waiters.clear();
    done();
  }

  void init_failed(const caf::error& err) {
    for (auto& rp : ready_waiters)
      rp.deliver(err);
    ready_waiters.clear();
    finish(init_failure_reason(err));
  }

  // -- child exits and restarts ---------------------------------------------------------------

  /// A down_msg from a child.
  void on_child_down(child_iter c, const caf::actor_addr& addr,
                     const caf::error& reason) {
    forget_handle(c);
    switch (c->ph) {
      case phase::stopping:
        emit(event_kind::child_exited, c->id, addr, &reason, c->os_pid);
        on_stopped(c, reason);
        return;
      case phase::starting:
        start_failed_async(c, make_error(supervision_errc::start_failed,
                                         "exited before ready: "
                                           + render_reason(reason)));
        return;
      case phase::failing:
        start_failed_async(c, c->failure);
        return;
      case phase::idle:
        break;
    }
    // It exited by itself: report now, decide in turn.
    emit(event_kind::child_exited, c->id, addr, &reason, c->os_pid);
    c->status = child_status::undefined;
    c->last_reason = reason;
    c->exit_pending = true;
    auto id = c->id;
    auto inc = c->incarnation;
    submit(job{[this, id, inc, reason](done_fn done) {
                 auto c = find(id);
                 if (c == children.end() || !c->exit_pending
                     || c->incarnation != inc) {
                   done(); // consumed by a job that stopped or restarted it
                   return;
                 }
                 c->exit_pending = false;
                 on_child_exit(c, reason, std::move(done));
               },
               nullptr});
  }

  /// OTP's do_restart/3.
  void on_child_exit(child_iter c, const caf::error& reason, done_fn done) {
    auto cls = classify(reason);
    auto& spec = *c->spec;
    bool restart = spec.restart == restart_type::permanent
                   || (spec.restart == restart_type::transient
                       && cls != exit_class::normal
                       && cls != exit_class::shutdown);
    if (restart) {
      restart_child(c, std::move(done));
      return;
    }
    bool significant = spec.significant;
    if (spec.restart == restart_type::temporary || dynamic())
      remove_record(c);
    else
      c->status = child_status::undefined;
    if (auto_shutdown_due(significant)) {
      terminate(shutdown_reason());
      return;
    }
    done();
  }

  /// OTP's do_auto_shutdown/2, after a significant child terminated by
  /// itself and was not restarted.
  bool auto_shutdown_due(bool significant) const {
    if (flags.autoshut == auto_shutdown::never || !significant)
      return false;
    if (flags.autoshut == auto_shutdown::any_significant)
      return true;
    for (auto& c : children)
      if (c.spec->significant
          && (c.handle || c.status == child_status::restarting))
        return false;
    return true;
  }

  /// OTP's restart/2: count the restart, give up beyond the intensity, else
  /// restart as the strategy says.
  void restart_child(child_iter c, done_fn done) {
    if (!intensity->add(clk->now())) {
      emit(event_kind::intensity_reached, c->id, caf::actor_addr{},
           &c->last_reason);
      terminate(shutdown_reason());
      return;
    }
    switch (flags.strat) {
      case strategy::one_for_one:
      case strategy::simple_one_for_one: {
        auto id = c->id;
        auto r = start_child(c, true, [this, id, done](caf::error err) {
          after_restart(id, err, done);
        });
        if (r)
          after_restart(id, *r, done);
        return;
      }
      case strategy::one_for_all:
        restart_group(all_ids(), std::move(done));
        return;
      case strategy::rest_for_one: {
        std::vector<std::string> ids;
        for (auto i = c; i != children.end(); ++i)
          ids.push_back(i->id);
        restart_group(std::move(ids), std::move(done));
        return;
      }
    }
  }

  /// OTP's restart_multiple_children: stop the running ones of `ids` in
  /// reverse order, drop the temporary ones, start the rest in order.
  void restart_group(std::vector<std::string> ids, done_fn done) {
    stop_in_reverse(ids, [this, ids, done] {
      std::vector<std::string> to_start;
      for (auto& id : ids) {
        auto c = find(id);
        if (c == children.end())
          continue;
        if (c->spec->restart == restart_type::temporary) {
          remove_record(c);
          continue;
        }
        to_start.push_back(id);
      }
      start_in_order(std::move(to_start), true,
                     [this, done](const std::string& failed, caf::error err) {
                       after_restart(failed, err, done);
                     });
    });
  }

  /// A failed restart is retried through the mailbox, so that a shutdown
  /// request or an API call can come in between (OTP's try_again_restart).
  void after_restart(const std::string& id, const caf::error& err,
                     const done_fn& done) {
    if (err) {
      auto c = find(id);
      if (c != children.end()) {
        c->status = child_status::restarting;
        self->send(self, retry_atom::value, c->id, c->incarnation);
      }
    }
    done();
  }

  void on_retry(const std::string& id, std::uint64_t inc, done_fn done) {
    auto c = find(id);
    if (c == children.end() || c->status != child_status::restarting
        || c->incarnation != inc || c->handle) {
      done(); // terminated, deleted or restarted meanwhile
      return;
    }
    restart_child(c, std::move(done));
  }

  // -- the API ------------------------------------------------------------------------------

  using reply_actor = std::function<void(caf::expected<caf::actor>)>;
  using reply_void = std::function<void(caf::error)>;

  void api_start_child(child_spec spec, reply_actor reply) {
    if (dynamic()) {
      reply(make_error(supervision_errc::simple_one_for_one,
                       "start_child takes arguments, not a spec"));
      return;
    }
    if (auto err = validate(spec)) {
      reply(err);
      return;
    }
    if (spec.significant && flags.autoshut == auto_shutdown::never) {
      reply(make_error(supervision_errc::invalid_spec,
                       "child '" + spec.id
                         + "': significant needs auto_shutdown other than "
                           "never"));
      return;
    }
    if (auto c = find(spec.id); c != children.end()) {
      if (c->handle)
        reply(make_error(supervision_errc::already_started, spec.id));
      else
        reply(make_error(supervision_errc::already_present, spec.id));
      return;
    }
    auto id = spec.id;
    auto c = add_record(std::make_shared<const child_spec>(std::move(spec)), id,
                        caf::message{});
    start_and_reply(c, std::move(reply));
  }

  void api_start_dynamic(caf::message args, reply_actor reply) {
    if (!dynamic()) {
      reply(make_error(supervision_errc::simple_one_for_one,
                       "start_child takes a spec, not arguments"));
      return;
    }
    if (!dynamic_spec->start_with_args && !args.empty()) {
      reply(make_error(supervision_errc::invalid_spec,
                       "spec '" + dynamic_spec->id
                         + "' has no start_with_args for the arguments"));
      return;
    }
    auto id = dynamic_spec->id + "#" + std::to_string(++dynamic_serial);
    auto c = add_record(dynamic_spec, id, std::move(args));
    start_and_reply(c, std::move(reply));
  }

  /// Starts a new record for start_child; a failed start removes it.
  void start_and_reply(child_iter c, reply_actor reply) {
    auto id = c->id;
    auto fin = [this, id, reply](caf::error err) {
      auto c = find(id);
      if (err) {
        if (c != children.end())
          remove_record(c);
        reply(start_failure(id, err));
        return;
      }
      reply(c != children.end() ? c->handle : caf::actor{});
    };
    auto r = start_child(c, false, fin);
    if (r)
      fin(*r);
  }

  void api_terminate(child_iter c, reply_void reply) {
    auto id = c->id;
    auto fin = [this, id, reply] {
      auto c = find(id);
      if (c != children.end()) {
        if (c->spec->restart == restart_type::temporary || dynamic())
          remove_record(c);
        else
          c->status = child_status::undefined;
      }
      reply(caf::error{});
    };
    if (!shutdown({c}, fin))
      fin();
  }

  void api_restart(const std::string& id, reply_actor reply) {
    if (dynamic()) {
      reply(make_error(supervision_errc::simple_one_for_one, "restart_child"));
      return;
    }
    auto c = find(id);
    if (c == children.end()) {
      reply(make_error(supervision_errc::not_found, id));
      return;
    }
    if (c->handle) {
      reply(make_error(supervision_errc::running, id));
      return;
    }
    if (c->status == child_status::restarting) {
      reply(make_error(supervision_errc::restarting, id));
      return;
    }
    auto fin = [this, id, reply](caf::error err) {
      if (err) {
        reply(start_failure(id, err));
        return;
      }
      auto c = find(id);
      reply(c != children.end() ? c->handle : caf::actor{});
    };
    auto r = start_child(c, false, fin);
    if (r)
      fin(*r);
  }

  caf::error api_delete(const std::string& id) {
    if (dynamic())
      return make_error(supervision_errc::simple_one_for_one, "delete_child");
    auto c = find(id);
    if (c == children.end())
      return make_error(supervision_errc::not_found, id);
    if (c->handle)
      return make_error(supervision_errc::running, id);
    if (c->status == child_status::restarting)
      return make_error(supervision_errc::restarting, id);
    remove_record(c);
    return caf::none;
  }

  std::vector<child_info> which() const {
    std::vector<child_info> xs;
    xs.reserve(children.size());
    for (auto& c : children) {
      child_info x;
      x.id = c.id;
      x.type = c.spec->type;
      x.status = c.status;
      if (c.status == child_status::running) {
        x.handle = c.handle;
        x.os_pid = c.os_pid;
      }
      xs.push_back(std::move(x));
    }
    return xs;
  }

  child_counts count() const {
    child_counts x;
    x.specs = dynamic() ? 1 : children.size();
    for (auto& c : children) {
      if (c.status == child_status::running)
        ++x.active;
      if (c.spec->type == child_type::supervisor)
        ++x.supervisors;
      else
        ++x.workers;
    }
    return x;
  }

  // -- queued requests --------------------------------------------------------------------------

  /// Queues an API job answering through `rp`.
  void queue_request(caf::response_promise rp,
                     std::function<void(caf::response_promise&, done_fn)> f) {
    submit(job{[rp, f](done_fn done) mutable { f(rp, std::move(done)); },
               [rp](const caf::error& err) mutable { rp.deliver(err); }});
  }
};

void deliver(caf::response_promise& rp, caf::expected<caf::actor> x) {
  if (x)
    rp.deliver(std::move(*x));
  else
    rp.deliver(std::move(x.error()));
}

void deliver(caf::response_promise& rp, caf::error err) {
  if (err)
    rp.deliver(std::move(err));
  else
    rp.deliver(caf::unit);
}

caf::behavior supervisor_impl(supervisor_actor* self,
                              std::shared_ptr<const init_args> args) {
  auto& st = self->state;
  st.self = self;
  st.flags = args->flags;
  st.path = args->path;
  st.clk = args->clk ? args->clk : make_monotonic_clock();
  st.upstream = args->upstream;
  // If this actor goes away without running its state's destructor (its last
  // handle dropped), the tie still kills the children.
  self->attach_functor(
    [tie = std::weak_ptr<live_children>{st.live}](const caf::error&) {
      if (auto xs = tie.lock())
        supervisor_state::kill_live_children(*xs);
    });
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (auto c = st.find(msg.source); c != st.children.end())
      st.on_child_down(c, msg.source, msg.reason);
    st.remove_subscriber(msg.source);
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.find(msg.source) != st.children.end())
      return; // a child linked to us: its down_msg decides
    if (!msg.reason)
      return; // exit_reason::normal is no request to stop
    auto reason = msg.reason;
    st.submit(job{[self, reason](done_fn) { self->state.terminate(reason); },
                  nullptr});
  });
  for (auto& s : args->subscribers)
    st.add_subscriber(s);
  st.submit(job{[self, args](done_fn done) {
                  self->state.run_init(args->children, std::move(done));
                },
                nullptr});
  return {
    // -- the API --
    [self](start_child_atom, child_spec& spec) -> caf::response_promise {
      auto rp = self->make_response_promise();
      self->state.queue_request(rp, [self, spec](caf::response_promise& rp,
                                                 done_fn done) {
        self->state.api_start_child(spec, [rp, done](caf::expected<caf::actor> x) mutable {
          deliver(rp, std::move(x));
          done();
        });
      });
      return rp;
    },
    [self](start_child_atom, caf::message& args) -> caf::response_promise {
      auto rp = self->make_response_promise();
      self->state.queue_request(rp, [self, args](caf::response_promise& rp,
                                                 done_fn done) {
        self->state.api_start_dynamic(args, [rp, done](caf::expected<caf::actor> x) mutable {
          deliver(rp, std::move(x));
          done();
        });
      });
      return rp;
    },
    [self](terminate_child_atom, const std::string& id) -> caf::response_promise {
      auto rp = self->make_response_promise();
      self->state.queue_request(rp, [self, id](caf::response_promise& rp,
                                               done_fn done) {
        auto& st = self->state;
        auto c = st.find(id);
        if (c == st.children.end()) {
          rp.deliver(make_error(supervision_errc::not_found, id));
          done();
          return;
        }
        st.api_terminate(c, [rp, done](caf::error err) mutable {
          deliver(rp, std::move(err));
          done();
        });
      });
      return rp;
    },
    [self](terminate_child_atom, const caf::actor& child) -> caf::response_promise {
      auto rp = self->make_response_promise();
      auto addr = child.address();
      self->state.queue_request(rp, [self, addr](caf::response_promise& rp,
                                                 done_fn done) {
        auto& st = self->state;
        auto c = st.find(addr);
        if (c == st.children.end()) {
          rp.deliver(make_error(supervision_errc::not_found, "no such child"));
          done();
          return;
        }
        st.api_terminate(c, [rp, done](caf::error err) mutable {
          deliver(rp, std::move(err));
          done();
        });
      });
      return rp;
    },
    [self](restart_child_atom, const std::string& id) -> caf::response_promise {
      auto rp = self->make_response_promise();
      self->state.queue_request(rp, [self, id](caf::response_promise& rp,
                                               done_fn done) {
        self->state.api_restart(id, [rp, done](caf::expected<caf::actor> x) mutable {
          deliver(rp, std::move(x));
          done();
        });
      });
      return rp;
    },
    [self](delete_child_atom, const std::string& id) -> caf::response_promise {
      auto rp = self->make_response_promise();
      self->state.queue_request(rp, [self, id](caf::response_promise& rp,
                                               done_fn done) {
        deliver(rp, self->state.api_delete(id));
        done();
      });
      return rp;
    },
    [self](which_children_atom) { return self->state.which(); },
    [self](count_children_atom) { return self->state.count(); },
    [self](caf::subscribe_atom, const caf::actor& x) {
      self->state.add_subscriber(x);
    },
    [self](caf::unsubscribe_atom, const caf::actor& x) {
      self->state.remove_subscriber(x.address());
    },
    [self](ready_atom) -> caf::response_promise {
      auto rp = self->make_response_promise();
      auto& st = self->state;
      if (st.initialized)
        rp.deliver(caf::ok_atom::value);
      else if (st.terminating)
        rp.deliver(make_error(supervision_errc::shutting_down));
      else
        st.ready_waiters.push_back(rp);
      return rp;
    },
    // -- events of nested supervisors, passed on --
    [self](const supervision_event& ev) { self->state.publish(ev); },
    // -- internal --
    [self](retry_atom, const std::string& id, std::uint64_t inc) {
      self->state.submit(job{[self, id, inc](done_fn done) {
                               self->state.on_retry(id, inc, std::move(done));
                             },
                             nullptr});
    },
    [self](stop_timer_atom, std::uint64_t op, std::int64_t ms) {
      self->state.on_stop_timer(op, ms);
    },
  };
}

std::shared_ptr<const init_args>
make_init_args(supervisor_flags flags, std::vector<child_spec> children,
               supervisor_options options) {
  auto args = std::make_shared<init_args>();
  args->flags = flags;
  args->children = std::move(children);
  args->path = options.path.empty() ? std::string{"root"} : options.path;
  args->clk = std::move(options.clk);
  args->subscribers = std::move(options.subscribers);
  return args;
}

// -- blocking helpers ----------------------------------------------------------

template <class T, class... Ts>
caf::expected<T> call(caf::scoped_actor& self, const caf::actor& sup,
                      caf::duration timeout, Ts&&... xs) {
  caf::expected<T> result{caf::make_error(caf::sec::invalid_argument)};
  if (!sup)
    return result;
  self->request(sup, timeout, std::forward<Ts>(xs)...)
    .receive([&](T& x) { result = std::move(x); },
             [&](caf::error& err) { result = std::move(err); });
  return result;
}

template <class... Ts>
caf::error call_void(caf::scoped_actor& self, const caf::actor& sup,
                     caf::duration timeout, Ts&&... xs) {
  if (!sup)
    return caf::make_error(caf::sec::invalid_argument);
  caf::error result;
  self->request(sup, timeout, std::forward<Ts>(xs)...)
    .receive([]() {}, [&](caf::error& err) { result = std::move(err); });
  return result;
}

/// Waits for the down_msg of `whom`, leaving any other message in the
/// caller's mailbox.
caf::error await_down(caf::scoped_actor& self, const caf::actor& whom) {
  caf::error reason;
  bool down = false;
  auto addr = whom.address();
  while (!down)
    self->receive([&](caf::down_msg& msg) -> caf::result<void> {
      if (msg.source != addr)
        return caf::skip();
      reason = std::move(msg.reason);
      down = true;
      return caf::unit;
    });
  return reason;
}

} // namespace

// -- to_string -------------------------------------------------------------------

std::string to_string(strategy x) {
  switch (x) {
    case strategy::one_for_one:
      return "one_for_one";
    case strategy::one_for_all:
      return "one_for_all";
    case strategy::rest_for_one:
      return "rest_for_one";
    case strategy::simple_one_for_one:
      return "simple_one_for_one";
  }
  return "?";
}

std::string to_string(auto_shutdown x) {
  switch (x) {
    case auto_shutdown::never:
      return "never";
    case auto_shutdown::any_significant:
      return "any_significant";
    case auto_shutdown::all_significant:
      return "all_significant";
  }
  return "?";
}

std::string to_string(child_status x) {
  switch (x) {
    case child_status::running:
      return "running";
    case child_status::restarting:
      return "restarting";
    case child_status::undefined:
      return "undefined";
  }
  return "?";
}

// -- validation ------------------------------------------------------------------

caf::error validate(const supervisor_flags& flags,
                    const std::vector<child_spec>& children) {
  auto invalid = [](std::string what) {
    return make_error(supervision_errc::invalid_spec, std::move(what));
  };
  if (flags.intensity < 0)
    return invalid("intensity must be >= 0");
  if (flags.period.count() <= 0)
    return invalid("period must be > 0");
  if (flags.strat == strategy::simple_one_for_one) {
    if (children.size() != 1)
      return invalid("simple_one_for_one takes exactly one child spec, got "
                     + std::to_string(children.size()));
    if (flags.autoshut != auto_shutdown::never)
      return invalid("simple_one_for_one takes auto_shutdown never only");
  }
  std::unordered_set<std::string> ids;
  for (auto& spec : children) {
    if (auto err = validate(spec))
      return err;
    if (spec.significant && flags.autoshut == auto_shutdown::never)
      return invalid("child '" + spec.id
                     + "': significant needs auto_shutdown other than never");
    if (!ids.insert(spec.id).second)
      return invalid("duplicate child id '" + spec.id + "'");
  }
  return caf::none;
}

// -- starting supervisors ------------------------------------------------------------

caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_flags flags,
                            std::vector<child_spec> children,
                            supervisor_options options) {
  return sys.spawn(supervisor_impl,
                   make_init_args(flags, std::move(children), std::move(options)));
}

caf::expected<caf::actor> start_supervisor(caf::actor_system& sys,
                                           supervisor_flags flags,
                                           std::vector<child_spec> children,
                                           supervisor_options options) {
  auto sup = spawn_supervisor(sys, flags, std::move(children),
                              std::move(options));
  caf::scoped_actor self{sys};
  self->monitor(sup);
  bool ok = false;
  caf::error err;
  self->request(sup, caf::infinite, ready_atom::value)
    .receive([&](caf::ok_atom) { ok = true; },
             [&](caf::error& x) { err = std::move(x); });
  if (ok) {
    self->demonitor(sup);
    return sup;
  }
  // Wait until it is gone (it stops what it started first); its exit reason
  // carries the init error even when our request bounced.
  auto reason = await_down(self, sup);
  if (auto inner = init_error_of(reason))
    return inner;
  if (err && err != caf::sec::request_receiver_down)
    return err;
  return make_error(supervision_errc::start_failed,
                    "supervisor exited during init: " + render_reason(reason));
}

void report_os_pid(caf::local_actor* self, int pid) {
  if (auto sup = dynamic_cast<supervisor_actor*>(self))
    if (sup->state.in_start_fn)
      sup->state.starting_os_pid = pid;
}

child_spec supervisor_child(std::string id, supervisor_flags flags,
                            std::vector<child_spec> children,
                            supervisor_options options) {
  child_spec spec;
  spec.id = id;
  spec.type = child_type::supervisor;
  spec.shutdown = shutdown_spec::infinity();
  spec.await_ready = no_ready_timeout;
  spec.start = [id, flags, children = std::move(children),
                options = std::move(options)](
                 caf::local_actor* parent) -> caf::expected<caf::actor> {
    auto args = std::make_shared<init_args>();
    args->flags = flags;
    args->children = children;
    args->path = options.path.empty() ? std::string{"root"} : options.path;
    args->clk = options.clk;
    args->subscribers = options.subscribers;
    if (auto p = dynamic_cast<supervisor_actor*>(parent)) {
      auto& pst = p->state;
      args->path = pst.starting_path.empty() ? pst.path + "/" + id
                                             : pst.starting_path;
      if (!args->clk)
        args->clk = pst.clk;
      args->upstream = p->address();
    }
    return parent->spawn(supervisor_impl,
                         std::shared_ptr<const init_args>{std::move(args)});
  };
  return spec;
}

// -- blocking wrappers ---------------------------------------------------------------

caf::expected<caf::actor> start_child(blocking_caller who, const caf::actor& sup,
                                      child_spec spec, caf::duration timeout) {
  return call<caf::actor>(*who, sup, timeout, start_child_atom::value, std::move(spec));
}

caf::expected<caf::actor> start_child(blocking_caller who, const caf::actor& sup,
                                      caf::message args, caf::duration timeout) {
  return call<caf::actor>(*who, sup, timeout, start_child_atom::value, std::move(args));
}

caf::error terminate_child(blocking_caller who, const caf::actor& sup, const std::string& id,
                           caf::duration timeout) {
  return call_void(*who, sup, timeout, terminate_child_atom::value, id);
}

caf::error terminate_child(blocking_caller who, const caf::actor& sup, const caf::actor& child,
                           caf::duration timeout) {
  return call_void(*who, sup, timeout, terminate_child_atom::value, child);
}

caf::expected<caf::actor> restart_child(blocking_caller who, const caf::actor& sup,
                                        const std::string& id, caf::duration timeout) {
  return call<caf::actor>(*who, sup, timeout, restart_child_atom::value, id);
}

caf::error delete_child(blocking_caller who, const caf::actor& sup, const std::string& id,
                        caf::duration timeout) {
  return call_void(*who, sup, timeout, delete_child_atom::value, id);
}

caf::expected<std::vector<child_info>> which_children(blocking_caller who, const caf::actor& sup,
                                                      caf::duration timeout) {
  return call<std::vector<child_info>>(*who, sup, timeout, which_children_atom::value);
}

caf::expected<child_counts> count_children(blocking_caller who, const caf::actor& sup,
                                           caf::duration timeout) {
  return call<child_counts>(*who, sup, timeout, count_children_atom::value);
}

caf::error subscribe(blocking_caller who, const caf::actor& sup, const caf::actor& subscriber,
                     caf::duration timeout) {
  return call_void(*who, sup, timeout, caf::subscribe_atom::value, subscriber);
}

caf::error stop_supervisor(blocking_caller who, const caf::actor& sup, caf::error reason) {
  if (!sup)
    return caf::make_error(caf::sec::invalid_argument);
  auto& self = *who;
  self->monitor(sup);
  self->send_exit(sup, std::move(reason));
  return await_down(self, sup);
}

} // namespace dspex::supervision
