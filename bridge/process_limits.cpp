#include <dspex/bridge/process_limits.hpp>

namespace dspex::bridge {

std::vector<std::string> process_limits::worker_args() const {
  std::string spec;
  auto add = [&spec](const char* key, std::uint64_t v) {
    if (v > 0)
      spec += (spec.empty() ? "" : ",") + std::string(key) + "=" + std::to_string(v);
  };
  add("memory_mb", memory_mb);
  add("cpu_seconds", cpu_seconds);
  add("open_files", open_files);
  add("processes", processes);
  if (spec.empty())
    return {};
  return {"--limits", spec};
}

} // namespace dspex::bridge
