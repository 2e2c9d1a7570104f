// What a listening node takes from its BASP peers: the router guard
// (router_guard.cpp) asks this of every message payload before CAF reads it.
//
// CAF 0.17 delivers whatever a peer serializes to any actor it can name,
// and part of that is not data but control: an exit_msg with reason kill
// ends the router whatever its handlers say (one message, and the node
// serves no remote caller again); an async error ends it too (CAF's
// default error handler); a down_msg naming another caller's actor cancels
// that caller's requests; (link, actor) links two of the node's own
// actors; a forwarding stack makes the node answer a third actor; a
// response with a guessed id answers a request the router made of a pool,
// so another caller gets the peer's error; a name ("ConfigServ",
// "SpawnServ") reaches CAF's own servers, whose key-value store grows with
// each key a peer subscribes to. And a routed message names its source and
// destination node, both believed: forwarded to another node, or taken as
// from one.
//
// dspex sends nodes nothing but atoms and strings (remote_protocol.hpp), to
// its peer itself, so everything else is refused.
#pragma once

#include <caf/actor_addr.hpp>
#include <caf/execution_unit.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/io/system_messages.hpp>

#include <functional>
#include <string>

namespace dspex::basp_screen {

enum class verdict {
  pass,    ///< CAF handles it
  drop,    ///< skipped, the connection stays (a message to a name: CAF
           ///< itself asks every new peer's "SpawnServ" for its info)
  relay,   ///< closes the connection: another node's source or destination
  refuse,  ///< closes the connection: not a message dspex sends
};

/// `instance`: the caf::io::basp::instance whose handle() got the payload
/// of `hdr` in `dm`; `answers_nobody`: whether a local actor id never asks
/// anything of a peer (the router), so a response to it is forged.
verdict screen(void* instance, caf::execution_unit* ctx, const caf::io::new_data_msg& dm,
               const caf::io::basp::header& hdr,
               const std::function<bool(caf::actor_id)>& answers_nobody);

/// Whether a message's type list (its serialized "@<>+@atom+@str" head)
/// holds only what dspex sends: atoms, strings, vectors of strings and
/// integers.
bool plain_types(const std::string& types);

} // namespace dspex::basp_screen
