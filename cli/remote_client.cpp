// `dspex status --node HOST:PORT` and `dspex exec --node HOST:PORT`: one
// short-lived actor_system with the middleman (and caf_openssl for --tls-*),
// a bounded connect and hello, one request. With --timeout-ms the whole call
// ends within it (plus reply_grace), whatever the remote does; a remote
// that dies or hangs mid-request is node_down as soon as the connection is
// seen lost. Replies look like the control socket's, so the printing is the
// same.
#include "commands.hpp"
#include "control.hpp"
#include "control_request.hpp"

#include <dspex/actors/remote/network.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

namespace dspex::cli {

namespace {

using namespace std::chrono_literals;

// As the control socket's replies: the class once, in "class" (issue 26).
json as_reply(const caf::expected<json>& r) {
  if (r)
    return {{"ok", true}, {"result", *r}};
  return {{"ok", false}, {"error", error_object(r.error())}};
}

using clock = std::chrono::steady_clock;

constexpr auto connect_timeout = 10s;
/// Past the caller's --timeout-ms, how long the remote's own answer (its
/// command_timeout, with its detail) may take to arrive before we give up.
constexpr auto reply_grace = 500ms;

std::chrono::milliseconds left(clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
  return ms.count() > 0 ? ms : 0ms;
}

// One message to the router and the text it answers, waiting until
// `deadline` at most. The message goes as an asynchronous one (the reply
// comes back as a message), so that the same receive sees the router go
// down: CAF 0.17 never answers a request whose connection is lost, and the
// router is monitored so a killed node (socket closed) or a stopped one
// (dropped by the heartbeat timeout) ends the wait at once.
enum class outcome { reply, down, error, timeout };
outcome ask(caf::scoped_actor& self, const caf::actor& router, caf::message msg,
            clock::time_point deadline, std::string& text) {
  self->send(router, std::move(msg));
  auto out = outcome::timeout;
  for (bool done = false; !done;) {
    auto wait = left(deadline);
    if (wait.count() == 0)
      break;
    self->receive(
      [&](std::string& t) {
        text = std::move(t);
        out = outcome::reply;
        done = true;
      },
      [&](caf::down_msg& d) {
        if (d.source != router.address())
          return;
        text = "connection lost (" + caf::to_string(d.reason) + ")";
        out = outcome::down;
        done = true;
      },
      [&](caf::error& e) {
        text = self->home_system().render(e);
        out = outcome::error;
        done = true;
      },
      caf::after(wait) >> [&] { done = true; });
  }
  return out;
}

// Connects, says hello, sends `msg`, returns the parsed reply. Everything,
// the connect included, ends by `budget`: past it, command_timeout (or
// node_down when not even the connection came), whatever the remote does.
json call(const std::string& endpoint, const tls_options& tls, caf::message msg,
          std::chrono::milliseconds budget) {
  auto deadline = clock::now() + budget;
  std::string host, why;
  std::uint16_t port = 0;
  if (!remote::parse_endpoint(endpoint, host, port, why))
    return error_reply("invalid_request", "--node: " + why);
  // The node's messages are screened as a remote_pool's are (its replies
  // come to this one actor); nor does CAF's spawn server here answer the
  // "info" the node's middleman asks of every new peer.
  auto screening = router_guard::screening();
  caf::actor_system_config cfg;
  recommended_settings(cfg);
  if (auto err = network_settings(cfg, tls))
    return {{"ok", false}, {"error", error_object(err)}};
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto client = router_guard::screening(sys.node(), self->id());
  auto mm = tls.enabled() ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  caf::actor router;
  std::string problem;
  auto connect_wait = std::max<std::chrono::milliseconds>(
    std::min<std::chrono::milliseconds>(connect_timeout, left(deadline)), 1ms);
  self->request(mm, connect_wait, caf::connect_atom::value, host, port)
    .receive(
      [&](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
        if (!ptr)
          problem = "nothing is published at " + endpoint;
        router = caf::actor_cast<caf::actor>(ptr);
      },
      [&](caf::error& e) { problem = "cannot connect to " + endpoint + ": " + sys.render(e); });
  if (!problem.empty())
    return error_reply("node_down", problem);
  self->monitor(router);
  std::string text;
  switch (ask(self, router, caf::make_message(remote::rhello_atom::value, remote::hello_text(false)),
              std::min(deadline, clock::now() + connect_timeout), text)) {
    case outcome::reply:
      if (auto r = remote::parse_reply(text); !r)
        return error_reply("node_down", "hello refused: " + describe(r.error()));
      break;
    case outcome::timeout:
      return error_reply("node_down", endpoint + ": no answer to hello in time");
    default:
      return error_reply("node_down", endpoint + ": hello: " + text);
  }
  switch (ask(self, router, std::move(msg), deadline, text)) {
    case outcome::reply:
      return as_reply(remote::parse_reply(text));
    case outcome::timeout:
      return error_reply("command_timeout", "no reply from " + endpoint + " within "
                                              + std::to_string(budget.count()) + " ms");
    default:
      return error_reply("node_down", endpoint + ": " + text);
  }
}

} // namespace

json remote_exec(const std::string& endpoint, const tls_options& tls, const command_request& cmd,
                 const std::string& pool) {
  // The caller's timeout bounds the whole call; without one, the remote's
  // own request timeout applies and a lost node still ends the wait.
  auto wait = cmd.timeout.count() > 0 ? cmd.timeout + reply_grace
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
