#include <dspex/actors/pool/worker.hpp>

#include <dspex/actors/pool/detail/deadlines.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/detail/host_call_router.hpp>
#include <dspex/actors/pool/detail/inflight_table.hpp>
#include <dspex/actors/process/detail/process_link.hpp>
#include <dspex/actors/pool/detail/worker_port.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/bridge/protocol.hpp>
#include <dspex/bridge/python_process.hpp>
#include <dspex/supervision/child_spec.hpp>

#include <dspex_build_paths.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

static_assert(!std::is_convertible<nlohmann::json, caf::error>::value,
              "a json result must never be delivered as an error");

namespace dspex {

namespace {

bool is_dir(const std::string& p) {
  struct stat st;
  return !p.empty() && ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

} // namespace

std::string locate_python_dir() {
  if (auto env = std::getenv("DSPEX_PYTHON_PATH"); env && is_dir(env))
    return env;
  if (is_dir(DSPEX_SOURCE_PYTHON_DIR))
    return DSPEX_SOURCE_PYTHON_DIR;
  if (is_dir(DSPEX_INSTALL_PYTHON_DIR))
    return DSPEX_INSTALL_PYTHON_DIR;
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string exe(buf, static_cast<std::size_t>(n));
    auto dir = exe.substr(0, exe.rfind('/'));
    auto candidate = dir + "/../share/dspex/python";
    if (is_dir(candidate))
      return candidate;
  }
  return DSPEX_SOURCE_PYTHON_DIR;
}

namespace {

enum class phase { starting, ready, busy, degraded, grace, terminating };

// A stream's two windows (chunks and bytes) as the worker is configured.
stream_limits stream_limits_of(const worker_config& c) {
  return stream_limits{c.stream_window, c.stream_window_bytes};
}

const char* to_string(phase p) {
  switch (p) {
    case phase::starting: return "starting";
    case phase::ready: return "ready";
    case phase::busy: return "busy";
    case phase::degraded: return "degraded";
    case phase::grace: return "grace";
    case phase::terminating: return "terminating";
  }
  return "?";
}

using clock_type = std::chrono::steady_clock;

// A request that arrived while the worker was in its timeout grace.
struct held_request {
  command_request req;
  caf::response_promise rp;
};

struct worker_state {
  worker_config cfg;
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<bridge::python_process> proc;
  phase ph = phase::starting;
  // The requests in flight and their deadlines (behind one timer), shared
  // with the io thread, which answers ordinary replies itself; also the
  // answer counts (inflight_table.hpp).
  std::shared_ptr<inflight_table> table;
  std::vector<caf::response_promise> ready_waiters;
  caf::error stop_reason;  // why we were asked to stop
  caf::error init_error;   // set when init failed
  std::uint64_t shutdown_id = 0;  // the shutdown command's id: its reply is expected, not awaited

  // -- timeouts and replacement (see the header) --
  // Requests that timed out (their callers have command_timeout): a reply to
  // one of them within timeout_grace is discarded, not an unknown_id.
  std::unordered_set<std::uint64_t> late;
  // Requests whose caller was answered early (cancelled, or a chunk too
  // deep): the handler was sent a cancel and its slot stays taken until
  // its reply comes, dropped then (within timeout_grace, else the worker
  // is replaced). The pool hears (done) with the class the caller got.
  struct abandoned {
    bool pooled = false;
    std::uint64_t tag = 0;
    const char* cls = "cancelled";
  };
  std::unordered_map<std::uint64_t, abandoned> cancelled;
  // Host calls in flight (docs/architecture.md "Host calls"), by the
  // worker's call number: the request that made each, and where it went.
  struct host_call {
    std::uint64_t request = 0;
    std::string target;
    caf::actor callee;  // a pool's; invalid for a host function
  };
  std::unordered_map<std::uint64_t, host_call> calls;
  std::uint64_t host_calls_total = 0;
  std::vector<held_request> held;  // new work that came in during the grace
  bool stuck = false;      // a grace expired: a replacement was asked for
  bool retired = false;    // the pool replaces us: process killed, exit awaited
  bool proc_gone = false;  // ... and already reaped
  int exit_raw = 0;        // its waitpid status, once proc_gone
  /// The hard limit it was stopped for (cpu_limit, out_of_memory): what its
  /// callers hear and its exit event names. Empty: none.
  caf::error limit;
  bool adopted = false;    // a new pool took us over: join it once idle
  // Asked to stop while serving a pool: we serve what the pool already
  // routed here until it says it sends no more (begin_drain).
  bool draining = false;

  // -- stats --
  clock_type::time_point started = clock_type::now();
  clock_type::time_point last_activity = clock_type::now();  // a late reply (answers: table)
  std::uint64_t checkouts = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t soft_timeouts = 0;  // the handler ended within its grace
  std::uint64_t hard_timeouts = 0;  // it did not: the worker was replaced
  std::uint64_t cancels = 0;        // requests cancelled (caller, disconnect)
  // Requests that ran in a session. A count, not the ids: a worker serves
  // many sessions over its life and must not keep one byte per session.
  std::uint64_t session_requests = 0;

  static inline const char* name = "dspex.worker";

  worker_state() = default;
  worker_state(const worker_state&) = delete;
  worker_state& operator=(const worker_state&) = delete;
  // The io thread's callbacks may outlive the actor: they must not keep the
  // pool alive nor answer in the name of a worker that is gone.
  ~worker_state() {
    if (table) {
      table->set_direct(false);
      table->bind(caf::actor_addr{}, caf::actor{});
    }
  }

  /// Worker-level faults since the last answer (timeouts) count in
  /// table.consecutive_faults; Python exceptions are answers and reset it.
  const char* health(const inflight_table::counts& c) const {
    if (!late.empty() || stuck || retired)
      return "unhealthy";
    return c.consecutive_faults > 0 ? "degraded" : "healthy";
  }

