// A network namespace joined to the host's by one veth link, for a real
// partition in `dspex-bench chaos --nodes` (chaos_nodes.hpp): a member node
// runs inside it (`ip netns exec`), listens on the namespace's address, and
// cutting the link (the namespace's end set down) drops every packet both
// ways with the sockets left open, as a partitioned network does. Healing sets
// it up again. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's
// `ip`; available() says whether this machine allows it.
#pragma once

#include <string>
#include <vector>

namespace dspex::bench {

class netns_link {
public:
  /// Creates namespace number `index` of this process: 10.213.<index>.2 in
  /// it, 10.213.<index>.1 on the host end. Throws std::runtime_error naming
  /// the `ip` command that failed.
  explicit netns_link(int index);
  ~netns_link();
  netns_link(const netns_link&) = delete;
  netns_link& operator=(const netns_link&) = delete;

  /// The address a node inside listens on (and the host dials).
  const std::string& address() const { return ns_ip_; }
  /// `argv` run inside the namespace.
  std::vector<std::string> wrap(std::vector<std::string> argv) const;
  void cut();
  void heal();

  /// Whether namespaces can be made here (probed once).
  static bool available();
  /// Removes namespaces a dead bench run left (their names carry its pid).
  static void sweep_leftovers();

private:
  std::string ns_, host_if_, ns_if_, ns_ip_;
};

} // namespace dspex::bench
