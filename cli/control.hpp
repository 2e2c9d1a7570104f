// The local control channel of a running node: a Unix socket (mode 0600,
// never a network port), one JSON request line in, one JSON reply line out.
//   {"op": "status"}
//   {"op": "exec", "command": "...", "args": {...}, "session_id": "..."|null, "timeout_ms": n}
// `dspex status` and `dspex exec` are its clients.
#pragma once

#include <dspex/actors/node.hpp>

#include <atomic>
#include <string>
#include <thread>

namespace dspex::cli {

/// /tmp/dspex-<uid>/<name>.sock unless DSPEX_CONTROL is set.
std::string default_control_path(const std::string& name = "default");

class control_server {
public:
  control_server(node& n, std::string path);
  ~control_server();  ///< stops accepting and removes the socket
  const std::string& path() const { return path_; }
  bool listening() const { return fd_ >= 0; }

private:
  void serve();
  node& node_;
  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

/// Sends one request; returns the reply or an error object {"error": ...}.
json control_call(const std::string& path, const json& request);

} // namespace dspex::cli