  bool in_grace() const { return !late.empty() || stuck; }
};

using worker_actor = caf::stateful_actor<worker_state>;

void cancel_calls_of(worker_actor* self, std::optional<std::uint64_t> request);

void fail_all(worker_actor* self, const caf::error& err) {
  cancel_calls_of(self, std::nullopt);
  for (auto& req : self->state.table->take_all())
    req.rp.deliver(err);
  auto held = std::move(self->state.held);
  self->state.held.clear();
  for (auto& h : held)
    h.rp.deliver(err);
}

// A pooled request that never reaches Python still frees the worker in the
// pool's books: the pool learns a worker is free only from (done).
void release_pooled(worker_actor* self, const command_request& req) {
  if (req.pooled && self->state.cfg.pool)
    self->send(self->state.cfg.pool, done_atom::value, true, req.tag);
}

// A worker that failed its init never joined its pool; the pool still wants
// to know (a failed init is a worker-level fault for its circuit breaker).
void report_init_failure(worker_actor* self, const caf::error& err) {
  if (self->state.cfg.pool)
    self->send(self->state.cfg.pool, init_fail_atom::value, self->state.cfg.id, err);
}

void fail_ready_waiters(worker_actor* self, const caf::error& err) {
  for (auto& rp : self->state.ready_waiters)
    rp.deliver(err);
  self->state.ready_waiters.clear();
}

// The worker can no longer be trusted: fail everyone, stop the process (the
// state's destructor drops the handle, which kills and reaps it) and exit so
// the supervisor replaces us.
void give_up(worker_actor* self, caf::error caller_error, caf::error exit_reason) {
  fail_all(self, caller_error);
  fail_ready_waiters(self, exit_reason);
  if (self->state.proc)
    self->state.proc->kill();
  self->quit(std::move(exit_reason));
}

// Whether the pool may write to our pipe itself (worker_port.hpp): only
// while nothing about this worker asks for the actor to see the request.
void sync_accepting(worker_actor* self) {
  auto& st = self->state;
  st.table->set_accepting(st.ph != phase::starting && st.ph != phase::terminating && !st.in_grace()
                          && !st.retired && !st.adopted && st.proc != nullptr);
}

// Tells the pool we serve, with the port it may write to us through.
void announce_up(worker_actor* self) {
  auto& st = self->state;
  sync_accepting(self);
  auto port = std::make_shared<worker_port>(st.table, st.proc, self->address(), st.cfg.request_timeout,
                                            st.cfg.max_json_depth,
                                            stream_limits_of(st.cfg));
  self->send(st.cfg.pool, worker_up_atom::value, st.cfg.id, st.cfg.overflow, std::move(port));
}

// A pool that took this worker over (adopt) hears worker_up once nothing of
// the old pool's is in flight, so it never hands us work on top of that.
void join_adopter(worker_actor* self) {
  auto& st = self->state;
  if (!st.adopted || st.table->snapshot().inflight > 0 || st.in_grace() || st.retired
      || st.ph == phase::starting || st.ph == phase::terminating || !st.cfg.pool)
    return;
  st.adopted = false;
  st.table->set_direct(true);
  announce_up(self);
}

void update_phase(worker_actor* self) {
  auto& st = self->state;
  sync_accepting(self);
  if (st.ph == phase::starting || st.ph == phase::terminating)
    return;
  if (st.in_grace())
    st.ph = phase::grace;
  else if (auto c = st.table->snapshot(); c.inflight > 0)
    st.ph = phase::busy;
  else
    st.ph = c.consecutive_faults > 0 ? phase::degraded : phase::ready;
}

std::uint64_t send_request(worker_actor* self, const std::string& command, json args,
                           std::optional<std::string> session, std::chrono::milliseconds timeout,
                           caf::response_promise rp, bool is_init, bool pooled = false,
                           std::uint64_t tag = 0, std::uint64_t ref = 0, caf::actor sink = {},
                           std::uint8_t depth = 0) {
  auto& st = self->state;
  auto id = st.table->next_id();
  auto deadline = clock_type::now() + timeout;
  const auto window = sink ? stream_limits_of(st.cfg) : stream_limits{};
  // In the table before the frame is written: the io thread may read the
  // reply before this function returns.
  arm_deadline(self, st.table->add(id, inflight_request{std::move(rp), is_init, pooled, tag, timeout,
                                                        deadline, ref, std::move(sink), stream_credit{window}, 0,
                                                        depth, session}));
  std::string frame;
  std::string refusal;
  if (auto written = bridge::append_request_frame(
        frame, id, command, args, session, st.cfg.max_json_depth,
        {is_init ? 0 : static_cast<std::uint64_t>(timeout.count()), window.chunks, window.bytes});
      !written)
    refusal = written.why == bridge::write_refusal::too_deep
                ? bridge::depth_message("args", st.cfg.max_json_depth)
                : "request holds a string that is not UTF-8 (JSON carries text only)";
  else if (!st.proc->send_frame(std::move(frame)))
    refusal = "request above max_frame_bytes (" + std::to_string(st.cfg.max_frame_bytes) + ")";
  if (!refusal.empty()) {
    auto refused = st.table->take(id);
    refused->rp.deliver(make_error(errc::invalid_request, std::move(refusal)));
    if (pooled && st.cfg.pool)
      self->send(st.cfg.pool, done_atom::value, true, tag);
    return 0;
  }
  update_phase(self);
  return id;
}

void dispatch(worker_actor* self, command_request& req, caf::response_promise rp) {
  auto& st = self->state;
  auto timeout = req.timeout.count() > 0 ? req.timeout : st.cfg.request_timeout;
  if (req.pooled)
    ++st.checkouts;
  send_request(self, req.command, std::move(req.args), std::move(req.session_id), timeout,
               std::move(rp), false, req.pooled, req.tag, req.ref, std::move(req.sink), req.depth);
}

// Tells the Python side to stop request `id` (protocol 2).
void send_cancel(worker_actor* self, std::uint64_t id) {
  std::string frame;
  bridge::append_cancel_frame(frame, id);
  if (self->state.proc)
    self->state.proc->send_frame(std::move(frame));
}

// The caller of `req` (request `id`) has its answer already; the handler
// is told to stop, and its slot stays taken until it does (see `cancelled`).
void abandon(worker_actor* self, std::uint64_t id, const inflight_request& req, const char* cls) {
  auto& st = self->state;
  cancel_calls_of(self, id);
  st.cancelled.emplace(id, worker_state::abandoned{req.pooled, req.tag, cls});
  send_cancel(self, id);
  self->delayed_send(self, st.cfg.timeout_grace, grace_atom::value, id);
}

// (cancel) of request `ref` of `caller`: it is answered `cancelled` now.
void cancel_request(worker_actor* self, const caf::actor_addr& caller, std::uint64_t ref) {
  auto& st = self->state;
  auto taken = st.table->take_by_ref(caller, ref);
  if (!taken) {
    // Held in the grace: it never reached Python.
    auto h = std::find_if(st.held.begin(), st.held.end(), [&](const held_request& h) {
      return ref != 0 && h.req.ref == ref && caf::actor_cast<caf::actor_addr>(h.rp.source()) == caller;
    });
    if (h == st.held.end())
      return;  // answered already, or never here
    ++st.cancels;
    auto req = std::move(h->req);
    auto rp = std::move(h->rp);
    st.held.erase(h);
    rp.deliver(make_error(errc::cancelled, "request cancelled by its caller"));
    if (req.pooled && st.cfg.pool)
      self->send(st.cfg.pool, done_atom::value, false, req.tag, std::string("cancelled"));
    return;
  }
  ++st.cancels;
  taken->second.rp.deliver(make_error(errc::cancelled, "request cancelled by its caller"));
  abandon(self, taken->first, taken->second, "cancelled");
  update_phase(self);
}

// The abandoned request `id` ended: its slot is free.
void on_abandoned_end(worker_actor* self, std::uint64_t id) {
  auto& st = self->state;
  auto it = st.cancelled.find(id);
  auto a = it->second;
  st.cancelled.erase(it);
  st.table->forget_moot(id);
  st.last_activity = clock_type::now();
  st.table->note_answer(true);
  if (a.pooled && st.cfg.pool)
    self->send(st.cfg.pool, done_atom::value, false, a.tag, std::string(a.cls));
  update_phase(self);
  join_adopter(self);
}

// A reply to a request that timed out, within its grace: discarded (its
// caller has command_timeout). Once no timed-out request is left the
// worker is sound again: it tells its pool and sends what it held.
void on_late_reply(worker_actor* self) {
  auto& st = self->state;
  st.last_activity = clock_type::now();
  ++st.soft_timeouts;
  if (st.cfg.pool)
    self->send(st.cfg.pool, soft_timeout_atom::value);
  if (st.in_grace() || st.retired)
    return;
  update_phase(self);
  if (st.cfg.pool)
    self->send(st.cfg.pool, recovered_atom::value);
  auto held = std::move(st.held);
  st.held.clear();
  for (auto& h : held)
    dispatch(self, h.req, std::move(h.rp));
  join_adopter(self);
}

// -- host calls (docs/architecture.md "Host calls") ---------------------------

void write_call_error(worker_actor* self, std::uint64_t call, std::string_view cls,
                      const std::string& message) {
  std::string frame;
  bridge::append_call_error_frame(frame, call, cls, message);
  if (self->state.proc)
    self->state.proc->send_frame(std::move(frame));
}

void write_call_answer(worker_actor* self, std::uint64_t call, caf::expected<json> r) {
  auto& st = self->state;
  if (!st.proc)
    return;
  if (r) {
    std::string frame;
    auto written = bridge::append_call_result_frame(frame, call, *r, st.cfg.max_json_depth);
    if (!written)
      write_call_error(self, call, to_string(errc::result_too_deep),
                       written.why == bridge::write_refusal::too_deep
                         ? bridge::depth_message("the host call's result", st.cfg.max_json_depth)
                         : "the host call's result holds text that is not UTF-8");
    else if (!st.proc->send_frame(std::move(frame)))
      write_call_error(self, call, to_string(errc::invalid_request),
                       "the host call's result is above max_frame_bytes");
    return;
  }
  auto code = code_of(r.error());
  std::string message;
  if (auto py = python_error_of(r.error()))
    message = py->type + ": " + py->message;
  else
    message = detail_of(r.error());
  if (message.empty())
    message = describe(r.error());
  write_call_error(self, call, code ? to_string(*code) : "internal", message);
}

// Host call `k` ended: true when it was still in flight (ours to answer).
bool end_call(worker_actor* self, std::uint64_t k) {
  auto& st = self->state;
  auto it = st.calls.find(k);
  if (it == st.calls.end())
    return false;
  if (st.cfg.host_calls)
    st.cfg.host_calls->ended(it->second.target);
  st.calls.erase(it);
  return true;
}

// Nobody waits for host call `k` any more: its callee is told (a pool
// cancels the request), and whatever answer comes is dropped.
void cancel_call(worker_actor* self, std::uint64_t k) {
  auto it = self->state.calls.find(k);
  if (it == self->state.calls.end())
    return;
  if (it->second.callee)
    self->send(it->second.callee, cancel_atom::value, k);
  end_call(self, k);
}

// The host calls of request `request` (every one when none): its caller
// has its answer, or the worker is going.
void cancel_calls_of(worker_actor* self, std::optional<std::uint64_t> request) {
  std::vector<std::uint64_t> ks;
  for (auto& [k, c] : self->state.calls)
    if (!request || c.request == *request)
      ks.push_back(k);
  for (auto k : ks)
    cancel_call(self, k);
}

void on_host_call(worker_actor* self, bridge::reply& rep) {
  auto& st = self->state;
  const auto k = rep.call.call;
  auto refuse = [&](errc code, const std::string& why) { write_call_error(self, k, to_string(code), why); };
  if (st.calls.count(k) > 0)
    return refuse(errc::invalid_request, "host call " + std::to_string(k) + " is in flight already");
  if (!rep.too_deep.empty())
    return refuse(errc::invalid_request, rep.too_deep);
  auto ctx = st.table->context_of(rep.id);
  if (!ctx)
    return refuse(errc::invalid_request,
                  "no request " + std::to_string(rep.id) + " in flight on worker " + st.cfg.id);
  auto router = st.cfg.host_calls;
  if (!router)
    return refuse(errc::unavailable, "host calls need a node (this worker runs on its own)");
  if (ctx->depth + 1u > router->max_depth())
    return refuse(errc::invalid_request, "host calls nest deeper than max_call_depth ("
                                           + std::to_string(router->max_depth()) + ")");
  const auto now = clock_type::now();
  if (ctx->deadline <= now)
    return refuse(errc::command_timeout, "the calling request's deadline has passed");
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(ctx->deadline - now);
  if (rep.call.timeout_ms > 0)
    left = std::min(left, std::chrono::milliseconds(rep.call.timeout_ms));
  left = std::max(left, std::chrono::milliseconds(1));
  std::optional<std::string> session;
  using rule = bridge::host_call_frame::session_rule;
  if (rep.call.session == rule::same)
    session = ctx->session;
  else if (rep.call.session == rule::named)
    session = rep.call.session_id;
  const auto& target = rep.call.target;
  if (target.rfind("pool:", 0) == 0) {
    auto callee = router->pool(target.substr(5));
    if (!callee)
      return refuse(errc::invalid_request, "host call target '" + target + "': no such pool on this node");
    auto req = make_command(rep.call.command, std::move(rep.result), std::move(session), left);
    req.ref = k;  // the pool knows the call by it, and cancels it by it
    req.depth = static_cast<std::uint8_t>(ctx->depth + 1);
    st.calls.emplace(k, worker_state::host_call{rep.id, target, callee});
    ++st.host_calls_total;
    router->started(target);
    self->request(callee, caf::infinite, exec_atom::value, std::move(req))
      .then([self, k](json& r) { if (end_call(self, k)) write_call_answer(self, k, std::move(r)); },
            [self, k](caf::error& e) {
              if (end_call(self, k))
                write_call_answer(self, k, classify(std::move(e)));
            });
    return;
  }
  if (target.rfind("fn:", 0) == 0) {
    auto fn = router->function(target.substr(3));
    if (!fn)
      return refuse(errc::invalid_request, "host call target '" + target + "': no such host function");
    st.calls.emplace(k, worker_state::host_call{rep.id, target, {}});
    ++st.host_calls_total;
    router->started(target);
    host_call_info info{target.substr(3), std::move(session), ctx->deadline, st.cfg.id,
                        ctx->depth + 1};
    // The one answer, to this worker by address (weak: a reply kept by the
    // embedder must not keep this worker's state).
    auto answer = [addr = self->address(), k, once = std::make_shared<std::atomic<bool>>(false)](
                    bool ok, json result, caf::error err) {
      if (once->exchange(true))
        return;
      if (auto a = caf::actor_cast<caf::actor>(addr))
        caf::anon_send(a, host_result_atom::value, k, ok, std::move(result), std::move(err));
    };
    host_reply reply = [answer](caf::expected<json> r) {
      if (r)
        answer(true, std::move(*r), caf::error{});
      else
        answer(false, json(), r.error());
    };
    // A function's exception is its caller's host_error, like a handler's
    // python_error: nothing else changes.
    auto threw = [answer](const std::string& what) {
      answer(false, json{{"host_error", what}}, caf::error{});
    };
    if (fn->async) {
      try {
        fn->async(std::move(rep.result), info, reply);
      } catch (const std::exception& e) {
        threw(e.what());
      } catch (...) {
        threw("unknown exception");
      }
      return;
    }
    router->run_blocking([fn, args = std::move(rep.result), info, reply, threw] {
      try {
        reply(fn->sync(args, info));
      } catch (const std::exception& e) {
        threw(e.what());
      } catch (...) {
        threw("unknown exception");
      }
    });
    return;
  }
  refuse(errc::invalid_request, "host call target must be 'pool:NAME' or 'fn:NAME', not '" + target + "'");
}

// A chunk the io thread did not deliver: out of order, for a request that
// asked for none, for nobody, or too deep.
void on_chunk(worker_actor* self, bridge::reply& rep) {
  auto& st = self->state;
  if (!rep.too_deep.empty()) {
    // The stream cannot go on: its caller hears result_too_deep now.
    if (auto taken = st.table->take(rep.id, true)) {
      taken->rp.deliver(make_error(errc::result_too_deep, rep.too_deep));
      abandon(self, rep.id, *taken, "result_too_deep");
      return;
    }
  }
  std::string why;
  auto v = rep.too_deep.empty() ? st.table->chunk(rep, why) : chunk_verdict::unknown;
  if (v == chunk_verdict::delivered || v == chunk_verdict::moot)
    return;
  if (v == chunk_verdict::unknown && (st.cancelled.count(rep.id) > 0 || st.late.count(rep.id) > 0))
    return;  // its caller has its answer: what the handler still sends is moot
  if (v == chunk_verdict::unknown)
    why = "chunk for request " + std::to_string(rep.id) + " that nobody is waiting for";
  give_up(self, make_error(errc::protocol_error, why), make_error(errc::protocol_error, why));
}

void on_frame(worker_actor* self, const std::string& body) {
  auto& st = self->state;
  if (st.retired)
    return;  // being replaced: whatever the killed process still wrote is moot
  auto parsed = bridge::parse_reply(body, st.cfg.max_json_depth);
  if (auto perr = std::get_if<bridge::protocol_error>(&parsed)) {
    auto detail = std::string(bridge::to_string(perr->code)) + ": " + perr->detail;
    give_up(self, make_error(errc::protocol_error, detail), make_error(errc::protocol_error, detail));
    return;
  }
  auto& rep = std::get<bridge::reply>(parsed);
  if (rep.kind == bridge::frame_kind::call) {
    on_host_call(self, rep);
    return;
  }
  if (rep.kind == bridge::frame_kind::cancel_call) {
    cancel_call(self, rep.seq);
    return;
  }
  if (rep.is_chunk()) {
    on_chunk(self, rep);
    return;
  }
  if (st.cancelled.count(rep.id) > 0) {
    on_abandoned_end(self, rep.id);
    return;
  }
  auto taken = st.table->take(rep.id);
  if (!taken && rep.id == st.shutdown_id && st.shutdown_id != 0)
    return;
  if (!taken && st.late.erase(rep.id) > 0) {
    st.table->forget_moot(rep.id);
    on_late_reply(self);
    return;
  }
  if (!taken) {
    auto detail = "unknown_id: reply to request " + std::to_string(rep.id)
                  + " that nobody is waiting for";
    give_up(self, make_error(errc::protocol_error, detail), make_error(errc::protocol_error, detail));
    return;
  }
  auto req = std::move(*taken);
  if (req.has_calls)
    cancel_calls_of(self, rep.id);  // answered with calls still open: nobody waits for them
  if (req.is_init) {
    if (!rep.success || !rep.too_deep.empty()) {
      // "invalid_config": the worker could not start as configured (a
      // handler module that does not import, a command shadowing a
      // built-in); its one-line message is what the pool and node report.
      auto err = !rep.success && rep.error.type == "invalid_config"
                   ? make_error(errc::invalid_config, rep.error.message)
                   : make_error(errc::init_failed,
                                "init ping failed: " + rep.error.message + rep.too_deep);
      report_init_failure(self, err);
      give_up(self, err, err);
      return;
    }
    st.ph = phase::ready;
    if (st.cfg.pool)
      announce_up(self);  // a worker on its own has no port to accept through
    for (auto& rp : st.ready_waiters)
      rp.deliver(caf::unit);
    st.ready_waiters.clear();
    return;
  }
  // Any answer, a Python exception or a refused result included, shows the
  // worker is sound.
  const bool plain = rep.success && rep.too_deep.empty();
  st.table->note_answer(plain);
  update_phase(self);
  // Tell the pool before the caller: a caller that sends its next request
  // the moment it has this reply then finds the worker already free (the
  // pool's mailbox has our (done) first), so session affinity holds.
  if (req.pooled && st.cfg.pool && plain)
    self->send(st.cfg.pool, done_atom::value, true, req.tag);
  else if (req.pooled && st.cfg.pool)
    self->send(st.cfg.pool, done_atom::value, rep.success, req.tag, std::string(reply_class(rep)));
  if (plain)
    req.rp.deliver(std::move(rep.result));
  else
    req.rp.deliver(reply_error(rep));
  join_adopter(self);
}

// "out_of_memory: ..." for the exit event's detail; empty without a limit.
std::string limit_note(const caf::error& limit) {
  return limit ? std::string(to_string(*code_of(limit))) + ": " + detail_of(limit) : std::string{};
}

// From the pool: it replaces this worker and its supervisor's
// terminate_child follows. The Python thread may be stuck in a request and
// could not read a shutdown frame, so the process is killed now. `why`: the
// limit it went for (its callers get that), else they get worker_crashed.
void retire(worker_actor* self, caf::error why) {
  auto& st = self->state;
  if (st.retired)
    return;
  st.retired = true;
  st.limit = std::move(why);
  st.table->set_direct(false);
  fail_all(self, st.limit ? st.limit
                          : make_error(errc::worker_crashed, "worker " + st.cfg.id + " was replaced"));
  if (st.proc)
    st.proc->kill();
}

void on_process_exit(worker_actor* self, int raw) {
  auto& st = self->state;
  bridge::exit_status status{raw};
  auto what = "python process " + std::to_string(st.proc ? st.proc->pid() : -1) + " ended: "
              + status.describe();
  // Exit reasons carry the exit status, so the supervisor's exit event
  // shows exit_code or signal (process_link.hpp).
  if (st.ph == phase::terminating || st.draining) {
    fail_all(self, st.limit ? st.limit : make_error(errc::shutting_down, what));
    fail_ready_waiters(self, make_error(errc::shutting_down, what));
    self->quit(with_exit_status(st.stop_reason, status, limit_note(st.limit)));
    return;
  }
  if (st.retired) {
    // Killed on purpose: the supervisor's terminate_child (an exit message)
    // ends the actor, so that this exit is one the supervisor asked for.
    st.proc_gone = true;
    st.exit_raw = raw;
    fail_all(self, st.limit ? st.limit
                            : make_error(errc::worker_crashed, "worker " + st.cfg.id + " was replaced"));
    return;
  }
  if (auto cause = status.limit_cause(); cause && st.cfg.pool && st.ph != phase::starting) {
    // The kernel enforced worker.limits: a limit's doing, not a crash. The
    // pool replaces this worker on purpose (no restart intensity spent);
    // the actor waits for that, as a retired one does.
    st.retired = true;
    st.proc_gone = true;
    st.exit_raw = raw;
    st.table->set_direct(false);
    st.limit = make_error(errc::cpu_limit, what + " (worker.limits cpu_seconds used up)");
    fail_all(self, st.limit);
    self->send(st.cfg.pool, limit_atom::value, st.limit);
    return;
  }
  auto crashed = make_error(errc::worker_crashed, what);
  if (st.ph == phase::starting) {
    auto err = make_error(errc::init_failed, what);
    report_init_failure(self, err);
    fail_all(self, err);
    fail_ready_waiters(self, err);
    self->quit(with_exit_status(err, status));
    return;
  }
  fail_all(self, crashed);
  if (status.clean())
    self->quit(caf::exit_reason::normal);
  else
    self->quit(with_exit_status(make_error(errc::process_exited, status.describe()), status));
}

// The deadline of request `id` passed. False: the worker gave up.
bool on_timeout(worker_actor* self, std::uint64_t id) {
  auto& st = self->state;
  auto taken = st.table->take(id, true);
  if (!taken)
    return true;
  if (taken->is_init) {
    auto err = make_error(errc::init_failed,
                          "no reply to the init ping within "
                            + std::to_string(st.cfg.init_timeout.count()) + " ms");
    report_init_failure(self, err);
    give_up(self, err, err);
    return false;
  }
  // The caller hears at its deadline; the worker gets a grace to answer
  // late (the reply is then discarded) before it is replaced.
  auto late = std::move(*taken);
  ++st.timeouts;
  st.table->note_fault();
  st.late.insert(id);
  cancel_calls_of(self, id);
  // Soft first: the handler is asked to stop; when it ends within the
  // grace the process is kept (on_late_reply).
  send_cancel(self, id);
  sync_accepting(self);  // before anything else can run: new work is held now
  late.rp.deliver(make_error(errc::command_timeout,
                             "worker " + st.cfg.id + " did not reply within "
                               + std::to_string(late.timeout.count()) + " ms"));
  if (st.cfg.pool)
    self->send(st.cfg.pool, timedout_atom::value, late.pooled, late.tag);
  self->delayed_send(self, st.cfg.timeout_grace, grace_atom::value, id);
  update_phase(self);
  return true;
}

json stats_of(worker_actor* self) {
  auto& st = self->state;
  auto now = clock_type::now();
  update_phase(self);  // answers the io thread gave change it
  auto c = st.table->snapshot();
  auto last = std::max(c.last_answer, st.last_activity);
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  return json{
    {"id", st.cfg.id},
    {"os_pid", st.proc ? st.proc->pid() : -1},
    {"state", to_string(st.ph)},
    {"health", st.health(c)},
    {"requests", c.requests},
    {"errors", c.errors},
    {"direct_replies", c.direct},
    {"timeouts", st.timeouts},
    {"soft_timeouts", st.soft_timeouts},
    {"hard_timeouts", st.hard_timeouts},
    {"cancelled", st.cancels},
    {"host_calls", st.calls.size()},
    {"host_calls_total", st.host_calls_total},
    {"cancelling", st.cancelled.size()},
    {"consecutive_faults", c.consecutive_faults},
    {"late", st.late.size()},
    {"held", st.held.size()},
    {"retired", st.retired},
    {"draining", st.draining},
    {"checkouts", st.checkouts + c.port_sends},
    {"port_sends", c.port_sends},
    {"overflow", st.cfg.overflow},
    {"session_requests", st.session_requests + c.port_session_sends},
    {"inflight", c.inflight},
    {"uptime_ms", duration_cast<milliseconds>(now - st.started).count()},
    {"last_activity_ms_ago", duration_cast<milliseconds>(now - last).count()},
  };
}

// A deliberate stop of a worker serving a pool drains first: requests the
// pool routed here before it heard of the stop still run, instead of
// failing with shutting_down. The pool answers (leaving) once it routes
// nothing more here and every request it sent was answered; then (or after
// drain_timeout, or at once when the pool is gone) the exit message comes
// back from ourselves and the staged stop begins. A worker still starting,
// replaced (its process is being killed), adopted or on its own stops at
// once. True: the stop waits.
bool begin_drain(worker_actor* self, const caf::exit_msg& msg) {
  auto& st = self->state;
  if (st.draining)
    return msg.source != self->address();  // ours: drained; another: already under way
  if (!st.cfg.pool || st.ph == phase::starting || st.retired || st.adopted)
    return false;
  st.draining = true;
  st.stop_reason = msg.reason;
  auto again = [self] { self->send_exit(self->address(), self->state.stop_reason); };
  self->request(st.cfg.pool, st.cfg.drain_timeout, leaving_atom::value)
    .then(again, [again](caf::error&) { again(); });
  return true;
}

caf::behavior worker_impl(worker_actor* self, std::shared_ptr<bridge::io_loop> loop,
                          worker_config cfg, std::shared_ptr<bridge::python_process> proc,
                          std::shared_ptr<inflight_table> table, caf::error spawn_error) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.loop = std::move(loop);
  st.table = std::move(table);
  st.table->bind(self->address(), st.cfg.pool);
  // The process was spawned before this actor (spawn_worker below), so the
  // supervisor knew its pid at once; its callbacks reach us through the inbox.
  if (!proc) {
    st.init_error = std::move(spawn_error);
    self->quit(st.init_error);
    return {};
  }
  st.proc = std::move(proc);
  send_request(self, "ping", json::object(), std::nullopt, st.cfg.init_timeout,
               self->make_response_promise(), true);

  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.ph == phase::terminating || begin_drain(self, msg))
      return;
    st.ph = phase::terminating;
    sync_accepting(self);
    st.stop_reason = msg.reason;
    if (st.retired) {
      // Its process is (being) killed already: no staged stop to wait out.
      if (st.proc_gone) {
        self->quit(with_exit_status(st.stop_reason, bridge::exit_status{st.exit_raw},
                                    limit_note(st.limit)));
        return;
      }
      st.proc->kill();
      return;
    }
    st.shutdown_id = st.table->next_id();
    bridge::request bye{st.shutdown_id, "shutdown", json::object(), std::nullopt};
    st.proc->stop(
      bridge::stop_plan{bridge::encode_request(bye), st.cfg.stop_grace, st.cfg.term_grace});
  });

  return {
    [self](ready_atom) -> caf::result<void> {
      auto& st = self->state;
      if (st.ph == phase::starting) {
        st.ready_waiters.push_back(self->make_response_promise());
        return caf::delegated<void>();
      }
      if (st.ph == phase::terminating)
        return make_error(errc::shutting_down, "worker is stopping");
      return caf::unit;
    },
    [self](exec_atom, command_request& req) -> caf::result<json> {
      auto& st = self->state;
      if (st.ph == phase::terminating || st.retired) {
        release_pooled(self, req);
        return make_error(errc::shutting_down, "worker " + st.cfg.id + " is stopping");
      }
      if (req.command.empty()) {
        release_pooled(self, req);
        return make_error(errc::invalid_request, "empty command");
      }
      // A worker on its own is an actor path of its own (single mode); the
      // writer would refuse such args too, this says so before the table.
      if (bridge::value_depth_exceeds(req.args, st.cfg.max_json_depth)) {
        release_pooled(self, req);
        return make_error(errc::invalid_request, bridge::depth_message("args", st.cfg.max_json_depth));
      }
      if (req.session_id)
        ++st.session_requests;
      auto rp = self->make_response_promise();
      if (st.in_grace()) {
        // In its grace the worker takes no new work: Python may still be
        // busy with the request that timed out. Held until the late reply
        // comes (then sent) or the worker is replaced (then failed).
        st.held.push_back(held_request{std::move(req), rp});
        return caf::delegated<json>();
      }
      dispatch(self, req, std::move(rp));
      return caf::delegated<json>();
    },
    [self](stats_atom) -> json { return stats_of(self); },
    [self](cancel_atom, std::uint64_t ref) {
      // From the caller itself: a worker on its own (single mode).
      cancel_request(self, caf::actor_cast<caf::actor_addr>(self->current_sender()), ref);
    },
    [self](cancel_atom, std::uint64_t ref, caf::actor_addr& caller) {
      // From the pool, on behalf of its caller.
      cancel_request(self, caller, ref);
    },
    [self](host_result_atom, std::uint64_t k, bool ok, json& result, caf::error& err) {
      // A host function's reply (host_reply), from any thread.
      if (!end_call(self, k))
        return;  // cancelled meanwhile
      if (ok)
        write_call_answer(self, k, std::move(result));
      else if (err)
        write_call_answer(self, k, std::move(err));
      else
        write_call_error(self, k, "host_error", result.value("host_error", std::string{}));
    },
    [self](ack_atom, std::uint64_t wire, std::uint64_t seq) {
      auto& st = self->state;
      if (!st.proc || !st.table->contains(wire))
        return;  // the stream ended meanwhile
      std::string frame;
      bridge::append_ack_frame(frame, wire, seq);
      st.proc->send_frame(std::move(frame));
    },
    [self](adopt_atom, caf::actor& pool) {
      // Still starting: its worker_up goes to the new pool once ready.
      self->state.cfg.pool = pool;
      self->state.table->set_pool(pool);
      self->state.adopted = self->state.ph != phase::starting;
      sync_accepting(self);
      // Until it joins, every frame goes through the actor (join_adopter).
      if (self->state.adopted)
        self->state.table->set_direct(false);
      join_adopter(self);
    },
    [self](frame_atom, std::string& body) { on_frame(self, body); },
    [self](proto_err_atom, std::string& detail) {
      if (self->state.retired)
        return;
      give_up(self, make_error(errc::protocol_error, detail),
              make_error(errc::protocol_error, detail));
    },
    [self](proc_exit_atom, int raw) { on_process_exit(self, raw); },
    [self](deadline_atom, std::int64_t at_ns) {
      auto& st = self->state;
      for (auto id : st.table->fire(deadline_book::from_ns(at_ns), clock_type::now()))
        if (!on_timeout(self, id))
          return;  // gave up: the worker is gone
      arm_deadline(self, st.table->next_timer());
    },
    [self](grace_atom, std::uint64_t id) {
      auto& st = self->state;
      if ((st.late.count(id) == 0 && st.cancelled.count(id) == 0) || st.stuck || st.retired)
        return;  // answered within the grace, or already on its way out
      st.stuck = true;
      ++st.hard_timeouts;
      if (st.cfg.pool) {
        // The pool replaces it on purpose (terminate_child + restart_child),
        // which spends none of the supervisor's restart intensity.
        self->send(st.cfg.pool, stuck_atom::value);
        return;
      }
      // A worker on its own has nobody to replace it on purpose: it exits,
      // and its supervisor counts that like a crash.
      auto reason = make_error(errc::command_timeout,
                               "request " + std::to_string(id) + " did not answer within "
                                 + std::to_string(st.cfg.timeout_grace.count())
                                 + " ms after its timeout");
      give_up(self, make_error(errc::worker_crashed, "worker replaced after a timeout"), reason);
    },
    [self](retire_atom) { retire(self, {}); },
    [self](retire_atom, caf::error& why) { retire(self, std::move(why)); },
  };
}

} // namespace

