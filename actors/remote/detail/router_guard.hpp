// The guard on CAF 0.17's network path: what the middleman does not bound
// by itself, dspex bounds here, without a second hop.
//
// CAF 0.17.6 (Debian's libcaf-io, libcaf-openssl) has five holes that an
// outside client can use against a listening node:
// - a BASP header's payload_len is trusted: 32 bytes make the broker
//   allocate and zero-fill up to 4 GiB before the payload arrives;
// - a connection that never completes the BASP handshake is never timed
//   out (the broker's connection timeout only covers connections that sent
//   a header), and nothing caps how many there are;
// - accept failing with EMFILE leaves the listener readable: the
//   multiplexer spins at 100% CPU;
// - caf_openssl never clears OpenSSL's per-thread error queue (it drains it
//   only in a log statement Debian's build compiles out), so a failed
//   handshake of one client leaves an error that makes SSL_get_error report
//   SSL_ERROR_SSL on the next healthy connection's read: TLS links drop
//   whenever another client comes or goes;
// - a peer's message is delivered to any actor it can name, whatever it
//   holds: an exit_msg that kills the router, a forged down_msg, a
//   response to a request the router made of a pool, a routed message
//   that is relayed to the node it names or taken as from it
//   (detail/basp_screen.hpp: the guard refuses all but what dspex sends).
//
// The dspex binary (and any executable linking the dspex library) defines
// the functions CAF calls at those points — `accept`, SSL_read/SSL_write/
// SSL_accept/SSL_connect/SSL_do_handshake/SSL_shutdown and
// `caf::io::basp::instance::handle` — and the dynamic linker binds CAF's
// calls to them (ELF interposition, as LD_PRELOAD does); each does its
// check and calls the real function. `active()` says whether the binding
// took. Only listeners registered here are guarded; BASP messages are
// screened while one is, or while a remote_pool runs (screening()); a
// process with neither passes through untouched, and the SSL wrappers only
// clear the error queue first, as OpenSSL's manual asks of every caller.
#pragma once

#include <dspex/actors/remote/network.hpp>

#include <caf/actor_system.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace dspex {

class router_guard {
public:
  /// Guards the TCP listener CAF opened on `port` (plain or TLS) until the
  /// returned object is destroyed: counts and caps its connections and
  /// shuts down those that do not finish their handshake in time (a sweep
  /// runs on the middleman's own thread, so no descriptor is touched while
  /// CAF may close it).
  /// `router`: the actor published there (no peer answers it anything).
  /// Every BASP message of a process with a guarded port is screened
  /// (detail/basp_screen.hpp).
  static std::unique_ptr<router_guard> watch(caf::actor_system& sys, std::uint16_t port,
                                             caf::actor_id router, listen_limits limits);
  ~router_guard();

  /// The most actors of one peer known here at once (sent something, not
  /// down since): past it the connection is closed. CAF keeps a proxy for
  /// each, and a peer names its own actor ids; a dspex peer speaks from one
  /// actor per remote_pool.
  static constexpr std::size_t max_peer_actors = 1024;

  /// Counters for status: connections open, refused (cap, EMFILE),
  /// handshake timeouts; process-wide: oversized headers, refused relays
  /// and messages, dropped messages (to a name, or to an actor that takes
  /// none), peers over max_peer_actors.
  nlohmann::json counters() const;

  /// While the returned token lives, the process's BASP messages are
  /// screened (detail/basp_screen.hpp) even with no port guarded: a
  /// remote_pool holds one, so that the node it calls cannot end it (an
  /// exit with reason kill, again after each restart, until its supervisor
  /// gives up) or answer for another node.
  /// `client` (with its node): an actor that asks a router and takes its
  /// messages meanwhile (a remote_pool; 0: none).
  static std::shared_ptr<void> screening(const caf::node_id& node = {}, caf::actor_id client = 0);

  /// Sets the process-wide BASP payload bound (the largest asked for wins:
  /// several nodes in one process share CAF's code).
  static void max_message_bytes(std::uint32_t n);
  static std::uint32_t max_message_bytes();

  /// Whether CAF's calls reach the guard in this executable (ELF
  /// interposition took). False only for an unusual link (a static CAF, or
  /// -Bsymbolic); node::start logs it.
  static bool active();

  struct state;

private:
  router_guard(caf::actor_system& sys, std::shared_ptr<state> st);
  caf::actor_system& sys_;
  std::shared_ptr<state> st_;
  caf::actor ticker_;
  std::shared_ptr<void> router_;  // the router a receiver of the screen
};

} // namespace dspex
