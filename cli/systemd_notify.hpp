// systemd's service protocol for `dspex run` (examples/systemd/dspex.service):
// when NOTIFY_SOCKET is set, READY=1 once every pool is warm and the control
// socket listens, STATUS= lines, WATCHDOG=1 every half WATCHDOG_USEC, and
// STOPPING=1 when shutdown begins. Without NOTIFY_SOCKET every call is a no-op.
#pragma once

#include <chrono>
#include <string>

namespace dspex::cli {

class systemd_notifier {
public:
  /// Reads the environment (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID).
  systemd_notifier();

  bool active() const { return active_; }
  void ready(const std::string& status);
  void status(const std::string& status);
  void stopping(const std::string& status);
  void watchdog();
  /// How often to call watchdog(): half of WATCHDOG_USEC, as sd_watchdog_enabled
  /// advises; zero when systemd asks for no watchdog.
  std::chrono::milliseconds watchdog_interval() const { return interval_; }

private:
  void send(const std::string& state);
  bool active_ = false;
  std::chrono::milliseconds interval_{0};
};

} // namespace dspex::cli