std::vector<std::pair<std::string, std::string>> worker_environment(const worker_config& cfg) {
  // Which wins for what: the first directory on the path that holds a
  // module is where Python imports it from. The config's python_path comes
  // first (it may hold its own `module` or package); the package directory
  // follows it, from the node's python_path or located, so neither the
  // config's python_path nor its env.PYTHONPATH can hide dspex_worker; then
  // the handler directories; then what the config's env and the host's
  // environment add.
  std::vector<std::string> dirs;
  auto add = [&dirs](const std::string& list) {
    std::size_t start = 0;
    while (start <= list.size()) {
      auto end = list.find(':', start);
      if (end == std::string::npos)
        end = list.size();
      auto d = list.substr(start, end - start);
      if (!d.empty() && std::find(dirs.begin(), dirs.end(), d) == dirs.end())
        dirs.push_back(std::move(d));
      start = end + 1;
    }
  };
  add(cfg.python_path);
  add(cfg.package_path.empty() ? locate_python_dir() : cfg.package_path);
  for (auto& d : cfg.handler_paths)
    add(d);
  for (auto& [k, v] : cfg.env)
    if (k == "PYTHONPATH")
      add(v);
  if (auto host = std::getenv("PYTHONPATH"); host && *host)
    add(host);
  std::string pythonpath;
  for (auto& d : dirs)
    pythonpath += (pythonpath.empty() ? "" : ":") + d;
  std::vector<std::pair<std::string, std::string>> env{{"PYTHONPATH", pythonpath},
                                                       {"PYTHONUNBUFFERED", "1"}};
  for (auto& kv : cfg.env)
    if (kv.first != "PYTHONPATH")
      env.push_back(kv);
  return env;
}

