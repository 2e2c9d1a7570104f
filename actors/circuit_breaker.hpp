// A circuit breaker over worker failures (crashes, timeouts, protocol
// errors; not Python exceptions, which are the caller's business):
//
//   closed     requests flow; `failure_threshold` failures within `window`
//              open the circuit.
//   open       requests fail fast with circuit_open for `open_for`.
//   half_open  up to `half_open_trials` requests go through; that many
//              successes close the circuit, one failure opens it again.
//
// Time is passed in, so the logic is testable without sleeping.
#pragma once

#include <chrono>
#include <deque>
#include <string>

namespace dspex {

struct circuit_config {
  bool enabled = true;
  int failure_threshold = 5;
  std::chrono::milliseconds window{10000};
  std::chrono::milliseconds open_for{5000};
  int half_open_trials = 1;
};

class circuit_breaker {
public:
  using time_point = std::chrono::steady_clock::time_point;
  enum class state { closed, open, half_open };

  explicit circuit_breaker(circuit_config cfg = {}) : cfg_(cfg) {}

  /// May a request go through now? In half_open this admits a trial.
  bool allow(time_point now);
  void record_success(time_point now);
  void record_failure(time_point now);

  state current(time_point now);
  int opened_count() const noexcept { return opened_; }
  const circuit_config& config() const noexcept { return cfg_; }

private:
  void open(time_point now);

  circuit_config cfg_;
  state state_ = state::closed;
  std::deque<time_point> failures_;
  time_point opened_at_{};
  int trials_in_flight_ = 0;
  int trial_successes_ = 0;
  int opened_ = 0;
};

const char* to_string(circuit_breaker::state s) noexcept;

} // namespace dspex
