// What crosses the network between two dspex nodes (CAF's middleman, BASP).
//
// Only types CAF can serialize cross: atoms and std::string. CAF 0.17 drops
// a message of an unknown type on the receiving side without a word, and
// serializes a CAF_ALLOW_UNSAFE_MESSAGE_TYPE value (json, command_request)
// as nothing at all, so neither ever goes on the wire: a command and its
// reply travel as JSON text.
//
//   (rhello, hello)    -> text  both sides check app and protocol version
//   (rexec, request)   -> text  request: the control protocol's exec object
//   (rstatus, request) -> text  the node's status
//
// Every text is a JSON object carrying "app" and "protocol"; every reply is
// the control protocol's {"ok": true, "result": ...} or {"ok": false,
// "error": {"class", "message", "detail"}}.
#pragma once

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/bridge/json_limits.hpp>

#include <caf/atom.hpp>
#include <caf/expected.hpp>

#include <cstdint>
#include <string>

namespace dspex::remote {

using rhello_atom = caf::atom_constant<caf::atom("rhello")>;
using rexec_atom = caf::atom_constant<caf::atom("rexec")>;
using rstatus_atom = caf::atom_constant<caf::atom("rstatus")>;

inline constexpr const char* app_id = "dspex";
/// Bumped whenever a message or a field changes meaning.
inline constexpr int protocol_version = 1;

/// "HOST:PORT" ("[::1]:PORT" for IPv6); false with the reason otherwise.
bool parse_endpoint(const std::string& text, std::string& host, std::uint16_t& port,
                    std::string& error);

/// 127.0.0.0/8, ::1 and "localhost": the addresses a plain (non-TLS) listen
/// may bind without --insecure.
bool is_loopback(const std::string& host);

/// The hello a side sends, and the check of the other side's: empty when it
/// speaks our app and protocol, else why not.
std::string hello_text();
std::string check_hello(const std::string& text);

/// A request as text: the exec (or status) object plus app and protocol.
/// Copies and dumps cmd.args, both recursive: check their depth first
/// (bridge::value_depth_exceeds), as the remote_pool does.
std::string exec_text(const command_request& cmd, const std::string& pool);
std::string status_text();

/// Reads an exec text into a command and pool name; an invalid_request
/// error naming the field otherwise (text nested deeper than its envelope
/// and args of `max_depth` is refused before it is parsed). Never throws.
caf::expected<command_request> parse_exec(const std::string& text, std::string& pool,
                                          std::size_t max_depth = bridge::default_max_json_depth);

/// A reply as text, and back: the error's class and detail survive the
/// trip (python_error keeps its type, message and traceback). A reply text
/// whose result nests deeper than `max_depth` is result_too_deep, found
/// before it is parsed.
std::string reply_text(const caf::expected<json>& r);
caf::expected<json> parse_reply(const std::string& text,
                                std::size_t max_depth = bridge::default_max_json_depth);

/// The errc named `name` ("node_down"), if any.
std::optional<errc> errc_named(const std::string& name);

} // namespace dspex::remote
