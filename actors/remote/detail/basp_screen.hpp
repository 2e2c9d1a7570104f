// What a dspex process takes from its BASP peers: the router guard
// (router_guard.cpp) asks this of every payload before CAF reads it, while
// the process listens or runs a remote_pool.
//
// CAF 0.17 delivers whatever a peer serializes to any actor it can name,
// and part of that is not data but control: an exit_msg with reason kill
// ends the router whatever its handlers say (one message, and the node
// serves no remote caller again); an async error ends it too (CAF's
// default error handler); a down_msg naming another caller's actor cancels
// that caller's requests; (link, actor) links two of the node's own actors,
// even in a response; a forwarding stack makes the node answer a third
// actor; a response with a guessed id answers a request the router made of
// a pool; messages meant for the node's own actors ((drain) to a
// remote_pool, (status) to the router) reach them as well; a name
// ("ConfigServ", "SpawnServ") or an id reaches CAF's own servers and
// helpers. A routed message names its source and destination node, both
// believed (relayed to another node, or taken as from one), and a client
// handshake names the peer's node, believed too (this node's own id, or
// that of a node connected already, makes the peer speak as it).
//
// dspex sends its peers its own protocol (remote_protocol.hpp): messages to
// a router or a remote_pool that begin with one of its atoms and hold only
// atoms, strings, string vectors and integers, and their responses (a
// string or an error). Everything else is refused.
#pragma once

#include <caf/execution_unit.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/io/system_messages.hpp>
#include <caf/node_id.hpp>

#include <functional>
#include <string>

namespace dspex::basp_screen {

enum class verdict {
  pass,    ///< CAF handles it
  drop,    ///< skipped, the connection stays (a message to a name or to
           ///< an actor that takes nothing from peers: CAF itself asks
           ///< every new peer's "SpawnServ" for its info, and a peer
           ///< that does not screen answers it)
  relay,   ///< closes the connection: another node's source or destination
  refuse,  ///< closes the connection: not what dspex sends
};

/// Who a local actor is to the screen.
enum class receiver {
  other,        ///< takes nothing from a peer
  router,       ///< a listening node's router: asks nothing of a peer
  client,       ///< asks a router, and hears from it (a remote_pool, the
                ///< one-shot client of `dspex exec --node`)
};

/// `instance`: the caf::io::basp::instance whose handle() got the payload
/// of `hdr` in `dm`; `who`: what the local actor (node, id) is.
verdict screen(void* instance, caf::execution_unit* ctx, const caf::io::new_data_msg& dm,
               const caf::io::basp::header& hdr,
               const std::function<receiver(const caf::node_id&, caf::actor_id)>& who);

/// Whether a message's type list (its serialized "@<>+@atom+@str" head)
/// holds only atoms, strings, vectors of strings and integers.
bool plain_types(const std::string& types);

} // namespace dspex::basp_screen
