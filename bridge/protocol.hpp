// The request/reply envelopes of the wire protocol (docs/architecture.md "Wire protocol"):
//   request: {"id": uint, "command": str, "session_id": str|null, "args": {...}}
//            (written in this order: the id first, so a worker that cannot
//            parse the args can still answer the request by its id)
//   reply:   {"id", "success": true, "result": ...}
//         or {"id", "success": false, "error": {"type", "message", "traceback"?}}
// Parsing a reply never throws: a body that is not a valid reply comes back
// as a classified protocol_error, so the caller can fail the worker cleanly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <dspex/bridge/json_writer.hpp>

#include <nlohmann/json.hpp>

namespace dspex::bridge {

using json = nlohmann::json;

/// What went wrong on the wire. Each is fatal for the stream it came from:
/// a worker that produced one cannot be trusted with the next request.
enum class protocol_errc {
  frame_too_large,  ///< a length prefix above max_frame_bytes
  truncated_frame,  ///< the stream ended (or stalled) inside a frame
  invalid_utf8,     ///< the body is not UTF-8
  invalid_json,     ///< the body is UTF-8 but not JSON
  bad_envelope,     ///< JSON, but not a reply object (missing/ill-typed id, success, result or error)
  unknown_id,       ///< a well-formed reply to a request nobody is waiting for
};

const char* to_string(protocol_errc code) noexcept;

struct protocol_error {
  protocol_errc code;
  std::string detail;
};

struct request {
  std::uint64_t id = 0;
  std::string command;
  json args = json::object();
  std::optional<std::string> session_id;
};

/// An error raised on the Python side, as the worker reported it.
struct python_error {
  std::string type;
  std::string message;
  std::string traceback;  ///< empty when the worker sent none
};

/// A host call a handler makes (protocol 3, docs/architecture.md "Host
/// calls"): reply::kind call; its args are in reply::result.
struct host_call_frame {
  std::uint64_t call = 0;  ///< the worker's number for the call
  std::string target;      ///< "pool:NAME" or "fn:NAME"
  std::string command;
  std::uint64_t timeout_ms = 0;  ///< 0: none of its own
  enum class session_rule { same, none, named } session = session_rule::same;
  std::string session_id;  ///< named
};

/// What a worker frame is.
enum class frame_kind {
  reply,        ///< the answer to a request
  chunk,        ///< one chunk of a stream (protocol 2)
  call,         ///< a host call (protocol 3)
  cancel_call,  ///< the handler no longer waits for call `seq`
};

/// A worker frame: a reply, or (is_chunk) one chunk of a stream, whose
/// data is in `result` (protocol 2), or a host call or its cancel
/// (protocol 3, `kind`).
struct reply {
  std::uint64_t id = 0;
  bool success = false;
  std::uint64_t seq = 0;  ///< the chunk's number in its stream; a cancel_call's call
  frame_kind kind = frame_kind::reply;
  host_call_frame call;   ///< kind call
  /// {"id","type":"chunk","seq","data"}: success is true.
  bool is_chunk() const noexcept { return kind == frame_kind::chunk; }
  json result;         ///< when success
  python_error error;  ///< when !success
  /// Non-empty: the reply is well-formed but nests deeper than the limit
  /// parse_reply was given (this says so); result and error are then empty.
  /// Its request fails (result_too_deep), the stream stays sound.
  std::string too_deep;
  /// The frame body's size (parse_reply sets it): what a chunk weighs
  /// against its stream's byte window, as the worker counted it.
  std::size_t bytes = 0;
};

/// What a request frame carries beyond the request (protocol 2): what is
/// left of its caller's deadline, and whether the caller takes a stream.
struct request_extras {
  std::uint64_t timeout_ms = 0;  ///< 0: not sent
  std::uint32_t stream = 0;      ///< the credit window; 0: a unary call
  std::uint64_t stream_bytes = 0;  ///< the byte window (with stream); 0: none
};

/// Appends the request's frame (length prefix, then its JSON body) to `out`
/// in one pass. Refused when a string in it (command, session id, a key or
/// a value in args) is not UTF-8, which JSON cannot carry, or when args nest
/// deeper than `max_depth` (json_limits.hpp); `out` is then as it was.
write_result append_request_frame(std::string& out, const request& req,
                                  std::size_t max_depth = default_max_json_depth);

/// The same from a request's parts, which the caller keeps.
write_result append_request_frame(std::string& out, std::uint64_t id, std::string_view command,
                                  const json& args, const std::optional<std::string>& session_id,
                                  std::size_t max_depth = default_max_json_depth,
                                  request_extras extras = {});

/// Appends {"type":"cancel","id":N}: stop request `id`.
void append_cancel_frame(std::string& out, std::uint64_t id);

/// Appends {"type":"ack","id":N,"seq":S}: the caller took chunks 0..seq.
void append_ack_frame(std::string& out, std::uint64_t id, std::uint64_t seq);

/// Appends the result of host call `call`: {"type":"result","call":K,
/// "success":true,"result":R}. Refused (as append_request_frame) when R
/// holds text that is not UTF-8 or nests deeper than `max_depth`.
write_result append_call_result_frame(std::string& out, std::uint64_t call, const json& result,
                                      std::size_t max_depth = default_max_json_depth);

/// Appends a host call's error: {"type":"result","call":K,"success":false,
/// "error":{"type":CLASS,"message":M}}.
void append_call_error_frame(std::string& out, std::uint64_t call, std::string_view error_class,
                             std::string_view message);

/// The JSON body of a request frame; throws std::invalid_argument where
/// append_request_frame returns false.
std::string encode_request(const request& req);

/// The JSON body of a reply frame (used by tests and by in-process peers).
std::string encode_reply(const reply& rep);

/// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view s) noexcept;

/// Parses a frame body as a reply or a chunk; never throws. A well-formed reply whose
/// result (or error) nests deeper than `max_depth` comes back with only its
/// id and success, and `too_deep` set: nothing deeper is built.
std::variant<reply, protocol_error> parse_reply(std::string_view body,
                                                std::size_t max_depth = default_max_json_depth);

/// The JSON value V of a text `V}` (the last member of an envelope whose
/// head was matched as text): false when it is not exactly that. What the
/// fast paths of reply parsing use, here and in remote_protocol.cpp, so
/// that only the result goes through the JSON parser.
bool parse_closing_value(std::string_view s, json& out);

/// Parses a frame body as a request (the worker's side; used by tests); never throws.
std::variant<request, protocol_error> parse_request(std::string_view body);

} // namespace dspex::bridge
