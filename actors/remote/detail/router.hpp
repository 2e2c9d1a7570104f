// The one actor a listening node publishes (config `listen`): remote callers
// (a remote_pool, `dspex exec --node`) reach the node's pools through it.
// It speaks text only (actors/remote/detail/remote_protocol.hpp), checks every message's
// app and protocol version, resolves the pool by name as the control socket
// does, and never lets a request go unanswered: the pool's error, a bad
// request, or the node stopping all come back as an error reply.
// It runs each request as its own cancellable request on the pool (the sink
// of a stream, forwarding chunks as text), cancels it on (rcancel) and when
// its remote caller goes (monitored), and passes acks to the worker only as
// the caller sends them (docs/remote.md "Streams and cancellation").
#pragma once

#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/remote/network.hpp>
#include <dspex/bridge/json_limits.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include <functional>
#include <memory>
#include <string>

namespace dspex {

namespace remote {
struct link_port_counters;
}

struct router_hooks {
  /// node::resolve: the pool's actor by name, or the classified error.
  std::function<caf::expected<caf::actor>(const std::string&)> resolve;
  /// node::status; blocks, so it runs on a thread of its own.
  std::function<json()> status;
  /// The names a hello reply lists.
  std::vector<std::string> pools;
  /// The node's max_json_depth: a request text nested deeper is refused
  /// (invalid_request) before it is parsed into a value.
  std::size_t max_json_depth = bridge::default_max_json_depth;
  /// The request link's port (0: none; a TLS listen offers none): a hello
  /// from a caller gets it with a one-time token (request_link.hpp).
  std::uint16_t link_port = 0;
  /// From accept to a valid hello: the listen's handshake timeout.
  listen_limits limits;
  /// The link port's own counters (its listener holds the cap).
  std::shared_ptr<remote::link_port_counters> link_counters;
};

caf::actor spawn_router(caf::actor_system& sys, router_hooks hooks);

} // namespace dspex
