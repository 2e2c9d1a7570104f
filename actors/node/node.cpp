#include <dspex/actors/node/node.hpp>

#include <dspex/actors/node/detail/io_scheduler.hpp>
#include <dspex/actors/node/monitor.hpp>
#include <dspex/actors/process/detail/os_process.hpp>
#include <dspex/actors/pool/pool.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/router.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>
#include <dspex/actors/session/session_registry.hpp>
#include <dspex/actors/pool/worker.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/bridge/python_process.hpp>
#include <dspex/supervision/events.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/publish.hpp>

#include <algorithm>
#include <cstdio>
#include <condition_variable>
#include <future>
#include <mutex>

namespace dspex {

namespace sup = supervision;
using namespace std::chrono_literals;

namespace {

using restarts_atom = caf::atom_constant<caf::atom("restarts")>;
using watch_atom = caf::atom_constant<caf::atom("watch")>;

} // namespace

// What the watcher tells the node's threads about the root's end.
struct node::root_watch {
  mutable std::mutex mx;
  mutable std::condition_variable cv;
  /// stop() asked the root to stop: its end is no failure.
  bool stopping = false;
  std::optional<root_failure> failure;
  std::vector<std::function<void(const root_failure&)>> callbacks;
};

namespace {

// The node's own subscriber: counts restarts per child path for `status`,
// remembers where restart intensities were reached, and monitors the root,
// so that a root that stops by itself is reported with the path that
// escalated.
struct watcher_state {
  std::map<std::string, int> restarts;
  /// Supervisor path -> restarts of its children, and how often it reached
  /// its restart intensity (metrics; it outlives the children it counts).
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> supervisors;
  /// Supervisor path -> the child that tipped its last intensity_reached,
  /// while that supervisor has not been started again since.
  std::map<std::string, std::string> gave_up;
  std::shared_ptr<node::root_watch> watch;
  caf::actor_addr root;
  static inline const char* name = "dspex.node_watch";
};

using watcher_actor = caf::stateful_actor<watcher_state>;

// Follows the chain of escalations down from the root: the root gave up
// because child X exited; X is a supervisor that gave up because of its
// child Y; and so on, to the deepest one.
root_failure explain(const watcher_state& st, const caf::error& reason) {
  root_failure f;
  f.reason = sup::render_reason(reason);
  std::string at = "root";
  for (auto i = st.gave_up.find(at); i != st.gave_up.end(); i = st.gave_up.find(at)) {
    f.path = at;
    f.child = i->second;
    at += "/" + f.child;
  }
  if (f.path.empty())
    f.message = "the root supervisor stopped by itself (reason " + f.reason + ")";
  else if (f.path == "root")
    f.message = "root reached its restart intensity (child " + f.child + ")";
  else
    f.message = f.path + " reached its restart intensity (child " + f.child
                + "), escalated to root";
  return f;
}

// A child event's path is its supervisor's path + "/" + child id.
std::string supervisor_of(const sup::supervision_event& ev) {
  return ev.path.substr(0, ev.path.size() - std::min(ev.path.size(), ev.child_id.size() + 1));
}

caf::behavior watcher(watcher_actor* self, std::shared_ptr<node::root_watch> watch) {
  self->state.watch = std::move(watch);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (msg.source != st.root)
      return;
    auto f = explain(st, msg.reason);
    std::vector<std::function<void(const root_failure&)>> cbs;
    {
      std::lock_guard<std::mutex> g(st.watch->mx);
      if (st.watch->stopping)
        return;  // stop() did it
      st.watch->failure = f;
      cbs = std::move(st.watch->callbacks);
      st.watch->callbacks.clear();
    }
    st.watch->cv.notify_all();
    for (auto& cb : cbs)
      try {
        cb(f);
      } catch (...) {
        // An embedder's callback must not take the watcher down with it.
      }
  });
  return {
    [self](sup::supervision_event& ev) {
      auto& st = self->state;
      switch (ev.kind) {
        case sup::event_kind::child_restarted:
          ++st.restarts[ev.path];
          ++st.supervisors[supervisor_of(ev)].first;
          [[fallthrough]];
        case sup::event_kind::child_started: {
          // A supervisor started again has recovered from what it gave up on.
          auto prefix = ev.path + "/";
          for (auto i = st.gave_up.begin(); i != st.gave_up.end();)
            if (i->first == ev.path || i->first.rfind(prefix, 0) == 0)
              i = st.gave_up.erase(i);
            else
              ++i;
          break;
        }
        case sup::event_kind::intensity_reached: {
          st.gave_up[supervisor_of(ev)] = ev.child_id;
          ++st.supervisors[supervisor_of(ev)].second;
          break;
        }
        default:
          break;
      }
    },
    [self](restarts_atom) -> json {
      json sups = json::object();
      for (auto& [path, n] : self->state.supervisors)
        sups[path] = {{"restarts", n.first}, {"intensity_stops", n.second}};
      return {{"children", self->state.restarts}, {"supervisors", std::move(sups)}};
    },
    [self](watch_atom, caf::actor& root) {
      self->state.root = root.address();
      self->monitor(root);
    },
  };
}

