// remote_pool: a local name for a pool of another dspex node. It takes the
// same (exec, command_request) -> json as a pool and forwards each request
// to the remote node's router (actors/remote/detail/router.hpp) as text
// (actors/remote/detail/remote_protocol.hpp).
//
// States: connecting -> connected -> down -> connecting ... It connects
// asynchronously through the middleman (or, with tls, caf_openssl's), says
// hello (app and protocol checked on both sides), monitors the router, and
// after a failure or a lost connection retries with exponential backoff.
// Only while connected does a request leave; otherwise it is answered
// node_down at once. A request in flight when the connection dies gets
// node_down as soon as CAF reports the router down (a closed socket at once;
// a hung peer after the middleman's connection timeout), and is answered
// exactly once: a reply that comes after is dropped.
//
// Streams and cancellation cross as a local pool's do (actors/pool/call.hpp):
// a request with a sink gets the remote handler's chunks as (chunk,
// stream_chunk), in order, before the answer; the sink's acks travel back
// to the remote worker (end-to-end credit: at most the remote
// stream_window chunks, and below its stream_window_bytes plus one chunk,
// per stream in flight). (cancel, ref) from the caller,
// or its death, answers `cancelled` here at once and cancels the request
// on the remote node. docs/remote.md "Streams and cancellation".
#pragma once

#include <dspex/bridge/json_limits.hpp>

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace dspex {

struct remote_pool_config {
  std::string name;  ///< the local name (pool names are unique across the tree)
  std::string host;
  std::uint16_t port = 0;
  std::string pool;  ///< the pool on the remote node; empty: its first pool
  /// Bound on one connection attempt (TCP connect, TLS and BASP handshakes, hello).
  std::chrono::milliseconds connect_timeout{5000};
  /// Bound on one request beyond its own timeout_ms: past it, command_timeout.
  std::chrono::milliseconds request_timeout{60000};
  /// Backoff between attempts: doubles from min to max.
  std::chrono::milliseconds reconnect_min{100};
  std::chrono::milliseconds reconnect_max{5000};
  /// Connect through caf_openssl with the node's TLS identity.
  bool tls = false;
  /// The node's max_json_depth: deeper args are refused here, a deeper
  /// reply from the remote node is result_too_deep. Set by the node.
  std::size_t max_json_depth = bridge::default_max_json_depth;
};

caf::expected<caf::actor> spawn_remote_pool(caf::local_actor* ctx, const remote_pool_config& cfg);

} // namespace dspex
