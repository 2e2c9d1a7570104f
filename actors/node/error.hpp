// The classified errors every dspex caller can receive, as in DSPex V2. They
// travel as caf::error in the "dspex" category; the context carries one
// string of detail (for python_error: a JSON object with type, message and
// traceback).
#pragma once

#include <dspex/bridge/protocol.hpp>

#include <caf/atom.hpp>
#include <caf/error.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace dspex {

enum class errc : std::uint8_t {
  checkout_timeout = 1,  ///< no worker became free before the checkout deadline
  command_timeout,       ///< no reply by the request's deadline (queueing counts); the
                         ///< worker gets timeout_grace to answer late, else it is replaced
  pool_saturated,        ///< the wait queue is full; retry later
  worker_crashed,        ///< the worker's process died (or was replaced) while the
                         ///< request was in flight
  protocol_error,        ///< the worker broke the wire protocol; it is replaced
  python_error,          ///< the Python code raised; detail has type, message, traceback.
                         ///< An answer like any other: never a worker fault
  shutting_down,         ///< the pool or tree is stopping and takes no new work
  circuit_open,          ///< the circuit breaker is open: failing fast
  init_failed,           ///< a worker did not answer its init ping in time
  process_exited,        ///< exit reason of a worker whose process ended on its own
  invalid_request,       ///< the request itself is malformed (empty command, bad args,
                         ///< args nested deeper than max_json_depth), also when the
                         ///< worker says so (a reply of error type "invalid_request",
                         ///< or "invalid_args": a built-in's unknown argument key).
                         ///< The caller's error: never a worker fault
  unknown_session,       ///< no such session in the session registry
  duplicate_session,     ///< a session with this id exists already
  invalid_config,        ///< the configuration was rejected; also a worker that cannot
                         ///< start as configured (a handler module that does not
                         ///< import): its init reply says so, and node::start fails
  unavailable,           ///< no bridge is running (disabled mode)
  node_down,             ///< a remote node (remote_pool) is unreachable, or its
                         ///< connection died with the request in flight; the
                         ///< request may or may not have run there
  resource_exhausted,    ///< a bounded resource of the node is full (max_sessions:
                         ///< a new session is refused while the cap is reached);
                         ///< what exists goes on; retry once some are freed
  result_too_deep,       ///< the command ran, but its result (a well-formed reply)
                         ///< nests deeper than max_json_depth: that request fails,
                         ///< the worker serves on. An answer: never a worker fault
  cancelled,             ///< the request was cancelled (its caller cancelled it, died or
                         ///< disconnected); the worker's handler was told to stop
  out_of_memory,         ///< the worker ran out of memory serving it: past worker.limits
                         ///< memory_mb (a MemoryError in the handler) or past max_rss_mb
                         ///< while busy (the pool killed it); the worker is replaced on
                         ///< purpose, as a limit's doing, not a crash
  cpu_limit,             ///< the worker's process used up worker.limits cpu_seconds (the
                         ///< kernel's SIGXCPU); replaced on purpose, like out_of_memory
};

/// The last errc (for loops over every class).
inline constexpr errc errc_last = errc::cpu_limit;

inline constexpr caf::atom_value error_category = caf::atom("dspex");

const char* to_string(errc code) noexcept;

caf::error make_error(errc code, std::string detail = {});

/// The errc of a dspex error, nothing for errors of other categories.
std::optional<errc> code_of(const caf::error& err) noexcept;

inline bool is(const caf::error& err, errc code) noexcept { return code_of(err) == code; }

/// The detail string of a dspex error (empty otherwise).
std::string detail_of(const caf::error& err);

/// The Python exception carried by a python_error.
std::optional<bridge::python_error> python_error_of(const caf::error& err);

caf::error make_python_error(const bridge::python_error& e);

/// What the caller hears for a reply that is not a plain success: a
/// result refused by the host (reply.too_deep) is result_too_deep; an error
/// of type "invalid_request" or "invalid_args" (the worker could not take
/// the request as the caller sent it: args it cannot parse, an argument key
/// a built-in command does not take) is invalid_request, its message the
/// detail; "out_of_memory" (a MemoryError under worker.limits memory_mb) is
/// out_of_memory; any other error is python_error.
/// Each is an answer: no fault count, no breaker input.
caf::error reply_error(const bridge::reply& rep);

/// The class a reply is counted under in a pool's per-result requests:
/// "ok", "python_error", "invalid_request", "result_too_deep" or
/// "out_of_memory" (the one class after which the pool replaces the worker).
const char* reply_class(const bridge::reply& rep) noexcept;

/// Maps the CAF errors a caller of a pool or worker can see into the dspex
/// classes: request_receiver_down (the worker died just as the pool handed
/// it the request) is worker_crashed, a caller's own request_timeout is
/// command_timeout. dspex errors and others pass through unchanged.
caf::error classify(caf::error err);

/// "python_error: ValueError: bad input" and so on; renders errors of any
/// category without needing the actor system.
std::string describe(const caf::error& err);

} // namespace dspex
