#include "log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <memory>

namespace dspex::cli {

namespace {

// Uncoloured and flushed per line: stderr is read by journald, files and
// pipes; the lines must be whole and in order with the workers' own.
spdlog::logger& logger() {
  static auto l = [] {
    auto lg = std::make_shared<spdlog::logger>("dspex",
                                               std::make_shared<spdlog::sinks::stderr_sink_mt>());
    lg->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%eZ level=%l %v", spdlog::pattern_time_type::utc);
    lg->set_level(spdlog::level::info);
    lg->flush_on(spdlog::level::trace);
    return lg;
  }();
  return *l;
}

spdlog::level::level_enum to_spdlog(log_level lv) {
  return static_cast<spdlog::level::level_enum>(static_cast<int>(lv));
}

} // namespace

bool set_log_level(const std::string& name) {
  static const char* names[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  for (int i = 0; i < 7; ++i)
    if (name == names[i]) {
      logger().set_level(to_spdlog(static_cast<log_level>(i)));
      return true;
    }
  return false;
}

bool log_enabled(log_level lv) { return logger().should_log(to_spdlog(lv)); }

void log_line(log_level lv, const std::string& message) {
  try {
    logger().log(to_spdlog(lv), spdlog::string_view_t(message));
  } catch (...) {
    // A log line that cannot be written must not take its caller down.
  }
}

} // namespace dspex::cli