struct builder {
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<directory> dir;
  const node_options& opts;
  bridge_mode mode;
  std::vector<std::string>& pools;
  std::string& single_worker;
  std::vector<std::pair<std::string, std::string>>& named;
  std::vector<std::string>& remotes;
  std::size_t max_json_depth = bridge::default_max_json_depth;  ///< the tree's

  worker_config adjust(worker_config w) const {
    // The node's python_path locates the worker package; a config's own
    // python_path goes before it on the import path, not in its place
    // (worker_environment, worker.hpp).
    if (!opts.python_path.empty())
      w.package_path = opts.python_path;
    w.max_json_depth = max_json_depth;
    return w;
  }

  // Wraps a start function so the directory always holds the current handle.
  sup::start_fn registered(std::string key, sup::start_fn f) const {
    auto d = dir;
    return [d, key, f](caf::local_actor* ctx) -> caf::expected<caf::actor> {
      auto r = f(ctx);
      if (r)
        d->set(key, *r);
      return r;
    };
  }

  std::optional<sup::child_spec> build(const node_spec& n) {
    sup::child_spec spec;
    spec.id = n.id;
    spec.restart = n.restart;
    spec.significant = n.significant;
    if (auto s = std::get_if<std::shared_ptr<supervisor_node>>(&n.body)) {
      std::vector<sup::child_spec> kids;
      for (auto& c : (*s)->children)
        if (auto k = build(c))
          kids.push_back(std::move(*k));
      spec = sup::supervisor_child(n.id, (*s)->flags, std::move(kids));
      spec.restart = n.restart;
      spec.significant = n.significant;
    } else if (auto r = std::get_if<session_registry_config>(&n.body)) {
      auto c = *r;
      spec.start = registered("registry", [c](caf::local_actor* ctx) -> caf::expected<caf::actor> {
        return spawn_session_registry(ctx, c);
      });
    } else if (auto m = std::get_if<monitor_config>(&n.body)) {
      auto c = *m;
      auto d = dir;
      spec.start = registered("monitor", [c, d](caf::local_actor* ctx) -> caf::expected<caf::actor> {
        return spawn_monitor(ctx, c, d);
      });
    } else if (auto p = std::get_if<pool_config>(&n.body)) {
      if (mode == bridge_mode::disabled)
        return std::nullopt;
      if (mode == bridge_mode::single) {
        // ConditionalSupervisor's single mode: one worker in place of the pool.
        auto w = adjust(p->worker);
        w.id = n.id;
        w.mode = "single";
        named.emplace_back(p->name, "worker:" + n.id);
        return build_worker(n, w);
      }
      auto c = *p;
      c.worker = adjust(c.worker);
      auto d = dir;
      auto key = "pool:" + c.name;
      pools.push_back(c.name);
      named.emplace_back(c.name, key);
      spec = pool_supervisor_spec(
        n.id, c, loop, [d, key](caf::actor a) { d->set(key, a); },
        [d] { return d->get("registry"); });
      spec.restart = n.restart;
      spec.significant = n.significant;
    } else if (auto rp = std::get_if<remote_pool_config>(&n.body)) {
      // A remote pool starts no Python here: it runs in every mode.
      auto c = *rp;
      c.max_json_depth = max_json_depth;
      named.emplace_back(c.name, "remote:" + c.name);
      remotes.push_back(c.name);
      spec.start = registered("remote:" + c.name,
                              [c](caf::local_actor* ctx) { return spawn_remote_pool(ctx, c); });
    } else if (auto w = std::get_if<worker_config>(&n.body)) {
      if (mode == bridge_mode::disabled)
        return std::nullopt;
      return build_worker(n, adjust(*w));
    } else if (auto pr = std::get_if<process_config>(&n.body)) {
      os_process_config c{n.id, pr->command, pr->env, pr->cwd, pr->stop_signal};
      auto l = loop;
      spec.start = registered("process:" + n.id,
                              [c, l](caf::local_actor* ctx) -> caf::expected<caf::actor> {
                                return spawn_os_process(ctx, l, c);
                              });
    }
    if (n.shutdown)
      spec.shutdown = *n.shutdown;
    return spec;
  }

