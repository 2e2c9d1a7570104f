// Whether the machine has a CPU to spare now: the io scheduler spins before
// it sleeps only then.
//
// Why: the spin saves a sleep and a wake-up when a reply comes within the
// window, but a spinning thread holds a CPU. With more runnable tasks than
// CPUs (W interpreters busy on 2 cores) the CPU it holds is one a worker
// waits for, and the reply it spins for comes later because of it: at W=4
// on 2 cores the spin cost a third of the host's throughput. The kernel's
// count of runnable tasks (fourth field of /proc/loadavg, "running/total",
// counted when read, the reader itself included) against the CPUs this
// process may run on says which case it is.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace dspex {

class spare_cpu {
public:
  /// Reads /proc/loadavg at most once per `every`; between reads the last
  /// answer stands. Without /proc/loadavg it always says yes (the spin as
  /// it was before this probe).
  explicit spare_cpu(std::chrono::microseconds every = std::chrono::milliseconds(1));
  ~spare_cpu();
  spare_cpu(const spare_cpu&) = delete;
  spare_cpu& operator=(const spare_cpu&) = delete;

  /// True when the runnable tasks are at most the CPUs. One thread only.
  bool now();

  /// The runnable tasks in a /proc/loadavg text ("0.5 0.4 0.3 3/345 123");
  /// nullopt when it cannot be read.
  static std::optional<int> runnable(std::string_view loadavg);

  int cpus() const { return cpus_; }

private:
  int fd_ = -1;
  int cpus_ = 1;
  std::chrono::microseconds every_;
  std::chrono::steady_clock::time_point next_{};
  bool spare_ = true;
};

} // namespace dspex
