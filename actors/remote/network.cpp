#include <dspex/actors/remote/network.hpp>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>

#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include <openssl/conf.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <unistd.h>

namespace dspex {

namespace {

template <class F>
bool any_node(const std::vector<node_spec>& kids, F pred) {
  for (auto& k : kids) {
    if (pred(k))
      return true;
    if (auto s = std::get_if<std::shared_ptr<supervisor_node>>(&k.body))
      if (any_node((*s)->children, pred))
        return true;
  }
  return false;
}

std::string ssl_error() {
  std::string out;
  while (auto e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += (out.empty() ? "" : "; ") + std::string(buf);
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// caf_openssl 0.17.6 offers no way to set the protocol range or ciphers of
// its SSL_CTX (it asks for "HIGH:!aNULL:!MD5" and any version). OpenSSL's
// "system_default" section applies to every context created afterwards, so
// one is loaded here, once, before CAF creates any: TLS 1.2 or 1.3, never
// aNULL. (TLS 1.3 links used to drop about once a second: a stale entry in
// OpenSSL's error queue after 1.3's post-handshake records, which the
// router guard now clears before every SSL call; actors/remote/detail/router_guard.hpp.)
void tls_protocol_floor() {
  static std::once_flag once;
  std::call_once(once, [] {
    char path[] = "/tmp/dspex-openssl-XXXXXX";
    int fd = ::mkstemp(path);
    if (fd < 0)
      return;
    static const char text[] =
      "dspex_conf = dspex_sect\n[dspex_sect]\nssl_conf = dspex_ssl\n"
      "[dspex_ssl]\nsystem_default = dspex_tls\n"
      "[dspex_tls]\nMinProtocol = TLSv1.2\nMaxProtocol = TLSv1.3\n"
      "CipherString = HIGH:!aNULL:!eNULL:!MD5\n";
    [[maybe_unused]] auto n = ::write(fd, text, sizeof text - 1);
    ::close(fd);
    OPENSSL_init_ssl(0, nullptr);
    CONF_modules_load_file(path, "dspex_conf", 0);
    ERR_clear_error();
    ::unlink(path);
  });
}

} // namespace

bool needs_network(const tree_config& tree) {
  return !tree.listen.empty() || any_node(tree.root.children, [](const node_spec& n) {
           return std::holds_alternative<remote_pool_config>(n.body);
         });
}

bool needs_tls(const tree_config& tree) {
  return tree.tls.enabled() && needs_network(tree);
}

caf::error check_tls(const tls_options& tls) {
  auto bad = [](const std::string& m) { return make_error(errc::invalid_config, m); };
  tls_protocol_floor();
  if (tls.certificate.empty() || tls.key.empty() || tls.cafile.empty())
    return bad("tls: certificate, key and cafile are all required (dspex never runs TLS "
               "without mutual certificate authentication)");
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx(SSL_CTX_new(TLS_method()), SSL_CTX_free);
  if (!ctx)
    return bad("tls: cannot create an OpenSSL context: " + ssl_error());
  ERR_clear_error();
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.certificate.c_str()) != 1)
    return bad("tls.certificate: cannot load " + tls.certificate + ": " + ssl_error());
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return bad("tls.key: cannot load " + tls.key + ": " + ssl_error());
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return bad("tls.key: " + tls.key + " does not match the certificate " + tls.certificate);
  if (SSL_CTX_load_verify_locations(ctx.get(), tls.cafile.c_str(), nullptr) != 1)
    return bad("tls.cafile: cannot load " + tls.cafile + ": " + ssl_error());
  return {};
}

caf::error network_settings(caf::actor_system_config& cfg, const tls_options& tls,
                            const network_timing& timing) {
  if (tls.enabled() || !tls.key.empty() || !tls.cafile.empty())
    if (auto err = check_tls(tls))
      return err;
  cfg.load<caf::io::middleman>();
  cfg.set("middleman.heartbeat-interval", caf::timespan{timing.heartbeat_interval});
  cfg.set("middleman.connection-timeout", caf::timespan{timing.connection_timeout});
  if (tls.enabled()) {
    cfg.load<caf::openssl::manager>();
    cfg.openssl_certificate = tls.certificate;
    cfg.openssl_key = tls.key;
    cfg.openssl_cafile = tls.cafile;
  }
  return {};
}

caf::error network_settings(caf::actor_system_config& cfg, const tree_config& tree) {
  if (!needs_network(tree))
    return {};
  return network_settings(cfg, needs_tls(tree) ? tree.tls : tls_options{}, tree.timing);
}

} // namespace dspex