  sup::child_spec build_worker(const node_spec& n, worker_config w) {
    sup::child_spec spec;
    spec.id = n.id;
    spec.restart = n.restart;
    spec.significant = n.significant;
    if (n.shutdown)
      spec.shutdown = *n.shutdown;
    spec.await_ready = w.init_timeout + 1000ms;
    auto l = loop;
    if (single_worker.empty())
      single_worker = "worker:" + n.id;
    spec.start = registered("worker:" + n.id,
                            [w, l](caf::local_actor* ctx) -> caf::expected<caf::actor> {
                              return spawn_worker(ctx, l, w);
                            });
    return spec;
  }
};

// auto mode: can python3 start the worker package and answer a ping?
std::string probe_python(const tree_config& cfg, const node_options& opts,
                         bridge::io_loop& loop) {
  worker_config w;
  for (auto& n : cfg.root.children)
    if (auto p = std::get_if<pool_config>(&n.body))
      w = p->worker;
  if (!opts.python_path.empty())
    w.package_path = opts.python_path;
  caf::actor_system_config scfg;
  caf::actor_system sys{scfg};
  auto lp = std::shared_ptr<bridge::io_loop>(&loop, [](bridge::io_loop*) {});
  w.init_timeout = std::min<std::chrono::milliseconds>(w.init_timeout, 10s);
  auto a = spawn_worker(sys, lp, w);
  caf::scoped_actor self{sys};
  std::string problem;
  self->request(a, caf::infinite, ready_atom::value)
    .receive([] {}, [&](caf::error& e) { problem = describe(e); });
  self->send_exit(a, caf::exit_reason::kill);
  return problem;
}

} // namespace

void recommended_settings(caf::actor_system_config& cfg) {
  // One scheduler thread that also drives the io loop (actors/node/detail/io_scheduler.hpp):
  // dspex's actors only route messages; the work is in Python. A round trip
  // then wakes one host thread, as the bare loop does (README, Performance).
  // An embedder whose own actors compute sets scheduler.max-threads above 1
  // after this call and gets CAF's work-sharing scheduler with that many
  // threads, and the io loop on a thread of its own.
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads", 1);
  // DSPEX_IO_THREAD=1: the io loop on a thread of its own, as before the io
  // scheduler (for comparison, and as a way out should it misbehave).
  auto own = std::getenv("DSPEX_IO_THREAD");
  if (!own || std::string(own) != "1")
    use_io_scheduler(cfg);
}

