// A node that listens (config `listen`): its router, published through the
// middleman (or the openssl module, with tls), behind the router guard.
#include <dspex/actors/node/detail/node_impl.hpp>

#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/router.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/publish.hpp>

#include <cstdio>

namespace dspex {

caf::error node::listen(const tree_config& cfg) {
  auto& d = *impl_;
  std::string why;
  if (!remote::parse_endpoint(cfg.listen, d.listen_host, d.listen_port, why))
    return make_error(errc::invalid_config, "listen: " + why);
  router_hooks hooks;
  std::weak_ptr<node> weak = shared_from_this();
  hooks.resolve = [weak](const std::string& name) -> caf::expected<caf::actor> {
    auto n = weak.lock();
    if (!n || n->impl_->stopped)
      return make_error(errc::shutting_down, "the node is stopping");
    return n->resolve(name);
  };
  hooks.status = [weak]() -> json {
    auto n = weak.lock();
    if (!n || n->impl_->stopped)
      return json{{"stopping", true}};
    return n->status();
  };
  hooks.pools = pool_names();
  hooks.max_json_depth = d.max_json_depth;
  hooks.limits = cfg.listen_limits;
  d.listen_tls = cfg.tls.enabled();
  // SO_REUSEADDR: a node restarted at once after a crash binds its port
  // again, despite the dead one's connections in TIME_WAIT.
  auto host = d.listen_host == "localhost" ? std::string("127.0.0.1") : d.listen_host;
  // The request link beside BASP, on plain listens only: over TLS the
  // requests stay on the authenticated BASP connection.
  if (cfg.request_link && !d.listen_tls) {
    auto l = remote::link_listener::open(d.loop, host, cfg.request_link_port,
                                         router_guard::max_message_bytes(),
                                         cfg.listen_limits.max_connections);
    if (!l)
      return l.error();
    d.link_listener = *l;
    hooks.link_port = d.link_listener->port();
    hooks.link_counters = d.link_listener->counters();
  }
  d.router = spawn_router(d.sys, std::move(hooks));
  if (d.link_listener)
    d.link_listener->start(d.router.address());
  auto port = d.listen_tls ? caf::openssl::publish(d.router, d.listen_port, host.c_str(), true)
                           : d.sys.middleman().publish(d.router, d.listen_port, host.c_str(), true);
  if (!port) {
    caf::anon_send_exit(d.router, caf::exit_reason::kill);
    d.router = nullptr;
    if (d.link_listener)
      d.link_listener->close();
    d.link_listener = nullptr;
    return make_error(errc::invalid_config, "listen " + cfg.listen + ": cannot publish: "
                                              + d.sys.render(port.error()));
  }
  d.listen_port = *port;
  d.guard = router_guard::watch(d.sys, d.listen_port, d.router.id(), cfg.listen_limits);
  if (!router_guard::active())
    std::fprintf(stderr, "dspex: warning: the router port's guard is not bound in this "
                         "executable (docs/security.md): no connection cap, handshake "
                         "timeout or BASP size bound\n");
  return {};
}

} // namespace dspex
