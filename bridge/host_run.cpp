#include <dspex/bridge/host_run.hpp>

#include <dspex/bridge/process_scope.hpp>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <unistd.h>
#include <vector>

namespace dspex::bridge {

namespace {

// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
std::string start_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line))
    return {};
  auto close = line.rfind(')');  // the command name may contain spaces
  if (close == std::string::npos)
    return {};
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && (rest >> field); ++i)
    if (i == 22)
      return field;
  return {};
}

} // namespace

std::vector<std::string> process_cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0'))
    args.push_back(arg);
  return args;
}

void for_each_pid(const std::function<void(pid_t)>& f) {
  DIR* proc = ::opendir("/proc");
  if (!proc)
    return;
  while (auto* ent = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(ent->d_name, &end, 10);
    if (*end == '\0' && pid > 0)
      f(static_cast<pid_t>(pid));
  }
  ::closedir(proc);
}

const std::string& host_run_id() {
  static const std::string id = "h" + std::to_string(::getpid()) + "-" + start_ticks(::getpid());
  return id;
}

namespace {

// Splits "h<pid>-<ticks>"; false for anything else (not a run id of ours).
bool parse_run_id(const std::string& run_id, long& pid, std::string& ticks) {
  if (run_id.size() < 4 || run_id[0] != 'h')
    return false;
  auto dash = run_id.find('-');
  if (dash == std::string::npos || dash + 1 >= run_id.size())
    return false;
  char* end = nullptr;
  pid = std::strtol(run_id.c_str() + 1, &end, 10);
  if (end != run_id.c_str() + dash || pid <= 0)
    return false;
  ticks = run_id.substr(dash + 1);
  return ticks.find_first_not_of("0123456789") == std::string::npos;
}

} // namespace

bool run_is_alive(const std::string& run_id) {
  long pid = 0;
  std::string ticks;
  if (!parse_run_id(run_id, pid, ticks))
    return false;
  auto now = start_ticks(static_cast<pid_t>(pid));
  return !now.empty() && now == ticks;
}

int reap_leftovers(const std::string& marker) {
  int stopped = 0;
  for_each_pid([&](pid_t pid) {
    if (pid == ::getpid())
      return;
    auto args = process_cmdline(pid);
    bool ours = false;
    std::string run;
    for (std::size_t i = 0; i < args.size(); ++i) {
      if (args[i].find(marker) != std::string::npos)
        ours = true;
      if (args[i] == "--run-id" && i + 1 < args.size())
        run = args[i + 1];
    }
    if (!ours) {
      // What a worker started (a setsid() daemon, a Popen child in a new
      // session) names no worker on its command line: its scope names the
      // run (process_scope.hpp).
      run = run_of_scope(scope_of(pid));
      ours = !run.empty();
    }
    // Only run ids of our own form name a host we can judge; anything else
    // (another tool's worker, a test harness) is not ours to stop.
    long host = 0;
    std::string ticks;
    if (!ours || !parse_run_id(run, host, ticks) || run == host_run_id() || run_is_alive(run))
      return;
    if (::kill(pid, SIGKILL) == 0)
      ++stopped;
  });
  return stopped;
}

} // namespace dspex::bridge
