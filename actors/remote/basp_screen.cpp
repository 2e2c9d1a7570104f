#include <dspex/actors/remote/detail/basp_screen.hpp>

#include <dspex/actors/remote/detail/remote_protocol.hpp>

#include <caf/binary_deserializer.hpp>
#include <caf/io/basp/instance.hpp>
#include <caf/message_id.hpp>

#include <algorithm>
#include <array>
#include <string_view>

namespace dspex::basp_screen {

namespace {

using caf::io::basp::message_type;

// The first atom of every one-way message and request dspex sends a peer.
bool protocol_atom(caf::atom_value a) {
  static const std::array<caf::atom_value, 8> known{
    remote::rhello_atom::value, remote::rexec_atom::value,  remote::rstatus_atom::value,
    remote::rchunk_atom::value, remote::rack_atom::value,   remote::rcancel_atom::value,
    remote::rbatch_atom::value, remote::rreplies_atom::value};
  return std::find(known.begin(), known.end(), a) != known.end();
}

// A message, after its route: to whom, its forwarding stack (empty), its
// type list and, but for a response, its first atom.
verdict message(caf::binary_deserializer& source, const caf::io::basp::header& hdr, const caf::node_id& here,
                const std::function<receiver(const caf::node_id&, caf::actor_id)>& who) {
  // To a name or an actor that takes nothing from a peer (CAF's servers
  // and helpers: CAF asks every new peer's "SpawnServ" for its info, and a
  // peer that does not screen answers it): skipped.
  if (hdr.has(caf::io::basp::header::named_receiver_flag))
    return verdict::drop;
  const bool response = caf::make_message_id(hdr.operation_data).is_response();
  const auto to = who(here, hdr.dest_actor);
  if (to == receiver::other && !response)
    return verdict::drop;
  if (to == receiver::router && response)
    return verdict::refuse;
  size_t stages = 0;
  if (source.begin_sequence(stages) || stages != 0)
    return verdict::refuse;
  uint16_t nr = 0;
  std::string types;
  if (source.begin_object(nr, types) || nr != 0)
    return verdict::refuse;
  if (response)
    return plain_types(types) || types == "@<>+@error" ? verdict::pass : verdict::refuse;
  if (!plain_types(types))
    return verdict::refuse;
  // A leading atom picks the handler: only the protocol's. (A message
  // without one: CAF answers a one-way request with a one-way message, a
  // bare string to a client.)
  if (types.compare(0, 9, "@<>+@atom") != 0)
    return verdict::pass;
  auto first = caf::atom_value{};
  if (source(first) || !protocol_atom(first))
    return verdict::refuse;
  return verdict::pass;
}

} // namespace

bool plain_types(const std::string& types) {
  static constexpr std::string_view head = "@<>";
  static constexpr std::array<std::string_view, 11> plain{
    "@atom", "@str", "@strvec", "@u64", "@i64", "@u32", "@i32", "@u16", "@i16", "@u8", "@i8"};
  std::string_view rest(types);
  if (rest.substr(0, head.size()) != head)
    return false;
  rest.remove_prefix(head.size());
  while (!rest.empty()) {
    if (rest.front() != '+')
      return false;
    rest.remove_prefix(1);
    auto end = rest.find('+');
    if (std::find(plain.begin(), plain.end(), rest.substr(0, end)) == plain.end())
      return false;
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  }
  return true;
}

verdict screen(void* instance, caf::execution_unit* ctx, const caf::io::new_data_msg& dm,
               const caf::io::basp::header& hdr,
               const std::function<receiver(const caf::node_id&, caf::actor_id)>& who) {
  auto* basp = static_cast<caf::io::basp::instance*>(instance);
  const auto& here = basp->this_node();
  caf::binary_deserializer source{ctx, dm.buf};
  const auto op = hdr.operation;
  if (op == message_type::client_handshake) {
    // The peer's node: not this one, and not one connected by another
    // connection (CAF would take it as an alternative route to that node).
    caf::node_id peer;
    if (source(peer))
      return verdict::pass;  // CAF refuses it itself
    auto known = basp->tbl().lookup_direct(peer);
    return peer == here || (known && *known != dm.handle) ? verdict::relay : verdict::pass;
  }
  if (op != message_type::direct_message && op != message_type::routed_message
      && op != message_type::monitor_message && op != message_type::down_message)
    return verdict::pass;  // the server handshake, heartbeats: CAF's own checks
  // Nothing before the handshake names the peer.
  const auto peer = basp->tbl().lookup_direct(dm.handle);
  if (peer == caf::none)
    return verdict::refuse;
  if (op != message_type::direct_message) {
    // Named source and destination: the peer itself, and this node.
    caf::node_id from, to;
    if (source(from, to))
      return verdict::refuse;
    if (!(to == here && from == peer))
      return verdict::relay;
    if (op != message_type::routed_message)
      return verdict::pass;
  }
  return message(source, hdr, here, who);
}

} // namespace dspex::basp_screen
