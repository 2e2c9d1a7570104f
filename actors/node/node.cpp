// The node proper (node.hpp): start, stop, status, the failure of the root,
// the names it serves. Its seams live beside it: root_watch.cpp (the
// watcher), tree_builder.cpp (child specs from the config), python_probe.cpp
// (auto mode), node_listen.cpp (the router), node_calls.cpp (blocking calls)
// and node_control.cpp (one child at a time).
#include <dspex/actors/node/node.hpp>

#include <dspex/actors/node/detail/io_scheduler.hpp>
#include <dspex/actors/remote/detail/driven_middleman.hpp>
#include <dspex/actors/node/detail/node_impl.hpp>
#include <dspex/actors/node/detail/python_probe.hpp>
#include <dspex/actors/node/detail/root_watch.hpp>
#include <dspex/actors/node/detail/tree_builder.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>

#include <algorithm>
#include <cstdlib>
#include <mutex>

namespace dspex {

namespace sup = supervision;
using namespace std::chrono_literals;

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
  if (!own || std::string(own) != "1") {
    use_io_scheduler(cfg);
    // And CAF's network multiplexer on that thread too, when there is one.
    use_driven_middleman(cfg);
  }
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
  auto n = std::shared_ptr<node>(new node(sys));
  auto& d = *n->impl_;
  d.loop = io_loop_for(sys);
  d.dir = std::make_shared<directory>();
  d.mode = cfg.mode;
  if (opts.reap_leftovers)
    bridge::reap_leftovers();
  if (cfg.mode == bridge_mode::auto_detect) {
    auto problem = probe_python(cfg, opts, *d.loop);
    if (problem.empty()) {
      d.mode = bridge_mode::pool;
      d.mode_message = "auto: python3 and the worker package start; running pools";
    } else {
      d.mode = bridge_mode::disabled;
      d.mode_message = "auto: the Python bridge cannot start (" + problem
                     + "); running with the bridge disabled";
    }
  }
  d.max_json_depth = cfg.max_json_depth;
  d.host_calls = std::make_shared<host_call_router>(cfg.max_call_depth);
  tree_builder b{d.loop, d.dir, opts, d.mode, d.pool_names, d.single_worker, d.named,
                 d.remote_names, d.group_names, cfg.max_json_depth, d.host_calls};
  std::vector<sup::child_spec> children;
  for (auto& c : cfg.root.children)
    if (auto s = b.build(c))
      children.push_back(std::move(*s));
  // By name, as pool(name) finds them: the directory holds the current
  // handle of each (a pool restarted is found), and nothing of the node.
  d.host_calls->set_pool_lookup([dir = d.dir, named = d.named](const std::string& name) {
    for (auto& [n, key] : named)
      if (n == name)
        return dir->get(key);
    return caf::actor{};
  });
  d.watch = std::make_shared<root_watch>();
  d.events = spawn_root_watcher(sys, d.watch);
  sup::supervisor_options so;
  so.path = "root";
  so.subscribers = opts.subscribers;
  so.subscribers.push_back(d.events);
  auto root = sup::start_supervisor(sys, cfg.root.flags, std::move(children), so);
  if (!root) {
    caf::anon_send_exit(d.events, caf::exit_reason::kill);
    d.stopped = true;
    return root.error();
  }
  d.root = *root;
  caf::anon_send(d.events, watch_atom::value, d.root);
  // Pools pre-warm in parallel; the node is ready when each says so.
  caf::scoped_actor self{sys};
  for (auto& name : d.pool_names) {
    caf::error err;
    auto p = d.dir->get("pool:" + name);
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

node::node(caf::actor_system& sys) : impl_(std::make_unique<impl>(sys)) {}

node::~node() {
  stop();
}

caf::actor node::target() const {
  auto& d = *impl_;
  if (d.mode == bridge_mode::disabled)
    return {};
  if (!d.pool_names.empty())
    return d.dir->get("pool:" + d.pool_names.front());
  if (!d.single_worker.empty())
    return d.dir->get(d.single_worker);
  return {};
}

caf::actor node::pool(const std::string& name) const {
  for (auto& [n, key] : impl_->named)
    if (n == name)
      return impl_->dir->get(key);
  return {};
}

std::vector<std::string> node::pool_names() const {
  std::vector<std::string> out;
  for (auto& kv : impl_->named)
    out.push_back(kv.first);
  return out;
}

caf::expected<caf::actor> node::resolve(const std::string& name) const {
  auto& d = *impl_;
  if (d.mode == bridge_mode::disabled && (name.empty() || pool(name) == nullptr))
    return make_error(errc::unavailable, "the Python bridge is disabled"
                                           + (d.mode_message.empty() ? "" : ": " + d.mode_message));
  auto t = name.empty() ? target() : pool(name);
  if (t)
    return t;
  if (!name.empty() && std::none_of(d.named.begin(), d.named.end(),
                                    [&](auto& kv) { return kv.first == name; })) {
    std::string known;
    for (auto& kv : d.named)
      known += (known.empty() ? "" : ", ") + kv.first;
    return make_error(errc::invalid_request, "pool: unknown pool \"" + name + "\"; known pools: "
                                               + (known.empty() ? "none" : known));
  }
  return make_error(errc::unavailable, "no pool or worker is running");
}

caf::actor node::root() const {
  return impl_->root;
}

std::uint16_t node::listen_port() const {
  return impl_->listen_port;
}

bridge_mode node::mode() const {
  return impl_->mode;
}

std::size_t node::max_json_depth() const {
  return impl_->max_json_depth;
}

const std::string& node::mode_message() const {
  return impl_->mode_message;
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
  // A copy, not a move: what the answer holds was allocated on the
  // answering actor's thread and handed over inside CAF, which TSan cannot
  // see (tsan.supp); copied here, under node::status, the tree the caller
  // goes on to read (dump) is this thread's own.
  self->request(a, 2s, std::move(msg))
    .receive([&](json& j) { out = j; }, [](caf::error&) {});
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
  auto& d = *impl_;
  caf::scoped_actor self{d.sys};
  json counts = ask(self, d.events, caf::make_message(restarts_atom::value));
  if (!counts.is_object())
    counts = json::object();
  json restarts = counts.value("children", json::object());
  json pools = json::object();
  for (auto& name : d.pool_names)
    pools[name] = ask(self, d.dir->get("pool:" + name), caf::make_message(status_atom::value));
  json remotes = json::object();
  for (auto& name : d.remote_names) {
    auto r = ask(self, d.dir->get("remote:" + name), caf::make_message(status_atom::value));
    remotes[name] = r.is_object() ? r : json{{"state", "restarting"}};
  }
  json groups = json::object();
  for (auto& name : d.group_names) {
    auto r = ask(self, d.dir->get("group:" + name), caf::make_message(status_atom::value));
    groups[name] = r.is_object() ? r : json{{"state", "restarting"}};
  }
  json listening = nullptr;
  if (d.router) {
    auto r = ask(self, d.router, caf::make_message(status_atom::value));
    if (!r.is_object())
      r = json::object();  // no answer within the ask's bound: unknown
    listening = {{"host", d.listen_host}, {"port", d.listen_port}, {"tls", d.listen_tls},
                 {"guard", d.guard ? d.guard->counters() : json(nullptr)},
                 {"dropped_messages", r.value("dropped_messages", json(nullptr))},
                 {"request_link", r.value("request_link", json(nullptr))}};  // null: no link port
  }
  return json{{"mode", to_string(d.mode)},
              {"remotes", remotes},
              {"groups", groups},
              {"listen", listening},
              {"mode_message", d.mode_message},
              {"run_id", bridge::host_run_id()},
              {"tree", {{"id", "root"}, {"path", "root"}, {"type", "supervisor"},
                        {"children", d.root ? walk(self, d.root, "root", restarts) : json::array()}}},
              {"supervisors", counts.value("supervisors", json::object())},
              {"pools", pools},
              {"sessions", ask(self, d.dir->get("registry"), caf::make_message(stats_atom::value))},
              {"monitor", ask(self, d.dir->get("monitor"), caf::make_message(status_atom::value))},
              {"host_calls", d.host_calls ? d.host_calls->status() : json(nullptr)}};
}

void node::on_failure(std::function<void(const root_failure&)> f) {
  auto& w = impl_->watch;
  if (!f || !w)
    return;
  std::optional<root_failure> now;
  {
    std::lock_guard<std::mutex> g(w->mx);
    if (w->failure)
      now = w->failure;
    else
      w->callbacks.push_back(std::move(f));
  }
  if (now)
    f(*now);
}

std::optional<root_failure> node::failure() const {
  auto& w = impl_->watch;
  if (!w)
    return std::nullopt;
  std::lock_guard<std::mutex> g(w->mx);
  return w->failure;
}

std::optional<root_failure> node::wait_failure(std::chrono::milliseconds timeout) const {
  auto& w = impl_->watch;
  if (!w)
    return std::nullopt;
  std::unique_lock<std::mutex> g(w->mx);
  w->cv.wait_for(g, timeout, [&] { return w->failure || w->stopping; });
  return w->failure;
}

void node::stop() {
  auto& d = *impl_;
  if (d.stopped)
    return;
  d.stopped = true;
  if (d.watch) {
    {
      std::lock_guard<std::mutex> g(d.watch->mx);
      d.watch->stopping = true;
      d.watch->callbacks.clear();
    }
    d.watch->cv.notify_all();
  }
  caf::scoped_actor self{d.sys};
  // No new remote callers; those in flight get their answer from the pools.
  // (caf/openssl/unpublish.hpp does not compile in 0.17.6; both publish
  // through the one BASP broker, which the middleman's unpublish reaches.)
  if (d.router)
    d.sys.middleman().unpublish(d.router, d.listen_port);
  if (d.link_listener)
    d.link_listener->close();
  d.link_listener = nullptr;
  d.guard.reset();
  for (auto& name : d.group_names)
    if (auto p = d.dir->get("group:" + name))
      self->request(p, 5s, drain_atom::value).receive([] {}, [](caf::error&) {});
  for (auto& name : d.remote_names)
    if (auto p = d.dir->get("remote:" + name))
      self->request(p, 5s, drain_atom::value).receive([] {}, [](caf::error&) {});
  // Drain first: the pools refuse new work and let in-flight requests finish.
  for (auto& name : d.pool_names)
    if (auto p = d.dir->get("pool:" + name))
      self->request(p, caf::infinite, drain_atom::value).receive([] {}, [](caf::error&) {});
  if (d.root) {
    self->monitor(d.root);
    self->send_exit(d.root, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
    d.root = nullptr;
  }
  if (d.events)
    self->send_exit(d.events, caf::exit_reason::kill);
  if (d.router) {
    self->monitor(d.router);
    self->send_exit(d.router, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {}, caf::after(5s) >> [] {});
    d.router = nullptr;
  }
  // The request links' sockets are the loop's, and each holds the loop. On
  // a loop with a thread of its own (no io scheduler), let it run their
  // closing now (the router's and the remote_pools' are queued by now; a
  // second pass for the cancelled operations they complete), so that no
  // link keeps the loop into its own thread's last handler, whose
  // destructor would then join the thread it runs on.
  if (!d.loop->is_driven()) {
    d.loop->run_sync([] {});
    d.loop->run_sync([] {});
  }
  d.callers->clear();
  if (d.host_calls)
    d.host_calls->stop();  // the workers are gone: nobody waits on a host function
}

caf::error node::register_function(const std::string& name, host_function f) {
  if (!f)
    return make_error(errc::invalid_request, "host function '" + name + "' is empty");
  return impl_->host_calls->add(name, host_call_router::function_entry{std::move(f), nullptr});
}

caf::error node::register_blocking_function(const std::string& name, blocking_host_function f) {
  if (!f)
    return make_error(errc::invalid_request, "host function '" + name + "' is empty");
  return impl_->host_calls->add(name, host_call_router::function_entry{nullptr, std::move(f)});
}

void node::unregister_function(const std::string& name) {
  impl_->host_calls->remove(name);
}

} // namespace dspex
