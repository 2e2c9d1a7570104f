#include "systemd_notify.hpp"

#include <systemd/sd-daemon.h>

#include <cstdlib>

namespace dspex::cli {

systemd_notifier::systemd_notifier() {
  const char* sock = std::getenv("NOTIFY_SOCKET");
  active_ = sock && *sock;
  std::uint64_t usec = 0;
  // > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID, if set, is us.
  if (active_ && sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
    interval_ = std::chrono::milliseconds(std::max<std::uint64_t>(1, usec / 2000));
}

void systemd_notifier::send(const std::string& state) {
  if (active_)
    sd_notify(0, state.c_str());  // a lost notification is systemd's to time out on
}

void systemd_notifier::ready(const std::string& s) { send("READY=1\nSTATUS=" + s); }
void systemd_notifier::status(const std::string& s) { send("STATUS=" + s); }
void systemd_notifier::stopping(const std::string& s) { send("STOPPING=1\nSTATUS=" + s); }
void systemd_notifier::watchdog() { send("WATCHDOG=1"); }

} // namespace dspex::cli
