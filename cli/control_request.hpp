// One control request line, parsed and checked field by field. Every way a
// line can be wrong gets a message that names the field, what was expected
// and what was found; nothing here throws.
#pragma once

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/bridge/json_limits.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace dspex::cli {

struct control_request {
  /// restart / stop / start: one child by `path` (node::restart_child ...);
  /// events: the connection then streams supervision events (control.hpp);
  /// scale: `pool` to `size` workers (node::scale_pool); reload: a rolling
  /// reload of `pool`, `size` (the surge) workers at a time (node::reload_pool).
  enum class kind { status, exec, restart, stop, start, events, scale, reload };
  kind op = kind::status;
  std::string path;  ///< restart / stop / start: "root/pool_sup/workers/w1"
  std::string command;
  json args = json::object();
  std::optional<std::string> session_id;
  std::chrono::milliseconds timeout{0};
  /// The pool (or remote_pool) by name; empty: the node's first pool.
  std::string pool;
  /// scale: the pool's new size; reload: its surge (default 1).
  std::size_t size = 0;
  /// exec with "stream": true: one {"chunk", "seq"} line per chunk the
  /// handler yields, before the final line.
  bool stream = false;
};

/// Largest timeout_ms accepted (a day): keeps the node's deadline arithmetic
/// far from overflow.
inline constexpr long long max_timeout_ms = 24LL * 3600 * 1000;

/// Fills `out` from `line` (without its newline), or returns false with the
/// reason in `error` (an invalid_request message). A line nested deeper
/// than its object and args of `max_depth` (the node's max_json_depth) is
/// refused before it is parsed.
bool parse_control_request(const std::string& line, control_request& out, std::string& error,
                           std::size_t max_depth = bridge::default_max_json_depth);

/// A JSON text safe to write for any value, invalid UTF-8 included.
std::string dump_line(const json& j);

/// An error as the protocol's "error" object: {"class", "message"}, plus
/// "python" {"type", "message", "traceback"} for a python_error. The class
/// is never repeated in the message (which is describe() without its
/// "class: " head), so a client prints "dspex: <class>: <message>" once.
json error_object(const caf::error& err);

} // namespace dspex::cli
