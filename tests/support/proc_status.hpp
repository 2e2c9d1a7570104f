// What /proc says of a process the tests started.
#pragma once

#include <fstream>
#include <string>

namespace dspex::test {

/// VmRSS of process `pid` in kB (-1 when unreadable).
inline long rss_kb(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  long kb = -1;
  while (in >> key)
    if (key == "VmRSS:") {
      in >> kb;
      break;
    }
  return kb;
}

} // namespace dspex::test
