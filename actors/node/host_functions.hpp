// Functions a node serves to its Python handlers: ctx.call("fn:NAME", ...)
// (docs/embedding.md "Host functions", docs/handlers.md "Calling the host").
#pragma once

#include <dspex/actors/node/messages.hpp>

#include <caf/expected.hpp>

#include <chrono>
#include <functional>
#include <optional>
#include <string>

namespace dspex {

/// What a host function knows about the call it serves.
struct host_call_info {
  std::string function;                ///< the name it was registered under
  std::optional<std::string> session;  ///< the session the call runs in
  /// The calling request's deadline (steady_clock): answer before it, or
  /// the handler gets command_timeout.
  std::chrono::steady_clock::time_point deadline;
  std::string worker;                  ///< the calling worker's id ("w1")
  int depth = 1;                       ///< 1: called by a request from a client
};

/// Answers a host call: exactly once, from any thread; later calls do
/// nothing. A caf::error is passed on by its dspex class (make_error).
using host_reply = std::function<void(caf::expected<json>)>;

/// An asynchronous host function: runs on an actor thread (never block in
/// it: hand the work to your own thread) and answers through `reply`,
/// then or later.
using host_function = std::function<void(json args, const host_call_info& info, host_reply reply)>;

/// A blocking host function: runs on one of the node's host-function
/// threads (4), so it may wait (I/O, a lock, node::execute of another pool).
using blocking_host_function
  = std::function<caf::expected<json>(const json& args, const host_call_info& info)>;

} // namespace dspex
