// The monotonic clock behind restart intensity.
//
// OTP's supervisor reads erlang:monotonic_time/1 directly; ours asks a clock
// object the supervisor is given (supervisor_options::clk), so a test can
// advance time by hand and check intensity without sleeping. Only restart
// intensity reads this clock; shutdown timeouts and ready timeouts are real
// timers (CAF's), since they bound how long a misbehaving child may take.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>

namespace dspex::supervision {

/// A monotonic time source. Implementations must be safe to call from any
/// thread: the supervisor reads it on a CAF worker thread.
class clock {
public:
  using duration = std::chrono::steady_clock::duration;
  using time_point = std::chrono::steady_clock::time_point;

  virtual ~clock();

  /// The current time; never goes backwards.
  virtual time_point now() const = 0;
};

/// The default: std::chrono::steady_clock.
class monotonic_clock final : public clock {
public:
  time_point now() const override;
};

/// A clock that stands still until told to move; for tests.
/// Starts at an arbitrary fixed epoch. Thread-safe.
class manual_clock final : public clock {
public:
  time_point now() const override;

  /// Moves the clock forward by `d` (negative values are ignored: the clock
  /// is monotonic).
  void advance(duration d);

private:
  std::atomic<duration::rep> ticks_{0};
};

/// A shared monotonic_clock, the default when supervisor_options::clk is null.
std::shared_ptr<clock> make_monotonic_clock();

} // namespace dspex::supervision
