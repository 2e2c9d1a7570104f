// dspex run's log on stderr: one logfmt line per message,
//   ts=2026-12-02T01:00:00.123Z level=error event=child_exited path=... reason=crash
// at a level set by --log-level or config log_level (trace debug info warn
// error critical off; default info). spdlog writes it (log.cpp is the only
// file that includes spdlog). Python workers' own stderr lines do not pass
// here: they keep their "[w1] ..." label (bridge/python_process.cpp).
#pragma once

#include <string>

namespace dspex::cli {

/// spdlog's levels, in its order.
enum class log_level { trace, debug, info, warn, error, critical, off };

/// Sets the level by name ("warn"); false for a name not in the list.
bool set_log_level(const std::string& name);
bool log_enabled(log_level lv);
/// Writes `message` (already key=value) as one line, if `lv` is enabled.
void log_line(log_level lv, const std::string& message);

} // namespace dspex::cli
