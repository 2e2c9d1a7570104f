#include <dspex/actors/node.hpp>

#include <dspex/actors/monitor.hpp>
#include <dspex/actors/os_process.hpp>
#include <dspex/actors/pool.hpp>
#include <dspex/actors/session_registry.hpp>
#include <dspex/actors/worker.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/bridge/python_process.hpp>
#include <dspex/supervision/events.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>

#include <future>

namespace dspex {

namespace sup = supervision;
using namespace std::chrono_literals;

namespace {

using restarts_atom = caf::atom_constant<caf::atom("restarts")>;

// Counts restarts per child path for `status`, and passes events on.
struct event_counter_state {
  std::map<std::string, int> restarts;
  static inline const char* name = "dspex.events";
};

caf::behavior event_counter(caf::stateful_actor<event_counter_state>* self) {
  return {
    [self](sup::supervision_event& ev) {
      if (ev.kind == sup::event_kind::child_restarted)
        ++self->state.restarts[ev.path];
    },
    [self](restarts_atom) -> json { return json(self->state.restarts); },
  };
}

struct builder {
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<directory> dir;
  const node_options& opts;
  bridge_mode mode;
  std::vector<std::string>& pools;
  std::string& single_worker;

  worker_config adjust(worker_config w) const {
    if (!opts.python_path.empty())
      w.python_path = opts.python_path;
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
        return build_worker(n, w);
      }
      auto c = *p;
      c.worker = adjust(c.worker);
      auto d = dir;
      auto key = "pool:" + c.name;
      pools.push_back(c.name);
      spec = pool_supervisor_spec(
        n.id, c, loop, [d, key](caf::actor a) { d->set(key, a); },
        [d] { return d->get("registry"); });
      spec.restart = n.restart;
      spec.significant = n.significant;
    } else if (auto w = std::get_if<worker_config>(&n.body)) {
      if (mode == bridge_mode::disabled)
        return std::nullopt;
      return build_worker(n, adjust(*w));
    } else if (auto pr = std::get_if<process_config>(&n.body)) {
      os_process_config c{n.id, pr->command, pr->env, pr->cwd};
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
    w.python_path = opts.python_path;
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
  cfg.set("scheduler.policy", caf::atom("sharing"));
}

caf::expected<std::shared_ptr<node>> node::start(caf::actor_system& sys, tree_config cfg,
                                                 node_options opts) {
  auto n = std::make_shared<node>(sys);
  n->loop_ = std::make_shared<bridge::io_loop>();
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
  builder b{n->loop_, n->dir_, opts, n->mode_, n->pool_names_, n->single_worker_};
  std::vector<sup::child_spec> children;
  for (auto& c : cfg.root.children)
    if (auto s = b.build(c))
      children.push_back(std::move(*s));
  n->events_ = sys.spawn(event_counter);
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
  // Pools pre-warm in parallel; the node is ready when each says so.
  caf::scoped_actor self{sys};
  for (auto& name : n->pool_names_) {
    caf::error err;
    auto p = n->dir_->get("pool:" + name);
    self->request(p, opts.ready_timeout, ready_atom::value)
      .receive([] {}, [&](caf::error& e) { err = std::move(e); });
    if (err) {
      n->stop();
      return make_error(errc::init_failed, "pool " + name + " did not get ready: " + describe(err));
    }
  }
  return n;
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

caf::expected<json> node::execute(const std::string& command, json args,
                                  std::optional<std::string> session,
                                  std::chrono::milliseconds timeout) {
  if (stopped_)
    return make_error(errc::shutting_down, "the node is stopped");
  auto t = target();
  if (!t)
    return make_error(errc::unavailable, mode_ == bridge_mode::disabled
                                           ? "the Python bridge is disabled"
                                             + (mode_message_.empty() ? "" : ": " + mode_message_)
                                           : "no pool or worker is running");
  // In single mode no pool touches the registry: do it here.
  if (session && pool_names_.empty())
    if (auto reg = dir_->get("registry"))
      caf::anon_send(reg, touch_atom::value, *session);
  caf::scoped_actor self{sys_};
  caf::expected<json> result{caf::error{}};
  auto wait = timeout.count() > 0 ? timeout * 2 + 30s : std::chrono::milliseconds(10min);
  self->request(t, wait, exec_atom::value, make_command(command, std::move(args), session, timeout))
    .receive([&](json& j) { result = std::move(j); },
             [&](caf::error& e) { result = classify(std::move(e)); });
  return result;
}

caf::error node::create_session(const std::string& session) {
  auto reg = dir_->get("registry");
  if (!reg)
    return make_error(errc::unavailable, "no session registry in this tree");
  caf::scoped_actor self{sys_};
  caf::error err;
  self->request(reg, 10s, sess_new_atom::value, session)
    .receive([] {}, [&](caf::error& e) { err = std::move(e); });
  return err;
}

caf::error node::end_session(const std::string& session) {
  auto reg = dir_->get("registry");
  if (!reg)
    return make_error(errc::unavailable, "no session registry in this tree");
  caf::scoped_actor self{sys_};
  caf::error err;
  self->request(reg, 10s, sess_end_atom::value, session)
    .receive([] {}, [&](caf::error& e) { err = std::move(e); });
  return err;
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
  json restarts = ask(self, events_, caf::make_message(restarts_atom::value));
  json pools = json::object();
  for (auto& name : pool_names_)
    pools[name] = ask(self, dir_->get("pool:" + name), caf::make_message(status_atom::value));
  return json{{"mode", to_string(mode_)},
              {"mode_message", mode_message_},
              {"run_id", bridge::host_run_id()},
              {"tree", {{"id", "root"}, {"path", "root"}, {"type", "supervisor"},
                        {"children", root_ ? walk(self, root_, "root", restarts) : json::array()}}},
              {"pools", pools},
              {"sessions", ask(self, dir_->get("registry"), caf::make_message(stats_atom::value))},
              {"monitor", ask(self, dir_->get("monitor"), caf::make_message(status_atom::value))}};
}

void node::stop() {
  if (stopped_)
    return;
  stopped_ = true;
  caf::scoped_actor self{sys_};
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
}

} // namespace dspex
