// `dspex status --node HOST:PORT` and `dspex exec --node HOST:PORT`: one
// short-lived actor_system with the middleman (and caf_openssl for --tls-*),
// a bounded connect and hello, one request. Replies look like the control
// socket's, so the printing is the same.
#include "commands.hpp"

#include <dspex/actors/network.hpp>
#include <dspex/actors/remote_protocol.hpp>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

namespace dspex::cli {

namespace {

using namespace std::chrono_literals;

json failure(const std::string& cls, const std::string& message) {
  return {{"ok", false}, {"error", {{"class", cls}, {"message", message}}}};
}

json as_reply(const caf::expected<json>& r) {
  if (r)
    return {{"ok", true}, {"result", *r}};
  auto code = code_of(r.error());
  return failure(code ? to_string(*code) : "error", describe(r.error()));
}

constexpr auto connect_timeout = 10s;

// Connects, says hello, sends `msg`, returns the parsed reply.
json call(const std::string& endpoint, const tls_options& tls, caf::message msg,
          std::chrono::milliseconds reply_timeout) {
  std::string host, why;
  std::uint16_t port = 0;
  if (!remote::parse_endpoint(endpoint, host, port, why))
    return failure("invalid_request", "--node: " + why);
  caf::actor_system_config cfg;
  recommended_settings(cfg);
  if (auto err = network_settings(cfg, tls))
    return failure("invalid_config", describe(err));
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto mm = tls.enabled() ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  caf::actor router;
  std::string problem;
  self->request(mm, connect_timeout, caf::connect_atom::value, host, port)
    .receive(
      [&](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
        if (!ptr)
          problem = "nothing is published at " + endpoint;
        router = caf::actor_cast<caf::actor>(ptr);
      },
      [&](caf::error& e) { problem = "cannot connect to " + endpoint + ": " + sys.render(e); });
  if (!problem.empty())
    return failure("node_down", problem);
  json out;
  self->request(router, connect_timeout, remote::rhello_atom::value, remote::hello_text())
    .receive(
      [&](std::string& text) {
        if (auto r = remote::parse_reply(text); !r)
          problem = "hello refused: " + describe(r.error());
      },
      [&](caf::error& e) { problem = "hello: " + sys.render(e); });
  if (!problem.empty())
    return failure("node_down", problem);
  self->request(router, reply_timeout, std::move(msg))
    .receive([&](std::string& text) { out = as_reply(remote::parse_reply(text)); },
             [&](caf::error& e) {
               out = failure(e == caf::sec::request_timeout ? "command_timeout" : "node_down",
                             endpoint + ": " + sys.render(e));
             });
  return out;
}

} // namespace

json remote_exec(const std::string& endpoint, const tls_options& tls, const command_request& cmd,
                 const std::string& pool) {
  auto wait = cmd.timeout.count() > 0 ? cmd.timeout * 2 + 60s
                                      : std::chrono::milliseconds(10min) + 30s;
  return call(endpoint, tls,
              caf::make_message(remote::rexec_atom::value, remote::exec_text(cmd, pool)), wait);
}

json remote_status(const std::string& endpoint, const tls_options& tls) {
  auto r = call(endpoint, tls, caf::make_message(remote::rstatus_atom::value, remote::status_text()),
                60s);
  if (r.value("ok", false))
    return r["result"];
  return r;  // {"ok": false, "error": ...}, as control_call's failures
}

} // namespace dspex::cli
