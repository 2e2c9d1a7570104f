// Restart intensity: at most `intensity` restarts within any `period`.
//
// OTP's add_restart/1: every restart is recorded with the current time;
// restarts older than `now - period` are forgotten; when more than
// `intensity` remain, the supervisor gives up (stops its children and exits
// with reason shutdown). Intensity 0 means the first restart already gives up.
#pragma once

#include <chrono>
#include <cstddef>
#include <deque>

#include <dspex/supervision/clock.hpp>

namespace dspex::supervision {

class restart_intensity {
public:
  restart_intensity(int intensity, std::chrono::milliseconds period);

  /// Records a restart at `now`. Returns false when this restart exceeds the
  /// intensity: the caller must not restart but shut down.
  bool add(clock::time_point now);

  /// Restarts recorded within the period as of the last add().
  std::size_t recent() const noexcept {
    return restarts_.size();
  }

  int intensity() const noexcept {
    return intensity_;
  }

  std::chrono::milliseconds period() const noexcept {
    return period_;
  }

private:
  int intensity_;
  std::chrono::milliseconds period_;
  /// Times of recent restarts, oldest first; all within `period_` of the
  /// newest.
  std::deque<clock::time_point> restarts_;
};

} // namespace dspex::supervision
