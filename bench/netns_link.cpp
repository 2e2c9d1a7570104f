#include <dspex/bench/netns_link.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <stdexcept>
#include <string>
#include <unistd.h>

namespace dspex::bench {

namespace {

const std::string prefix = "dspex-chaos-";

// Runs one `ip` command line quietly; true when it succeeded.
bool ip(const std::string& args) {
  return std::system(("ip " + args + " >/dev/null 2>&1").c_str()) == 0;
}

void must(const std::string& args) {
  if (!ip(args))
    throw std::runtime_error("ip " + args + " failed");
}

} // namespace

netns_link::netns_link(int index) {
  auto pid = std::to_string(::getpid());
  auto i = std::to_string(index);
  ns_ = prefix + pid + "-" + i;
  // Interface names are at most 15 characters.
  host_if_ = "dxh" + std::to_string(::getpid() % 100000) + "x" + i;
  ns_if_ = "dxn" + std::to_string(::getpid() % 100000) + "x" + i;
  ns_ip_ = "10.213." + i + ".2";
  must("netns add " + ns_);
  must("link add " + host_if_ + " type veth peer name " + ns_if_);
  must("link set " + ns_if_ + " netns " + ns_);
  must("addr add 10.213." + i + ".1/30 dev " + host_if_);
  must("link set " + host_if_ + " up");
  must("-n " + ns_ + " addr add " + ns_ip_ + "/30 dev " + ns_if_);
  must("-n " + ns_ + " link set " + ns_if_ + " up");
  must("-n " + ns_ + " link set lo up");
}

netns_link::~netns_link() {
  ip("link del " + host_if_);  // its peer goes with it
  ip("netns del " + ns_);
}

std::vector<std::string> netns_link::wrap(std::vector<std::string> argv) const {
  argv.insert(argv.begin(), {"ip", "netns", "exec", ns_});
  return argv;
}

// The namespace's end goes down: the host's end keeps its address and
// route but loses its carrier, so what the host sends is dropped silently
// (no "network unreachable" that would end its connections at once), as
// on a cut cable.
void netns_link::cut() {
  must("-n " + ns_ + " link set " + ns_if_ + " down");
}

void netns_link::heal() {
  must("-n " + ns_ + " link set " + ns_if_ + " up");
}

bool netns_link::available() {
  static const bool ok = [] {
    if (::geteuid() != 0)
      return false;
    auto probe = prefix + "probe-" + std::to_string(::getpid());
    if (!ip("netns add " + probe))
      return false;
    ip("netns del " + probe);
    return true;
  }();
  return ok;
}

void netns_link::sweep_leftovers() {
  DIR* d = ::opendir("/run/netns");
  if (!d)
    return;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind(prefix, 0) != 0)
      continue;
    auto pid = std::atoi(name.c_str() + prefix.size());
    if (pid > 0 && ::kill(pid, 0) != 0)
      ip("netns del " + name);
  }
  ::closedir(d);
}

} // namespace dspex::bench
