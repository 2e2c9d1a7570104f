// Builds the root's child specs from a config (detail/tree_builder.hpp).
#include <dspex/actors/node/detail/tree_builder.hpp>

#include <dspex/actors/pool/pool.hpp>
#include <dspex/actors/pool/worker.hpp>
#include <dspex/actors/process/detail/os_process.hpp>
#include <dspex/actors/remote/remote_pool.hpp>
#include <dspex/actors/session/session_registry.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>

namespace dspex {

namespace sup = supervision;
using namespace std::chrono_literals;

worker_config tree_builder::adjust(worker_config w) const {
  // The node's python_path locates the worker package; a config's own
  // python_path goes before it on the import path, not in its place
  // (worker_environment, worker.hpp).
  if (!opts.python_path.empty())
    w.package_path = opts.python_path;
  w.max_json_depth = max_json_depth;
  w.host_calls = host_calls;
  return w;
}

sup::start_fn tree_builder::registered(std::string key, sup::start_fn f) const {
  auto d = dir;
  return [d, key, f](caf::local_actor* ctx) -> caf::expected<caf::actor> {
    auto r = f(ctx);
    if (r)
      d->set(key, *r);
    return r;
  };
}

std::optional<sup::child_spec> tree_builder::build(const node_spec& n) {
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
  } else if (auto g = std::get_if<pool_group_config>(&n.body)) {
    // A group starts no Python either: its members do.
    auto c = *g;
    auto d = dir;
    named.emplace_back(c.name, "group:" + c.name);
    groups.push_back(c.name);
    spec.start = registered("group:" + c.name, [c, d](caf::local_actor* ctx) -> caf::expected<caf::actor> {
      return spawn_pool_group(ctx, c, d);
    });
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

sup::child_spec tree_builder::build_worker(const node_spec& n, worker_config w) {
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

} // namespace dspex