std::vector<std::string> worker_command_line(const worker_config& cfg) {
  std::vector<std::string> args{cfg.python, "-u", "-m", cfg.module, "--worker-id", cfg.id,
                                "--run-id", cfg.run_id.empty() ? bridge::host_run_id() : cfg.run_id,
                                "--mode", cfg.mode,
                                "--max-frame-bytes", std::to_string(cfg.max_frame_bytes)};
  // Preload modules go first: a spawned worker imports them itself (so
  // both start methods run the same code); a forked one finds them imported.
  if (!cfg.handler_modules.empty() || !cfg.preload.empty()) {
    std::string mods;
    for (auto& m : cfg.preload)
      mods += (mods.empty() ? "" : ",") + m;
    for (auto& m : cfg.handler_modules)
      mods += (mods.empty() ? "" : ",") + m;
    args.push_back("--handlers");
    args.push_back(mods);
  }
  if (cfg.fault_injection)
    args.push_back("--fault-injection");
  if (cfg.max_concurrency > 1) {
    args.push_back("--max-concurrency");
    args.push_back(std::to_string(cfg.max_concurrency));
  }
  for (auto& a : cfg.limits.worker_args())
    args.push_back(a);
  for (auto& a : cfg.extra_args)
    args.push_back(a);
  return args;
}