caf::expected<std::shared_ptr<node>> node::start(caf::actor_system& sys, tree_config cfg,
                                                 node_options opts) {
  if (needs_network(cfg) && !sys.has_middleman())
    return make_error(errc::invalid_config,
                      "the tree listens or holds a remote_pool, but the actor_system has no "
                      "middleman: call dspex::network_settings(cfg, tree) before creating it");
  if (needs_tls(cfg) && !sys.has_openssl_manager())
    return make_error(errc::invalid_config,
                      "the tree uses tls, but the actor_system has no openssl module: call "
                      "dspex::network_settings(cfg, tree) before creating it");
  if (auto why = check_listen(cfg); !why.empty())
    return make_error(errc::invalid_config, "listen: " + why);
  if (needs_network(cfg))
    router_guard::max_message_bytes(cfg.max_remote_message_bytes);
  auto n = std::make_shared<node>(sys);
  n->loop_ = io_loop_for(sys);
  n->dir_ = std::make_shared<directory>();
  n->mode_ = cfg.mode;
  if (opts.reap_leftovers)
    bridge::reap_leftovers();
  if (cfg.mode == bridge_mode::auto_detect) {
    auto problem = probe_python(cfg, opts, *n->loop_);
    if (problem.empty()) {
      n->mode_ = bridge_mode::pool;
      n->mode_message_ = "auto: python3 and the worker package start; running pools";
    } else {
      n->mode_ = bridge_mode::disabled;
      n->mode_message_ = "auto: the Python bridge cannot start (" + problem
                         + "); running with the bridge disabled";
    }
  }
  n->max_json_depth_ = cfg.max_json_depth;
  builder b{n->loop_, n->dir_, opts, n->mode_, n->pool_names_, n->single_worker_, n->named_,
            n->remote_names_, cfg.max_json_depth};
  std::vector<sup::child_spec> children;
  for (auto& c : cfg.root.children)
    if (auto s = b.build(c))
      children.push_back(std::move(*s));
  n->watch_ = std::make_shared<root_watch>();
  n->events_ = sys.spawn(watcher, n->watch_);
  sup::supervisor_options so;
  so.path = "root";
  so.subscribers = opts.subscribers;
  so.subscribers.push_back(n->events_);
  auto root = sup::start_supervisor(sys, cfg.root.flags, std::move(children), so);
  if (!root) {
    caf::anon_send_exit(n->events_, caf::exit_reason::kill);
    n->stopped_ = true;
    return root.error();
  }
  n->root_ = *root;
  caf::anon_send(n->events_, watch_atom::value, n->root_);
  // Pools pre-warm in parallel; the node is ready when each says so.
  caf::scoped_actor self{sys};
  for (auto& name : n->pool_names_) {
    caf::error err;
    auto p = n->dir_->get("pool:" + name);
    self->request(p, opts.ready_timeout, ready_atom::value)
      .receive([] {}, [&](caf::error& e) { err = std::move(e); });
    if (err) {
      n->stop();
      // A worker that cannot start as configured (its handler module does
      // not import): the caller gets the worker's own line, as a config error.
      if (is(err, errc::invalid_config))
        return make_error(errc::invalid_config, "pool " + name + ": " + detail_of(err));
      return make_error(errc::init_failed, "pool " + name + " did not get ready: " + describe(err));
    }
  }
  if (!cfg.listen.empty())
    if (auto err = n->listen(cfg)) {
      n->stop();
      return err;
    }
  return n;
}

