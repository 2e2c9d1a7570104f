// Scripted C++ workers for pool tests (pool_config::start_worker), in the
// style of NimblePool's tests: each test scripts the calls it expects and
// what each answers; anything else is a surprise, recorded and answered with
// protocol_error, and the fixture fails the test on it. No Python, so pool
// logic (affinity, lifo/fifo, overflow, queueing, leases, breaker) runs in
// milliseconds and deterministically.
//
// A scripted worker speaks the pool <-> worker contract of worker.hpp:
// - at start it tells its pool (worker_up, id, overflow) (or, scripted to
//   fail its init, (initfail, id, detail) and exits with init_failed);
// - (ready) -> unit; (stats) -> json with "inflight", as the pool asks a dead
//   lease holder's worker; (adopt, pool): serve `pool` and announce again;
// - (exec, command_request) -> json, or an error; a pooled request reports
//   (done, ok) to the pool before the caller gets the reply (ok false for a
//   Python exception, which is an answer);
// - (retire): in-flight callers get worker_crashed, the actor then waits for
//   its supervisor's terminate_child (an exit message) to end it;
// - an exit message: in-flight callers get shutting_down, it exits with the
//   reason given;
// - a crash: in-flight callers get worker_crashed, it exits with
//   process_exited (an exit its supervisor counts, as a dead process).
// Not scripted: worker-side request timeouts and their grace (give tests
// generous timeouts; a held call never times out at the worker).
#pragma once

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/pool/pool.hpp>

#include <caf/all.hpp>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace dspex::test {

using release_atom = caf::atom_constant<caf::atom("release")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;

/// What a scripted worker does with one call.
struct scripted_reply {
  enum kind_t { answer, hold, python_error, crash, protocol_error };
  kind_t kind = answer;
  json result = json::object();  ///< answer: sent with "worker" and "command" added
  std::string message;

  static scripted_reply ok(json r = json::object()) { return {answer, std::move(r), {}}; }
  /// Held until the test releases it (worker_script::release).
  static scripted_reply held() { return {hold, json::object(), {}}; }
  /// A Python exception: python_error for the caller, (done, false).
  static scripted_reply raise(std::string msg = "scripted") {
    return {python_error, json::object(), std::move(msg)};
  }
  /// The process dies while serving the call.
  static scripted_reply die() { return {crash, json::object(), "scripted crash"}; }
  /// The worker breaks the protocol: callers get protocol_error, it exits.
  static scripted_reply broken(std::string msg = "scripted protocol error") {
    return {protocol_error, json::object(), std::move(msg)};
  }
};

/// The script every scripted worker of one test shares: expectations,
/// calls, incarnations. Thread-safe (workers run on CAF threads).
class worker_script : public std::enable_shared_from_this<worker_script> {
public:
  /// Expects one call of `command`, on worker `worker` (empty: any), in
  /// session `session` (unset: any). A call matches the first unmet
  /// expectation of its command; if that one names another worker or
  /// session, the call is a surprise. Returns the expectation's number.
  std::size_t expect(std::string command, scripted_reply r = scripted_reply::ok(),
                     std::string worker = {}, std::optional<std::string> session = {}) {
    std::lock_guard<std::mutex> g(mx_);
    exps_.push_back(expectation{std::move(command), std::move(worker), std::move(session),
                                std::move(r), {}, {}, false});
    return exps_.size() - 1;
  }

  /// The next start of worker `id` fails its init.
  void fail_init(const std::string& id) {
    std::lock_guard<std::mutex> g(mx_);
    ++init_failures_[id];
  }

  /// Answers the held call of expectation `n` with `r` (not another hold).
  void release(std::size_t n, scripted_reply r = scripted_reply::ok()) {
    caf::actor w;
    {
      std::lock_guard<std::mutex> g(mx_);
      auto& e = exps_.at(n);
      e.release_with = std::move(r);
      w = e.served_by;
    }
    if (w)
      caf::anon_send(w, release_atom::value, n);
  }

  /// The process of worker `id` (its current incarnation) dies now.
  void crash(const std::string& id) {
    if (auto w = worker(id))
      caf::anon_send(w, crash_atom::value);
  }

  /// Whether the call of expectation `n` has arrived.
  bool arrived(std::size_t n) {
    std::lock_guard<std::mutex> g(mx_);
    return exps_.at(n).met;
  }

  /// What went against the script, in order; empty when all went as scripted.
  std::vector<std::string> surprises() {
    std::lock_guard<std::mutex> g(mx_);
    return surprises_;
  }

  /// Expectations no call met.
  std::vector<std::string> unmet() {
    std::lock_guard<std::mutex> g(mx_);
    std::vector<std::string> out;
    for (auto& e : exps_)
      if (!e.met)
        out.push_back(e.command + (e.worker.empty() ? "" : " on " + e.worker));
    return out;
  }