namespace {

bridge::process_options worker_process_options(const worker_config& cfg) {
  bridge::process_options opts;
  opts.executable = cfg.python;
  opts.args = worker_command_line(cfg);
  opts.args.erase(opts.args.begin());  // the executable itself
  opts.env = worker_environment(cfg);
  opts.max_frame_bytes = cfg.max_frame_bytes;
  opts.label = cfg.id;
  opts.batch_scheduling = cfg.sched_batch;
  return opts;
}

// Spawns the Python process with its callbacks routed through an inbox, then
// the worker actor holding it (`spawn_actor`), binds the inbox and, from a
// supervisor's start function, reports the pid (process_link.hpp).
template <class SpawnActor>
caf::actor spawn_with_process(caf::local_actor* ctx, const std::shared_ptr<bridge::io_loop>& loop,
                              worker_config cfg, SpawnActor spawn_actor) {
  auto inbox = std::make_shared<process_inbox>();
  auto table = std::make_shared<inflight_table>();
  bridge::process_callbacks cbs;
  cbs.on_frame = [inbox, table, max_depth = cfg.max_json_depth](std::string body) {
    // An ordinary reply is answered here, on the io thread; anything else
    // (and a malformed frame, parsed again there) is the actor's.
    auto parsed = bridge::parse_reply(body, max_depth);
    if (auto rep = std::get_if<bridge::reply>(&parsed); rep && table->answer(*rep))
      return;
    inbox->post(caf::make_message(frame_atom::value, std::move(body)));
  };
  cbs.on_protocol_error = [inbox](bridge::protocol_error e) {
    inbox->post(caf::make_message(proto_err_atom::value,
                                  std::string(bridge::to_string(e.code)) + ": " + e.detail));
  };
  cbs.on_exit = [inbox](bridge::exit_status s) {
    inbox->post(caf::make_message(proc_exit_atom::value, s.raw));
  };
  std::shared_ptr<bridge::python_process> proc;
  caf::error spawn_error;
  try {
    if (cfg.forker) {
      auto fs = cfg.forker->get();
      if (!fs || !fs->alive())
        throw std::runtime_error("the pool's fork server is not running");
      auto opts = worker_process_options(cfg);
      // The server already runs "python3 -u -m dspex_worker": only the
      // worker's own arguments travel.
      opts.args.erase(opts.args.begin(), opts.args.begin() + 3);
      proc = bridge::python_process::fork_from(*loop, *fs, std::move(opts), std::move(cbs),
                                               cfg.init_timeout);
    } else {
      proc = bridge::python_process::spawn(*loop, worker_process_options(cfg), std::move(cbs));
    }
  } catch (const std::exception& e) {
    spawn_error = make_error(errc::init_failed, e.what());
  }
  auto pid = proc ? proc->pid() : -1;
  auto a = spawn_actor(worker_impl, loop, std::move(cfg), std::move(proc), std::move(table),
                       std::move(spawn_error));
  inbox->bind(a);
  if (ctx && pid > 0)
    supervision::report_os_pid(ctx, pid);
  return a;
}

} // namespace

caf::actor spawn_worker(caf::actor_system& sys, std::shared_ptr<bridge::io_loop> loop,
                        worker_config cfg) {
  return spawn_with_process(nullptr, loop, std::move(cfg),
                            [&sys](auto fn, auto&&... xs) { return sys.spawn(fn, xs...); });
}

caf::actor spawn_worker(caf::local_actor* ctx, std::shared_ptr<bridge::io_loop> loop,
                        worker_config cfg) {
  return spawn_with_process(ctx, loop, std::move(cfg),
                            [ctx](auto fn, auto&&... xs) { return ctx->spawn(fn, xs...); });
}

} // namespace dspex
