// Calling a pool (or a worker, or a remote_pool) from an actor: unary,
// streaming, cancellable. docs/embedding.md "From an actor".
//
//   auto req = dspex::make_command("generate", {{"prompt", "hi"}}, std::nullopt, 2s);
//   dspex::call(self, pool, req).then([](json& r) { ... }, [](caf::error& e) { ... });
//
// The deadline travels in the request (command_request::timeout): the pool
// and the worker answer command_timeout at it, and the worker's handler is
// cancelled then, so the caller arms no CAF timer of its own (CAF 0.17
// cannot cancel one, and each holds its request's memory until it fires).
// Every request is answered: by its worker, by the pool (queue deadline,
// saturation, shutdown), or with worker_crashed when its worker dies.
//
// A stream: the handler's chunks reach `self` as (chunk, stream_chunk), in
// order and before the answer; the actor calls ack_chunk for each (it
// answers only the chunks that ask for it), or the worker stops sending
// once the actor is worker.stream_window chunks or stream_window_bytes
// behind (actors/pool/detail/stream_credit.hpp).
//
//   self->become({
//     [=](dspex::chunk_atom, dspex::stream_chunk& c) { use(c.data); dspex::ack_chunk(self, c); },
//     ...});
//   dspex::call_stream(self, pool, req, /*ref*/ 7).then(...);
//   dspex::cancel(self, pool, 7);   // the answer is then `cancelled`
#pragma once

#include <dspex/actors/node/messages.hpp>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/local_actor.hpp>
#include <caf/send.hpp>

#include <cstdint>

namespace dspex {

/// (exec, req) to `target`, bounded by req.timeout (0: the worker's
/// request_timeout), with no CAF timer. `ref` (not 0) makes it cancellable
/// by cancel(self, target, ref) and cancelled when `self` dies.
template <class Self>
auto call(Self* self, const caf::actor& target, command_request req, std::uint64_t ref = 0) {
  req.ref = ref;
  return self->request(target, caf::infinite, exec_atom::value, std::move(req));
}

/// As call, and the handler's chunks come to `self` as (chunk, stream_chunk)
/// messages before the answer. `ref` must not be 0.
template <class Self>
auto call_stream(Self* self, const caf::actor& target, command_request req, std::uint64_t ref) {
  req.sink = caf::actor_cast<caf::actor>(self);
  return call(self, target, std::move(req), ref);
}

/// Tells the chunk's worker that `self` took it, when the chunk asks for
/// that (stream_chunk::ack). Call from the handler of (chunk, stream_chunk).
inline void ack_chunk(caf::local_actor* self, const stream_chunk& c) {
  if (c.ack)
    if (auto from = caf::actor_cast<caf::actor>(self->current_sender()))
      caf::anon_send(from, ack_atom::value, c.wire, c.seq);
}

/// Cancels request `ref` that `self` sent to `target`: its answer is
/// `cancelled` (unless it was answered already) and its handler is told to
/// stop. One way; safe for requests long answered.
template <class Self>
void cancel(Self* self, const caf::actor& target, std::uint64_t ref) {
  self->send(target, cancel_atom::value, ref);
}

} // namespace dspex