  /// How often worker `id` was started (its incarnations).
  int starts(const std::string& id) {
    std::lock_guard<std::mutex> g(mx_);
    auto it = starts_.find(id);
    return it == starts_.end() ? 0 : it->second;
  }

  /// The current incarnation of worker `id` (invalid before its first start).
  caf::actor worker(const std::string& id) {
    std::lock_guard<std::mutex> g(mx_);
    auto it = current_.find(id);
    return it == current_.end() ? caf::actor{} : it->second;
  }

  /// The id of a worker handle (a leased worker, say); empty when unknown.
  std::string id_of(const caf::actor& w) {
    std::lock_guard<std::mutex> g(mx_);
    for (auto& [id, a] : current_)
      if (a == w)
        return id;
    return {};
  }

  /// Scripted workers alive now.
  int alive() {
    std::lock_guard<std::mutex> g(mx_);
    return alive_;
  }

  /// For pool_config::start_worker.
  worker_starter starter();

  // -- used by the scripted workers ---------------------------------------------

  /// A call arrived: what to do, and the expectation it met (none: a surprise).
  std::pair<scripted_reply, std::optional<std::size_t>>
  on_call(const std::string& worker, const caf::actor& self, const command_request& req) {
    std::lock_guard<std::mutex> g(mx_);
    auto what = "'" + req.command + "' on " + worker
                + (req.session_id ? " in session " + *req.session_id : std::string{});
    for (std::size_t i = 0; i < exps_.size(); ++i) {
      auto& e = exps_[i];
      if (e.met || e.command != req.command)
        continue;
      if ((!e.worker.empty() && e.worker != worker) || (e.session && e.session != req.session_id)) {
        surprises_.push_back(what + ": expected on " + (e.worker.empty() ? "any worker" : e.worker)
                             + (e.session ? " in session " + *e.session : std::string{}));
        return {scripted_reply::broken("surprise: " + surprises_.back()), std::nullopt};
      }
      e.met = true;
      e.served_by = self;
      return {e.reply, i};
    }
    surprises_.push_back(what + ": not expected");
    return {scripted_reply::broken("surprise: " + surprises_.back()), std::nullopt};
  }

  scripted_reply release_reply(std::size_t n) {
    std::lock_guard<std::mutex> g(mx_);
    auto r = exps_.at(n).release_with;
    return r.kind == scripted_reply::hold ? scripted_reply::ok() : r;
  }

  bool started(const std::string& id, const caf::actor& a) {
    std::lock_guard<std::mutex> g(mx_);
    ++starts_[id];
    current_[id] = a;
    ++alive_;
    auto it = init_failures_.find(id);
    if (it == init_failures_.end() || it->second == 0)
      return true;
    --it->second;
    return false;
  }

  void stopped() {
    std::lock_guard<std::mutex> g(mx_);
    --alive_;
  }

private:
  struct expectation {
    std::string command;
    std::string worker;
    std::optional<std::string> session;
    scripted_reply reply;
    scripted_reply release_with;
    caf::actor served_by;
    bool met;
  };
  std::mutex mx_;
  std::vector<expectation> exps_;
  std::vector<std::string> surprises_;
  std::map<std::string, int> starts_;
  std::map<std::string, int> init_failures_;
  std::map<std::string, caf::actor> current_;
  int alive_ = 0;
};

namespace detail {

struct held_call {
  caf::response_promise rp;
  bool pooled = false;
  std::string command;
};

struct scripted_state {
  worker_start_info info;
  std::shared_ptr<worker_script> script;
  std::map<std::size_t, held_call> held;  // by expectation number
  bool retired = false;
  std::uint64_t requests = 0;

  static inline const char* name = "dspex.scripted_worker";

