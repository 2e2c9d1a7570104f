// The JSON configuration of a whole tree. `default_config()` is what
// `dspex config --default` prints; `parse_config` validates everything
// before anything starts, so an invalid config never half-starts a tree.
//
// Every error names where (a JSON path such as root.children[1].size), what
// was expected and what was found.
#pragma once

#include <dspex/actors/group/pool_group.hpp>
#include <dspex/actors/node/monitor.hpp>
#include <dspex/actors/remote/network.hpp>
#include <dspex/actors/pool/pool.hpp>
#include <dspex/actors/remote/remote_pool.hpp>
#include <dspex/actors/session/session_registry.hpp>
#include <dspex/actors/pool/worker.hpp>
#include <dspex/bridge/json_limits.hpp>
#include <dspex/supervision/child_spec.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <nlohmann/json.hpp>

#include <csignal>
#include <memory>
#include <string>
#include <variant>
#include <vector>

namespace dspex {

/// A plain program supervised with OTP semantics and no protocol (as a
/// supervisord program): its exit code or signal is its exit reason.
struct process_config {
  std::vector<std::string> command;
  std::vector<std::pair<std::string, std::string>> env;
  std::string cwd;
  /// Sent at once when the supervisor stops the child (then its shutdown
  /// timeout, then SIGKILL). Config: "SIGTERM" | "TERM" | ... (default SIGTERM).
  int stop_signal = SIGTERM;
};

/// The signals a `process` node's stop_signal may name, as
/// {"SIGTERM", 15}; "TERM" is accepted for "SIGTERM".
const std::vector<std::pair<std::string, int>>& stop_signal_names();

struct node_spec;

struct supervisor_node {
  supervision::supervisor_flags flags;
  std::vector<node_spec> children;
};

/// One child of a supervisor in the config.
struct node_spec {
  std::string id;
  std::string type;  ///< supervisor | session_registry | pool | monitor | worker | process | remote_pool | pool_group
  supervision::restart_type restart = supervision::restart_type::permanent;
  std::optional<supervision::shutdown_spec> shutdown;
  bool significant = false;
  std::variant<std::monostate, std::shared_ptr<supervisor_node>, session_registry_config,
               pool_config, monitor_config, worker_config, process_config, remote_pool_config,
               pool_group_config>
    body;
};

enum class bridge_mode { disabled, single, pool, auto_detect };

/// The /metrics listener's limits (config `metrics`; metrics/exporter.hpp,
/// docs/security.md).
struct metrics_limits {
  /// `max_connections`: open connections at most, idle ones included.
  std::size_t max_connections = 256;
  /// `request_timeout_ms`: from accept to the end of the request head.
  std::chrono::milliseconds request_timeout{5000};
  /// `write_timeout_ms`: for the client to take the whole response.
  std::chrono::milliseconds write_timeout{10000};
  /// `max_request_bytes`: the request head at most; more is a 431.
  std::size_t max_request_bytes = 8192;
};

struct tree_config {
  bridge_mode mode = bridge_mode::pool;
  supervisor_node root;
  /// `metrics.listen`, normalized (parse_listen_address); empty: no
  /// metrics endpoint. `"metrics": {}` means the loopback default.
  std::string metrics_listen;
  /// `metrics.max_connections`, `request_timeout_ms`, `write_timeout_ms`,
  /// `max_request_bytes`.
  metrics_limits metrics;
  /// `log_level`: what `dspex run` logs on stderr (trace debug info warn
  /// error critical off).
  std::string log_level = "info";
  json source;  ///< the validated JSON, defaults filled in
  /// "HOST:PORT": publish the node's router there (actors/remote/detail/router.hpp).
  std::string listen;
  /// Allows a plain (non-TLS) listen on a non-loopback address.
  bool insecure = false;
  /// `max_json_depth`: how deep a request's args and a reply's result may
  /// nest, on every path into the node (bridge/json_limits.hpp,
  /// docs/security.md "JSON depth and size").
  std::size_t max_json_depth = bridge::default_max_json_depth;
  /// `max_call_depth`: how deep handlers' host calls may nest (a client's
  /// request calling a pool is depth 1; ctx.call past it is refused).
  std::size_t max_call_depth = 8;
  /// The node's TLS identity (listen, and remote_pools with tls).
  tls_options tls;
  network_timing timing;
  /// The router port's connection cap and handshake timeout.
  dspex::listen_limits listen_limits;
  /// `request_link` (default true) and `request_link_port` (default 0: any
  /// free port): a plain listen also offers its callers a request link
  /// (actors/remote/detail/request_link.hpp, docs/remote.md).
  bool request_link = true;
  std::uint16_t request_link_port = 0;
  /// `max_remote_message_bytes`: the largest BASP payload accepted.
  std::uint32_t max_remote_message_bytes = default_max_remote_message_bytes;
};

/// Where `dspex run` serves /metrics when `metrics` names no address.
inline constexpr const char* default_metrics_listen = "127.0.0.1:9464";

/// "HOST:PORT" for a TCP listener: HOST an IPv4 address, [IPv6] or
/// localhost; a bare PORT means 127.0.0.1:PORT (loopback unless asked
/// otherwise). Returns the normalized form, or invalid_config saying what
/// is wrong with `s`.
caf::expected<std::string> parse_listen_address(const std::string& s);

/// The rules a listen address must follow (a port, TLS or --insecure off
/// loopback); empty when it does, else the message. parse_config applies
/// it; so does the CLI after --listen / --insecure.
std::string check_listen(const tree_config& cfg);

/// The built-in default: root(one_for_one) -> sessions, pool_sup, monitor.
json default_config();

/// Validates and converts; the error (invalid_config) lists every problem,
/// one per line.
caf::expected<tree_config> parse_config(const json& j);

/// Reads a file and parses it (JSON syntax errors name line and column).
caf::expected<tree_config> load_config(const std::string& path);

const char* to_string(bridge_mode m) noexcept;

} // namespace dspex
