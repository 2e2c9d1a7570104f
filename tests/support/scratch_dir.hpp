// A directory of one test's own (configs, control sockets, event logs,
// module trees), under the build tree, removed with all it holds when the
// test ends, an assertion's throw included: runs leave nothing behind.
// DSPEX_TEST_KEEP=1 keeps them, to read after a failure.
#pragma once

#include "test_paths.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <system_error>
#include <unistd.h>

namespace dspex::test {

class scratch_dir {
public:
  /// <build>/tests/<prefix>-<pid>-<n>, created empty (a leftover of the
  /// same name, from a run killed before its cleanup, is cleared first).
  explicit scratch_dir(const std::string& prefix) {
    static std::atomic<int> made{0};
    namespace fs = std::filesystem;
    auto base = fs::path(DSPEX_TEST_BINARY_DIR) / "tests";
    path_ = (base / (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(++made))).string();
    std::error_code ec;
    fs::remove_all(path_, ec);
    fs::create_directories(path_, ec);
  }
  ~scratch_dir() {
    const char* keep = std::getenv("DSPEX_TEST_KEEP");
    if (keep && std::strcmp(keep, "1") == 0)
      return;
    std::error_code ec;  // a file still open elsewhere is no reason to throw
    std::filesystem::remove_all(path_, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;

  const std::string& path() const { return path_; }
  /// A path inside it.
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

private:
  std::string path_;
};

/// A scratch_dir kept until the test binary exits, for helpers that hand
/// out paths: its path.
inline std::string scratch_path(const std::string& prefix) {
  static std::mutex guard;
  static std::deque<scratch_dir> kept;  // a deque never moves what it holds
  std::lock_guard<std::mutex> g(guard);
  return kept.emplace_back(prefix).path();
}

} // namespace dspex::test
