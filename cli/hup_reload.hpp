// SIGHUP to `dspex run`: a rolling reload of every pool (node::reload_all),
// on a thread of its own so that the signal loop stays free for SIGTERM. A
// SIGHUP while one runs is logged and ignored (the running one picks up the
// code on disk as it goes). Joined after the node stopped: a stop during a
// reload ends it (its pools refuse the rest).
#pragma once

#include <dspex/actors/node/node.hpp>

#include <atomic>
#include <thread>

namespace dspex::cli {

class hup_reload {
public:
  explicit hup_reload(node& n) : node_(n) {}
  ~hup_reload() { join(); }

  /// One SIGHUP: starts the reload unless one runs. Logs to stderr.
  void on_signal(std::uint32_t from_pid);
  void join();

private:
  void report();
  node& node_;
  std::atomic<bool> running_{false};
  std::thread thread_;
};

} // namespace dspex::cli
