#include <dspex/bridge/process_scope.hpp>

#include <dspex/bridge/host_run.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <set>
#include <unistd.h>

namespace dspex::bridge {

std::string new_scope() {
  static std::atomic<unsigned long long> next{1};
  char seq[16];
  std::snprintf(seq, sizeof seq, "%010llu", next.fetch_add(1) % 10000000000ULL);
  return host_run_id() + "/" + seq;
}

std::string scope_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  static const std::string key = std::string(scope_variable) + "=";
  std::string entry;
  while (std::getline(in, entry, '\0'))
    if (entry.compare(0, key.size(), key) == 0)
      return entry.substr(key.size());
  return {};
}

std::string run_of_scope(const std::string& scope) {
  auto slash = scope.find('/');
  return slash == std::string::npos ? std::string{} : scope.substr(0, slash);
}

int sweep_scope(const std::string& scope) {
  if (scope.empty())
    return 0;
  // Passes until one finds nobody new (a process may start another while
  // it is read); one killed stays visible until reaped, and counts once.
  std::set<pid_t> killed;
  for (int pass = 0; pass < 8; ++pass) {
    int found = 0;
    for_each_pid([&](pid_t pid) {
      if (pid != ::getpid() && killed.count(pid) == 0 && scope_of(pid) == scope
          && ::kill(pid, SIGKILL) == 0) {
        killed.insert(pid);
        ++found;
      }
    });
    if (found == 0)
      break;
  }
  return static_cast<int>(killed.size());
}

} // namespace dspex::bridge
