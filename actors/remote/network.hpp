// The network side of a node's actor_system: CAF's io middleman (BASP over
// TCP), and caf_openssl for TLS. CAF loads modules only before the
// actor_system exists, so an embedder whose tree listens or holds a
// remote_pool calls network_settings on its config first:
//
//   caf::actor_system_config cfg;
//   dspex::recommended_settings(cfg);
//   auto tree = dspex::load_config("tree.json");
//   if (auto err = dspex::network_settings(cfg, *tree)) ...  // invalid_config
//   cfg.parse(argc, argv);
//   caf::actor_system sys{cfg};
//   auto n = dspex::node::start(sys, *tree);  // publishes, connects
//
// node::start refuses (invalid_config) a tree that needs the network in a
// system without the modules.
#pragma once

#include <caf/error.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace caf {
class actor_system_config;
}

namespace dspex {

struct tree_config;

/// One TLS identity: CAF 0.17 keeps a single certificate, key and CA per
/// actor_system (openssl.* options), so a node has one, used for its listen
/// and for each remote_pool with tls on. All three are required: with
/// fewer, caf_openssl would fall back to anonymous ciphers, which dspex
/// never allows.
struct tls_options {
  std::string certificate;  ///< PEM chain of this node
  std::string key;          ///< PEM private key (unencrypted)
  std::string cafile;       ///< PEM CA(s) a peer's certificate must chain to
  bool enabled() const { return !certificate.empty(); }
};

/// Heartbeats make a hung peer (stopped, or behind a dead link) visible:
/// without them CAF 0.17 waits for TCP to notice, which may be never.
struct network_timing {
  std::chrono::milliseconds heartbeat_interval{1000};
  /// No traffic (heartbeats included) for this long: the connection is
  /// dropped and every request in flight on it gets node_down.
  std::chrono::milliseconds connection_timeout{5000};
};

/// Bounds on a node's router port (tree config keys in parentheses).
struct listen_limits {
  /// Open connections on the port (`listen_max_connections`); one more is
  /// accepted and closed at once (the refusal) and counted.
  std::size_t max_connections = 256;
  /// From accept to the peer's BASP client handshake (TLS included)
  /// (`listen_handshake_timeout_ms`); past it the connection is shut
  /// down. After the handshake, the heartbeat's connection_timeout_ms
  /// bounds an idle peer.
  std::chrono::milliseconds handshake_timeout{5000};
};

/// The largest BASP payload a node accepts on any connection
/// (`max_remote_message_bytes`, default 64 MiB + 1 MiB: a request or reply
/// of max_frame_bytes with its envelope). Larger: the header is refused
/// before anything is allocated and that connection alone is closed.
inline constexpr std::uint32_t default_max_remote_message_bytes = 65u * 1024u * 1024u;

/// Whether the tree listens or holds a remote_pool.
bool needs_network(const tree_config& tree);
/// Whether it needs caf_openssl (a TLS listen, or a remote_pool with tls).
bool needs_tls(const tree_config& tree);

/// Loads the middleman (and the openssl manager with the tree's TLS
/// identity when needed) and sets the heartbeat options. Checks the TLS
/// files with OpenSSL first: CAF would raise on its network thread instead.
/// Does nothing for a tree that needs no network.
caf::error network_settings(caf::actor_system_config& cfg, const tree_config& tree);

/// The same for a client of one remote node (`dspex status --node`).
caf::error network_settings(caf::actor_system_config& cfg, const tls_options& tls,
                            const network_timing& timing = {});

/// The TLS files load and the key matches the certificate; invalid_config
/// naming the file otherwise.
caf::error check_tls(const tls_options& tls);

} // namespace dspex