caf::error node::listen(const tree_config& cfg) {
  std::string why;
  if (!remote::parse_endpoint(cfg.listen, listen_host_, listen_port_, why))
    return make_error(errc::invalid_config, "listen: " + why);
  router_hooks hooks;
  std::weak_ptr<node> weak = shared_from_this();
  hooks.resolve = [weak](const std::string& name) -> caf::expected<caf::actor> {
    auto n = weak.lock();
    if (!n || n->stopped_)
      return make_error(errc::shutting_down, "the node is stopping");
    return n->resolve(name);
  };
  hooks.status = [weak]() -> json {
    auto n = weak.lock();
    if (!n || n->stopped_)
      return json{{"stopping", true}};
    return n->status();
  };
  hooks.pools = pool_names();
  hooks.max_json_depth = max_json_depth_;
  router_ = spawn_router(sys_, std::move(hooks));
  listen_tls_ = cfg.tls.enabled();
  // SO_REUSEADDR: a node restarted at once after a crash binds its port
  // again, despite the dead one's connections in TIME_WAIT.
  auto host = listen_host_ == "localhost" ? std::string("127.0.0.1") : listen_host_;
  auto port = listen_tls_ ? caf::openssl::publish(router_, listen_port_, host.c_str(), true)
                          : sys_.middleman().publish(router_, listen_port_, host.c_str(), true);
  if (!port) {
    caf::anon_send_exit(router_, caf::exit_reason::kill);
    router_ = nullptr;
    return make_error(errc::invalid_config, "listen " + cfg.listen + ": cannot publish: "
                                              + sys_.render(port.error()));
  }
  listen_port_ = *port;
  guard_ = router_guard::watch(sys_, listen_port_, cfg.listen_limits);
  if (!router_guard::active())
    std::fprintf(stderr, "dspex: warning: the router port's guard is not bound in this "
                         "executable (docs/security.md): no connection cap, handshake "
                         "timeout or BASP size bound\n");
  return {};
}

node::~node() {
  stop();
}

caf::actor node::target() const {
  if (mode_ == bridge_mode::disabled)
    return {};
  if (!pool_names_.empty())
    return dir_->get("pool:" + pool_names_.front());
  if (!single_worker_.empty())
    return dir_->get(single_worker_);
  return {};
}

caf::actor node::pool(const std::string& name) const {
  for (auto& [n, key] : named_)
    if (n == name)
      return dir_->get(key);
  return {};
}

std::vector<std::string> node::pool_names() const {
  std::vector<std::string> out;
  for (auto& kv : named_)
    out.push_back(kv.first);
  return out;
}

caf::expected<caf::actor> node::resolve(const std::string& name) const {
  if (mode_ == bridge_mode::disabled && (name.empty() || pool(name) == nullptr))
    return make_error(errc::unavailable, "the Python bridge is disabled"
                                           + (mode_message_.empty() ? "" : ": " + mode_message_));
  auto t = name.empty() ? target() : pool(name);
  if (t)
    return t;
  if (!name.empty() && std::none_of(named_.begin(), named_.end(),
                                    [&](auto& kv) { return kv.first == name; })) {
    std::string known;
    for (auto& kv : named_)
      known += (known.empty() ? "" : ", ") + kv.first;
    return make_error(errc::invalid_request, "pool: unknown pool \"" + name + "\"; known pools: "
                                               + (known.empty() ? "none" : known));
  }
  return make_error(errc::unavailable, "no pool or worker is running");
}

namespace {

using gone_atom = caf::atom_constant<caf::atom("gone")>;

// Stands in for the answer of an actor that died holding a request: CAF 0.17
// drops a response_promise silently, so without it the caller would wait
// for its whole backstop. Attached to the callee once the request is sent
// (a request to an actor already dead bounces first, with CAF's own
// request_receiver_down, so that case is classified as before).
class exit_notice : public caf::attachable {
public:
  static constexpr size_t token_type = 0x64737078;  // "dspx": matched by no other attachable

  exit_notice(caf::strong_actor_ptr caller, caf::message_id response_id, const void* tag)
      : caller_(std::move(caller)), response_id_(response_id), tag_(tag) {}

  void actor_exited(const caf::error& reason, caf::execution_unit* host) override {
    caller_->enqueue(nullptr, response_id_, caf::make_message(gone_atom::value, reason), host);
  }

  bool matches(const token& what) override {
    return what.subtype == token_type && what.ptr == tag_;
  }

private:
  caf::strong_actor_ptr caller_;
  caf::message_id response_id_;
  const void* tag_;
};

} // namespace

// Blocking calls into the tree from threads outside the actors, at no cost
// in CAF's clock thread: a request with a finite timeout arms a timer there
// (two wake-ups of caf.clock per call). The backstop is the blocking actor's
// own timed wait on its mailbox, and a callee that dies holding the request
// is noticed at once by an exit_notice. Blocking actors are kept for reuse
// (constructing one costs a few microseconds); one goes back only after a
// call that got its callee's answer and nothing else can still arrive.
struct node::caller_pool {
  explicit caller_pool(caf::actor_system& s) : sys(s) {}

