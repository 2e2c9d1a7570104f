#include <dspex/actors/remote/detail/basp_screen.hpp>

#include <caf/binary_deserializer.hpp>
#include <caf/io/basp/instance.hpp>
#include <caf/message_id.hpp>
#include <caf/node_id.hpp>

#include <array>
#include <string_view>

namespace dspex::basp_screen {

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
    auto name = rest.substr(0, end);
    bool known = false;
    for (auto p : plain)
      known = known || name == p;
    if (!known)
      return false;
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
  }
  return true;
}

verdict screen(void* instance, caf::execution_unit* ctx, const caf::io::new_data_msg& dm,
               const caf::io::basp::header& hdr,
               const std::function<bool(caf::actor_id)>& answers_nobody) {
  using caf::io::basp::message_type;
  const auto op = hdr.operation;
  if (op != message_type::direct_message && op != message_type::routed_message
      && op != message_type::monitor_message && op != message_type::down_message)
    return verdict::pass;  // handshakes and heartbeats: CAF's own checks
  caf::binary_deserializer source{ctx, dm.buf};
  if (op != message_type::direct_message) {
    // Named source and destination: the peer itself, and this node.
    auto* basp = static_cast<caf::io::basp::instance*>(instance);
    caf::node_id from, to;
    if (source(from, to))
      return verdict::refuse;
    if (!(to == basp->this_node() && from == basp->tbl().lookup_direct(dm.handle)))
      return verdict::relay;
    if (op != message_type::routed_message)
      return verdict::pass;
  }
  // A message: its forwarding stack, then its content, which begins with
  // the list of its types.
  if (hdr.has(caf::io::basp::header::named_receiver_flag))
    return verdict::drop;
  if (caf::make_message_id(hdr.operation_data).is_response())
    return answers_nobody(hdr.dest_actor) ? verdict::refuse : verdict::pass;
  size_t stages = 0;
  if (source.begin_sequence(stages) || stages != 0)
    return verdict::refuse;
  uint16_t nr = 0;
  std::string types;
  if (source.begin_object(nr, types) || nr != 0)
    return verdict::refuse;
  // Beside dspex's own: the answer to the "info" CAF asks of every new
  // peer's spawn server (async, from the peer's spawn server's actor).
  static const std::string spawn_server_info = "@<>+@atom+@str+@strong_actor_ptr+@str";
  return plain_types(types) || types == spawn_server_info ? verdict::pass : verdict::refuse;
}

} // namespace dspex::basp_screen
