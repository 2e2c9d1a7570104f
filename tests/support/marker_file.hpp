// A temporary file a test handler writes lines to ("started", "finally":
// tests/handlers/stream_cmds.py spin), so a test sees what ran in Python.
#pragma once

#include "wait.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>

namespace dspex::test {

struct marker_file {
  std::string path;

  marker_file() {
    char p[] = "/tmp/dspex-marker-XXXXXX";
    int fd = ::mkstemp(p);
    if (fd >= 0)
      ::close(fd);
    path = p;
  }
  ~marker_file() { ::unlink(path.c_str()); }
  marker_file(const marker_file&) = delete;
  marker_file& operator=(const marker_file&) = delete;

  std::string text() const {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  bool has(const std::string& line) const { return text().find(line) != std::string::npos; }
  /// Waits (wait.hpp's patience) until the handler wrote `line`.
  bool await(const std::string& line) const { return wait_until([&] { return has(line); }); }
};

} // namespace dspex::test