  /// Sends (xs...) to `callee` and hands its answer to on_reply or on_error,
  /// exactly once: the callee's own error as it is, unavailable when the
  /// callee exited without answering, CAF's request_timeout after `backstop`.
  template <class OnReply, class OnError, class... Ts>
  void call(const caf::actor& callee, std::chrono::milliseconds backstop, OnReply on_reply,
            OnError on_error, Ts&&... xs) {
    if (!callee) {
      caf::error e = make_error(errc::unavailable, "no actor to ask");
      on_error(e);
      return;
    }
    auto self = acquire();
    auto& me = **self;
    auto response_id = me.request(callee, caf::infinite, std::forward<Ts>(xs)...).id();
    // The tag is this call's own: a freed notice's address may be reused by
    // another call's notice on the same callee.
    char tag = 0;
    auto cp = caf::actor_cast<caf::abstract_actor*>(callee);
    cp->attach(caf::attachable_ptr{
      new exit_notice(caf::actor_cast<caf::strong_actor_ptr>(me.ctrl()), response_id, &tag)});
    bool answered = true;
    // A notice no longer attached has fired: its message may still arrive.
    // (Detached on every way out: an attached one holds this caller.)
    bool attached = true;
    {
      auto detach = caf::detail::make_scope_guard([&] {
        attached = cp->detach(caf::attachable::token{exit_notice::token_type, &tag}) > 0;
      });
      caf::blocking_actor::accept_one_cond rc;
      me.varargs_receive(
        rc, response_id, std::move(on_reply), [&](caf::error& e) { on_error(e); },
        [&](gone_atom, caf::error& reason) {
          answered = false;
          caf::error e = make_error(errc::unavailable,
                                    "the actor serving the request exited without answering ("
                                      + supervision::render_reason(reason) + ")");
          on_error(e);
        },
        caf::after(backstop) >> [&] {
          answered = false;
          caf::error e = caf::make_error(caf::sec::request_timeout);
          on_error(e);
        });
    }
    if (answered && attached)
      release(std::move(self));
  }

  void clear() {
    std::vector<std::unique_ptr<caf::scoped_actor>> gone;
    std::lock_guard<std::mutex> g(mx);
    gone.swap(idle);
  }

private:
  /// Enough for the callers a node serves at once; more are made and dropped.
  static constexpr size_t max_idle = 64;

  std::unique_ptr<caf::scoped_actor> acquire() {
    {
      std::lock_guard<std::mutex> g(mx);
      if (!idle.empty()) {
        auto self = std::move(idle.back());
        idle.pop_back();
        return self;
      }
    }
    // Hidden: an idle caller must not count as a running actor for
    // actor_system::await_all_actors_done().
    return std::make_unique<caf::scoped_actor>(sys, true);
  }

  void release(std::unique_ptr<caf::scoped_actor> self) {
    // A second answer to a past request (a callee answering twice) waits in
    // the mailbox, skipped by every later receive (they match their own
    // request id only): such an actor is dropped.
    auto& mb = (*self)->mailbox();
    mb.flush_cache();
    if (!mb.empty())
      return;
    std::lock_guard<std::mutex> g(mx);
    if (idle.size() < max_idle)
      idle.push_back(std::move(self));
  }

  caf::actor_system& sys;
  std::mutex mx;
  std::vector<std::unique_ptr<caf::scoped_actor>> idle;
};

node::node(caf::actor_system& sys) : sys_(sys), callers_(std::make_shared<caller_pool>(sys)) {}