  ~scripted_state() {
    if (script)
      script->stopped();
  }
};

using scripted_actor = caf::stateful_actor<scripted_state>;

inline void fail_held(scripted_actor* self, const caf::error& err) {
  auto held = std::move(self->state.held);
  self->state.held.clear();
  for (auto& [n, h] : held)
    h.rp.deliver(err);
}

// Carries out `r` for one call, as worker.cpp does with a reply frame.
inline void act(scripted_actor* self, const scripted_reply& r, caf::response_promise& rp,
                bool pooled, const std::string& command) {
  auto& st = self->state;
  switch (r.kind) {
    case scripted_reply::answer:
    case scripted_reply::python_error: {
      ++st.requests;
      bool ok = r.kind == scripted_reply::answer;
      // The pool hears first, as worker.cpp: a caller's next request then
      // finds this worker free.
      if (pooled && st.info.pool)
        self->send(st.info.pool, done_atom::value, ok);
      if (ok) {
        auto out = r.result;
        out["worker"] = st.info.id;
        out["command"] = command;
        rp.deliver(std::move(out));
      } else {
        rp.deliver(make_python_error(bridge::python_error{"ScriptedError", r.message, ""}));
      }
      return;
    }
    case scripted_reply::crash: {
      auto err = make_error(errc::worker_crashed, "worker " + st.info.id + ": " + r.message);
      rp.deliver(err);
      fail_held(self, err);
      self->quit(make_error(errc::process_exited, r.message));
      return;
    }
    case scripted_reply::protocol_error: {
      auto err = make_error(errc::protocol_error, r.message);
      rp.deliver(err);
      fail_held(self, err);
      self->quit(err);
      return;
    }
    case scripted_reply::hold:
      return;  // handled by the caller
  }
}

inline caf::behavior scripted_worker(scripted_actor* self, worker_start_info info,
                                     std::shared_ptr<worker_script> script) {
  auto& st = self->state;
  st.info = std::move(info);
  st.script = std::move(script);
  auto me = caf::actor_cast<caf::actor>(self);
  if (!st.script->started(st.info.id, me)) {
    auto err = make_error(errc::init_failed, "scripted init failure of " + st.info.id);
    if (st.info.pool)
      self->send(st.info.pool, init_fail_atom::value, st.info.id, err);
    self->quit(err);
    return {};
  }
  if (st.info.pool)
    self->send(st.info.pool, worker_up_atom::value, st.info.id, st.info.overflow);
  self->set_exit_handler([self](caf::exit_msg& msg) {
    fail_held(self, make_error(errc::shutting_down, "worker " + self->state.info.id + " is stopping"));
    self->quit(msg.reason);
  });
  return {
    [](ready_atom) -> caf::result<void> { return caf::unit; },
    [self](exec_atom, command_request& req) -> caf::result<json> {
      auto& st = self->state;
      if (st.retired) {
        if (req.pooled && st.info.pool)
          self->send(st.info.pool, done_atom::value, true);
        return make_error(errc::shutting_down, "worker " + st.info.id + " is stopping");
      }
      auto [r, n] = st.script->on_call(st.info.id, caf::actor_cast<caf::actor>(self), req);
      auto rp = self->make_response_promise();
      if (r.kind == scripted_reply::hold && n) {
        st.held.emplace(*n, detail::held_call{rp, req.pooled, req.command});
        return caf::delegated<json>();
      }
      // A surprise still frees the worker in the pool's books.
      if (!n && req.pooled && st.info.pool)
        self->send(st.info.pool, done_atom::value, true);
      if (!n) {
        rp.deliver(make_error(errc::protocol_error, r.message));
        return caf::delegated<json>();
      }
      act(self, r, rp, req.pooled, req.command);
      return caf::delegated<json>();
    },
    [self](release_atom, std::size_t n) {
      auto& st = self->state;
      auto it = st.held.find(n);
      if (it == st.held.end())
        return;  // failed meanwhile (retired, crashed)
      auto h = std::move(it->second);
      st.held.erase(it);
      act(self, st.script->release_reply(n), h.rp, h.pooled, h.command);
    },
    [self](crash_atom) {
      auto err = make_error(errc::worker_crashed, "worker " + self->state.info.id + " crashed");
      fail_held(self, err);
      self->quit(make_error(errc::process_exited, "scripted crash"));
    },
    [self](retire_atom) {
      auto& st = self->state;
      if (st.retired)
        return;
      st.retired = true;
      fail_held(self, make_error(errc::worker_crashed, "worker " + st.info.id + " was replaced"));
    },
    // A pool that starts after its workers (its init runs once scheduled,
    // so the worker supervisor may be up by then) adopts the workers it has
    // not heard from, its own fresh ones included. As worker.cpp: follow the
    // new pool and announce again (the pool ignores a repeated worker_up).
    // Unhandled, CAF would print the message from its printer actor.
    [self](adopt_atom, caf::actor& pool) {
      auto& st = self->state;
      st.info.pool = pool;
      if (!st.retired && pool)
        self->send(pool, worker_up_atom::value, st.info.id, st.info.overflow);
    },
    [self](stats_atom) -> json {
      auto& st = self->state;
      return json{{"id", st.info.id},
                  {"inflight", st.held.size()},
                  {"requests", st.requests},
                  {"retired", st.retired},
                  {"overflow", st.info.overflow}};
    },
  };
}

} // namespace detail

inline worker_starter worker_script::starter() {
  auto self = shared_from_this();
  return [self](caf::local_actor* ctx, const worker_start_info& info) -> caf::expected<caf::actor> {
    return ctx->spawn(detail::scripted_worker, info, self);
  };
}

} // namespace dspex::test
