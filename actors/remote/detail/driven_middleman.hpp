// CAF's network multiplexer run by the io scheduler's thread.
//
// Why: with its own thread, CAF's middleman puts two more thread crossings
// on each side of a remote request: an actor's message to a remote actor is
// handed to the multiplexer thread (a pipe write and a wake-up), which
// writes the socket; the peer's multiplexer thread reads it and hands it to
// the scheduler thread (another wake-up); and the same again for the reply
// (docs/performance.md, Through a remote_pool). On 2 vCPUs those wake-ups
// cost more than the request. Driven, the one thread that runs dspex's
// actors and the worker pipes also runs the BASP broker: a message to a
// remote actor is queued in the multiplexer without a pipe write, written
// when the thread next polls it, and a message read from a socket is
// delivered to the router or remote_pool on the same thread.
//
// How: a module in the slot CAF 0.17 leaves unused (network_manager), so
// that CAF starts it after the middleman and stops it before. Its init sets
// middleman.manual-multiplexing (no multiplexer thread) when the system runs
// the io scheduler and the default multiplexer; start hands the multiplexer
// to the loop's thread (its thread id, its epoll descriptor in the loop, and
// a loop_guest that polls it); stop takes it back, and CAF's middleman stop
// then runs the multiplexer to its end on the stopping thread, as it does in
// manual mode. DSPEX_MIDDLEMAN_THREAD=1 keeps CAF's own thread (for
// comparison, and as a way out).
//
// What may not run on that thread: a blocking middleman call
// (middleman::publish, remote_actor, unpublish) from an actor, which would
// wait for the thread it blocks. dspex makes them from node::start and
// node::stop, on the caller's thread, and connects remote_pools
// asynchronously.
#pragma once

namespace caf {
class actor_system_config;
}

namespace dspex {

/// Installs the module (recommended_settings does); it does nothing in a
/// system without the middleman or without the io scheduler.
void use_driven_middleman(caf::actor_system_config& cfg);

} // namespace dspex