caf::expected<json> node::execute_on(const std::string& pool, const std::string& command,
                                     json args, std::optional<std::string> session,
                                     std::chrono::milliseconds timeout) {
  if (stopped_)
    return make_error(errc::shutting_down, "the node is stopped");
  // Before the args are sent anywhere (a copy of them recurses).
  if (bridge::value_depth_exceeds(args, max_json_depth_))
    return make_error(errc::invalid_request, bridge::depth_message("args", max_json_depth_));
  auto resolved = resolve(pool);
  if (!resolved)
    return resolved.error();
  auto t = *resolved;
  // In single mode no pool asks the registry: the session is admitted here
  // (a new one must fit under max_sessions).
  if (session && pool_names_.empty())
    if (auto reg = dir_->get("registry")) {
      caf::error refused;
      callers_->call(reg, 10s, [] {}, [&](caf::error& e) { refused = classify(std::move(e)); },
                     sess_use_atom::value, *session);
      if (refused)
        return refused;
    }
  caf::expected<json> result{caf::error{}};
  auto wait = timeout.count() > 0 ? timeout * 2 + 30s : std::chrono::milliseconds(10min);
  callers_->call(
    t, wait, [&](json& j) { result = std::move(j); },
    [&](caf::error& e) { result = classify(std::move(e)); }, exec_atom::value,
    make_command(command, std::move(args), session, timeout));
  return result;
}

namespace {

// A session registry call from outside the actors: unit or a classified error.
template <class Atom>
caf::error ask_registry(node::caller_pool& callers, const caf::actor& reg, Atom what,
                        const std::string& session) {
  if (!reg)
    return make_error(errc::unavailable, "no session registry in this tree");
  caf::error err;
  callers.call(reg, 10s, [] {}, [&](caf::error& e) { err = std::move(e); }, what, session);
  return err;
}

} // namespace

caf::error node::create_session(const std::string& session) {
  return ask_registry(*callers_, dir_->get("registry"), sess_new_atom::value, session);
}

caf::error node::end_session(const std::string& session) {
  return ask_registry(*callers_, dir_->get("registry"), sess_end_atom::value, session);
}

std::vector<int> tree_os_pids(const json& tree, const std::string& path_part) {
  std::vector<int> out;
  auto visit = [&](const json& n, auto& self) -> void {
    if (!n.is_object())
      return;
    auto pid = n.find("os_pid");
    auto path = n.find("path");
    // A starting child reports -1 and one gone before it answered null:
    // neither is a process.
    if (pid != n.end() && pid->is_number_integer() && pid->get<long long>() > 0
        && (path_part.empty()
            || (path != n.end() && path->is_string()
                && path->get_ref<const std::string&>().find(path_part) != std::string::npos)))
      out.push_back(pid->get<int>());
    auto children = n.find("children");
    if (children != n.end() && children->is_array())
      for (auto& c : *children)
        self(c, self);
  };
  visit(tree, visit);
  return out;
}

namespace {

json ask(caf::scoped_actor& self, const caf::actor& a, caf::message msg) {
  json out;
  if (!a)
    return out;
  self->request(a, 2s, std::move(msg))
    .receive([&](json& j) { out = std::move(j); }, [](caf::error&) {});
  return out;
}

json walk(caf::scoped_actor& self, const caf::actor& sup, const std::string& path,
          const json& restarts) {
  json kids = json::array();
  auto children = sup::which_children(self, sup, caf::duration{2s});
  if (!children)
    return kids;
  for (auto& c : *children) {
    auto p = path + "/" + c.id;
    json k = {{"id", c.id},
              {"path", p},
              {"type", c.type == sup::child_type::supervisor ? "supervisor" : "worker"},
              {"status", sup::to_string(c.status)},
              {"restarts", restarts.value(p, 0)}};
    if (c.os_pid)
      k["os_pid"] = *c.os_pid;
    if (!c.handle && c.status == sup::child_status::undefined)
      k["state"] = "stopped";  // by stop_child, or a transient child that ended
    if (c.handle && c.type == sup::child_type::supervisor) {
      k["children"] = walk(self, c.handle, p, restarts);
    } else if (c.handle) {
      auto s = ask(self, c.handle, caf::make_message(stats_atom::value));
      if (s.is_object()) {
        if (s.contains("os_pid"))
          k["os_pid"] = s["os_pid"];
        if (s.contains("state"))
          k["state"] = s["state"];
        if (s.contains("health"))
          k["health"] = s["health"];
      }
    }
    kids.push_back(std::move(k));
  }
  return kids;
}

} // namespace

