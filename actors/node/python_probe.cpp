// auto mode's check of the Python bridge (detail/python_probe.hpp).
#include <dspex/actors/node/detail/python_probe.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/pool/worker.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <memory>

namespace dspex {

using namespace std::chrono_literals;

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

} // namespace dspex
