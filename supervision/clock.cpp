#include <dspex/supervision/clock.hpp>

namespace dspex::supervision {

clock::~clock() = default;

clock::time_point monotonic_clock::now() const {
  return std::chrono::steady_clock::now();
}

clock::time_point manual_clock::now() const {
  return time_point{duration{ticks_.load(std::memory_order_acquire)}};
}

void manual_clock::advance(duration d) {
  if (d.count() > 0)
    ticks_.fetch_add(d.count(), std::memory_order_acq_rel);
}

std::shared_ptr<clock> make_monotonic_clock() {
  return std::make_shared<monotonic_clock>();
}

} // namespace dspex::supervision