json node::status() {
  caf::scoped_actor self{sys_};
  json counts = ask(self, events_, caf::make_message(restarts_atom::value));
  if (!counts.is_object())
    counts = json::object();
  json restarts = counts.value("children", json::object());
  json pools = json::object();
  for (auto& name : pool_names_)
    pools[name] = ask(self, dir_->get("pool:" + name), caf::make_message(status_atom::value));
  json remotes = json::object();
  for (auto& name : remote_names_) {
    auto r = ask(self, dir_->get("remote:" + name), caf::make_message(status_atom::value));
    remotes[name] = r.is_object() ? r : json{{"state", "restarting"}};
  }
  json listening = nullptr;
  if (router_)
    listening = {{"host", listen_host_}, {"port", listen_port_}, {"tls", listen_tls_},
                 {"guard", guard_ ? guard_->counters() : json(nullptr)}};
  return json{{"mode", to_string(mode_)},
              {"remotes", remotes},
              {"listen", listening},
              {"mode_message", mode_message_},
              {"run_id", bridge::host_run_id()},
              {"tree", {{"id", "root"}, {"path", "root"}, {"type", "supervisor"},
                        {"children", root_ ? walk(self, root_, "root", restarts) : json::array()}}},
              {"supervisors", counts.value("supervisors", json::object())},
              {"pools", pools},
              {"sessions", ask(self, dir_->get("registry"), caf::make_message(stats_atom::value))},
              {"monitor", ask(self, dir_->get("monitor"), caf::make_message(status_atom::value))}};
}

void node::on_failure(std::function<void(const root_failure&)> f) {
  if (!f || !watch_)
    return;
  std::optional<root_failure> now;
  {
    std::lock_guard<std::mutex> g(watch_->mx);
    if (watch_->failure)
      now = watch_->failure;
    else
      watch_->callbacks.push_back(std::move(f));
  }
  if (now)
    f(*now);
}

std::optional<root_failure> node::failure() const {
  if (!watch_)
    return std::nullopt;
  std::lock_guard<std::mutex> g(watch_->mx);
  return watch_->failure;
}

std::optional<root_failure> node::wait_failure(std::chrono::milliseconds timeout) const {
  if (!watch_)
    return std::nullopt;
  std::unique_lock<std::mutex> g(watch_->mx);
  watch_->cv.wait_for(g, timeout, [&] { return watch_->failure || watch_->stopping; });
  return watch_->failure;
}

void node::stop() {
  if (stopped_)
    return;
  stopped_ = true;
  if (watch_) {
    {
      std::lock_guard<std::mutex> g(watch_->mx);
      watch_->stopping = true;
      watch_->callbacks.clear();
    }
    watch_->cv.notify_all();
  }
  caf::scoped_actor self{sys_};
  // No new remote callers; those in flight get their answer from the pools.
  // (caf/openssl/unpublish.hpp does not compile in 0.17.6; both publish
  // through the one BASP broker, which the middleman's unpublish reaches.)
  if (router_)
    sys_.middleman().unpublish(router_, listen_port_);
  guard_.reset();
  for (auto& name : remote_names_)
    if (auto p = dir_->get("remote:" + name))
      self->request(p, 5s, drain_atom::value).receive([] {}, [](caf::error&) {});
  // Drain first: the pools refuse new work and let in-flight requests finish.
  for (auto& name : pool_names_)
    if (auto p = dir_->get("pool:" + name))
      self->request(p, caf::infinite, drain_atom::value).receive([] {}, [](caf::error&) {});
  if (root_) {
    self->monitor(root_);
    self->send_exit(root_, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
    root_ = nullptr;
  }
  if (events_)
    self->send_exit(events_, caf::exit_reason::kill);
  if (router_) {
    self->send_exit(router_, caf::exit_reason::user_shutdown);
    router_ = nullptr;
  }
  callers_->clear();
}

} // namespace dspex
