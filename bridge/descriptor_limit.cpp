#include <dspex/bridge/descriptor_limit.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

namespace dspex::bridge {

namespace {

std::atomic<rlim_t> inherited_soft{0};

rlim_t nr_open() {
  std::ifstream in("/proc/sys/fs/nr_open");
  unsigned long long v = 0;
  if (in >> v && v > 0)
    return static_cast<rlim_t>(v);
  return 1048576;  // the kernel's default
}

std::string text(rlim_t v) {
  return v == RLIM_INFINITY ? std::string("unlimited") : std::to_string(v);
}

} // namespace

descriptor_limit raise_descriptor_limit() {
  descriptor_limit out;
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) {
    out.error = errno;
    return out;
  }
  out.before = out.soft = r.rlim_cur;
  out.hard = r.rlim_max;
  auto target = r.rlim_max == RLIM_INFINITY ? nr_open() : r.rlim_max;
  if (r.rlim_cur != RLIM_INFINITY && r.rlim_cur >= target)
    return out;
  rlimit want{target, r.rlim_max};
  if (::setrlimit(RLIMIT_NOFILE, &want) != 0) {
    out.error = errno;
    return out;
  }
  out.soft = target;
  rlim_t none = 0;
  inherited_soft.compare_exchange_strong(none, out.before);
  return out;
}

rlim_t inherited_descriptor_soft_limit() noexcept { return inherited_soft.load(); }

std::string descriptor_limit::describe() const {
  std::string s = "RLIMIT_NOFILE ";
  if (error != 0)
    return s + "soft limit " + text(before) + " not raised to the hard limit " + text(hard) + ": "
           + std::strerror(error);
  if (soft != before)
    return s + "soft limit raised from " + text(before) + " to " + text(soft)
           + (soft == hard ? " (the hard limit)" : " (fs.nr_open)");
  return s + text(soft) + (soft == hard ? " (soft = hard)" : " (hard " + text(hard) + ")");
}

} // namespace dspex::bridge
