#include <dspex/supervision/restart_intensity.hpp>

namespace dspex::supervision {

restart_intensity::restart_intensity(int intensity,
                                     std::chrono::milliseconds period)
  : intensity_(intensity), period_(period) {
  // nop
}

bool restart_intensity::add(clock::time_point now) {
  // OTP keeps restarts with `T >= Now - Period`; so do we.
  auto threshold = now - period_;
  while (!restarts_.empty() && restarts_.front() < threshold)
    restarts_.pop_front();
  restarts_.push_back(now);
  return restarts_.size() <= static_cast<std::size_t>(intensity_ < 0 ? 0 : intensity_);
}

} // namespace dspex::supervision
