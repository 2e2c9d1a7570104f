#include <dspex/actors/node/detail/spare_cpu.hpp>

#include <charconv>
#include <fcntl.h>
#include <sched.h>
#include <thread>
#include <unistd.h>

namespace dspex {

namespace {

int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return CPU_COUNT(&set);
  auto n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

} // namespace

spare_cpu::spare_cpu(std::chrono::microseconds every)
  : fd_(::open("/proc/loadavg", O_RDONLY | O_CLOEXEC)), cpus_(usable_cpus()), every_(every) {}

spare_cpu::~spare_cpu() {
  if (fd_ >= 0)
    ::close(fd_);
}

std::optional<int> spare_cpu::runnable(std::string_view text) {
  // "1.18 1.96 2.01 3/345 12345": the field after the third blank.
  std::size_t at = 0;
  for (int blanks = 0; blanks < 3; ++blanks) {
    at = text.find(' ', at);
    if (at == std::string_view::npos)
      return std::nullopt;
    ++at;
  }
  int n = 0;
  auto [end, ec] = std::from_chars(text.data() + at, text.data() + text.size(), n);
  if (ec != std::errc{} || end == text.data() + text.size() || *end != '/' || n < 0)
    return std::nullopt;
  return n;
}

bool spare_cpu::now() {
  if (fd_ < 0)
    return true;
  auto t = std::chrono::steady_clock::now();
  if (t < next_)
    return spare_;
  next_ = t + every_;
  char buf[128];
  auto n = ::pread(fd_, buf, sizeof buf - 1, 0);
  if (n <= 0)
    return spare_ = true;
  auto running = runnable(std::string_view(buf, static_cast<std::size_t>(n)));
  return spare_ = !running || *running <= cpus_;
}

} // namespace dspex
