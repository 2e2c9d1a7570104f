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
// Streams and cancellation (docs/remote.md "Streams and cancellation"): a
// request may carry "id" (the remote_pool's name for it, not 0) and
// "stream": true. Then, one way:
//
//   (rchunk, head, data)  router -> caller   one chunk: head {"id","seq","ack"},
//                                            data the chunk's value as JSON text
//   (rack, head)          caller -> router   chunks 0..seq of stream id taken
//   (rcancel, head)       caller -> router   cancel request id
//
// Batches (a router that says "batch" in its hello reply takes them; the
// remote_pool sends them then, else one rexec request each), one way:
//
//   (rbatch, head, requests)   caller -> router  head {"ids", "batch"}; requests[i]
//                                                the exec text of ids[i] (which
//                                                carries that id); "batch": the
//                                                most reply bytes per (rreplies)
//   (rreplies, head, replies)  router -> caller  head {"ids"}; replies[i] the
//                                                reply text of request ids[i]
//
// Each request of a batch is answered once, in some (rreplies); a request's
// chunks come before its reply (one sender, one receiver).
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
#include <caf/scheduled_actor.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace dspex::remote {

using rhello_atom = caf::atom_constant<caf::atom("rhello")>;
using rexec_atom = caf::atom_constant<caf::atom("rexec")>;
using rstatus_atom = caf::atom_constant<caf::atom("rstatus")>;
using rchunk_atom = caf::atom_constant<caf::atom("rchunk")>;
using rack_atom = caf::atom_constant<caf::atom("rack")>;
using rcancel_atom = caf::atom_constant<caf::atom("rcancel")>;
using rbatch_atom = caf::atom_constant<caf::atom("rbatch")>;
using rreplies_atom = caf::atom_constant<caf::atom("rreplies")>;

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
/// speaks our app and protocol, else why not. `wants_link` false says the
/// caller cannot use a request link (tls, no io loop, a one-shot `dspex exec
/// --node`): the router then hands out no token for it, which would hold
/// a link slot until it expired. A hello without the field wants one.
std::string hello_text(bool wants_link = true);
std::string check_hello(const std::string& text, bool* wants_link = nullptr);

/// A request as text: the exec (or status) object plus app and protocol.
/// Copies and dumps cmd.args, both recursive: check their depth first
/// (bridge::value_depth_exceeds), as the remote_pool does.
/// `id` (not 0) names the request for (rcancel) and its chunks; `stream`
/// asks for them.
std::string exec_text(const command_request& cmd, const std::string& pool, std::uint64_t id = 0,
                      bool stream = false);
std::string status_text();

/// A request's "id" (0: none) and "stream" (needs an id).
struct exec_ids {
  std::uint64_t id = 0;
  bool stream = false;
};

/// Reads an exec text into a command and pool name (and into `ids`, when
/// given); an invalid_request error naming the field otherwise (text nested
/// deeper than its envelope and args of `max_depth` is refused before it is
/// parsed). Never throws.
caf::expected<command_request> parse_exec(const std::string& text, std::string& pool,
                                          std::size_t max_depth = bridge::default_max_json_depth,
                                          exec_ids* ids = nullptr);

/// The envelope of (rchunk), (rack) and (rcancel): small and flat, so that
/// a chunk whose data cannot be read still names its stream.
struct stream_head {
  std::uint64_t id = 0;   ///< the request's id (exec_ids::id), not 0
  std::uint64_t seq = 0;  ///< (rchunk) the chunk's, (rack) the last taken
  bool ack = false;       ///< (rchunk) answer with (rack) once taken
};
std::string head_text(const stream_head& h);
/// A protocol_error naming what is wrong (not an object, another app or
/// protocol, id not a positive integer, seq not an integer).
caf::expected<stream_head> parse_head(const std::string& text);

/// A chunk's value as text, and back: result_too_deep when it nests deeper
/// than `max_depth` (found before it is parsed), protocol_error when it is
/// not JSON.
std::string data_text(const json& data);
caf::expected<json> parse_data(const std::string& text,
                               std::size_t max_depth = bridge::default_max_json_depth);

/// A reply as text, and back: the error's class and detail survive the
/// trip (python_error keeps its type, message and traceback). A reply text
/// whose result nests deeper than `max_depth` is result_too_deep, found
/// before it is parsed.
std::string reply_text(const caf::expected<json>& r);
caf::expected<json> parse_reply(const std::string& text,
                                std::size_t max_depth = bridge::default_max_json_depth);

/// The most bytes of texts one (rbatch) or (rreplies) carries for a node
/// whose max_remote_message_bytes is `max_message_bytes`: a quarter of it,
/// at most 256 KiB. A text larger than that goes alone, as it would unbatched.
inline std::size_t batch_bytes(std::size_t max_message_bytes) {
  return std::min<std::size_t>(256 * 1024, max_message_bytes / 4);
}

/// The head of (rbatch) and (rreplies): whose texts follow, in order, and
/// (rbatch) the most reply bytes the caller takes in one (rreplies).
struct batch_head {
  std::vector<std::uint64_t> ids;
  std::size_t reply_bytes = 0;  ///< 0: every reply alone
};
std::string batch_head_text(const std::vector<std::uint64_t>& ids, std::size_t reply_bytes = 0);
/// A protocol_error unless the text is ours and holds `count` (at least 1)
/// positive ids.
caf::expected<batch_head> parse_batch_head(const std::string& text, std::size_t count);

/// The errc named `name` ("node_down"), if any.
std::optional<errc> errc_named(const std::string& name);

/// For an actor a peer can address over BASP (the router, a remote_pool):
/// a message of no kind it takes is counted in `counter` and dropped, its
/// sender told unexpected_message if it asked. CAF's default prints the
/// whole message to stdout (a peer could write what it likes, as large as
/// a message may be, into the operator's log) and answers a one-way
/// message with a one-way error, which a screening peer refuses
/// (basp_screen.hpp): nothing goes back for one.
template <class Actor>
void drop_unexpected(Actor* self, std::uint64_t& counter) {
  self->set_default_handler([&counter](caf::scheduled_actor* me, caf::message_view&) -> caf::result<caf::message> {
    ++counter;
    if (me->current_mailbox_element()->mid.is_request())
      return caf::sec::unexpected_message;
    return caf::delegated<caf::message>();  // (no answer is sent)
  });
}

} // namespace dspex::remote
