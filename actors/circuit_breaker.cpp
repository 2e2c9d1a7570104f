#include <dspex/actors/circuit_breaker.hpp>

namespace dspex {

const char* to_string(circuit_breaker::state s) noexcept {
  switch (s) {
    case circuit_breaker::state::closed: return "closed";
    case circuit_breaker::state::open: return "open";
    case circuit_breaker::state::half_open: return "half_open";
  }
  return "?";
}

circuit_breaker::state circuit_breaker::current(time_point now) {
  if (state_ == state::open && now - opened_at_ >= cfg_.open_for) {
    state_ = state::half_open;
    trials_in_flight_ = 0;
    trial_successes_ = 0;
  }
  return state_;
}

bool circuit_breaker::allow(time_point now) {
  if (!cfg_.enabled)
    return true;
  switch (current(now)) {
    case state::closed: return true;
    case state::open: return false;
    case state::half_open:
      if (trials_in_flight_ >= cfg_.half_open_trials)
        return false;
      ++trials_in_flight_;
      return true;
  }
  return true;
}

void circuit_breaker::record_success(time_point now) {
  if (current(now) == state::half_open) {
    if (trials_in_flight_ > 0)
      --trials_in_flight_;
    if (++trial_successes_ >= cfg_.half_open_trials) {
      state_ = state::closed;
      failures_.clear();
    }
  }
}

void circuit_breaker::record_failure(time_point now) {
  if (!cfg_.enabled)
    return;
  switch (current(now)) {
    case state::open: return;
    case state::half_open: open(now); return;
    case state::closed:
      failures_.push_back(now);
      while (!failures_.empty() && now - failures_.front() > cfg_.window)
        failures_.pop_front();
      if (static_cast<int>(failures_.size()) >= cfg_.failure_threshold)
        open(now);
  }
}

void circuit_breaker::open(time_point now) {
  state_ = state::open;
  opened_at_ = now;
  failures_.clear();
  trials_in_flight_ = 0;
  trial_successes_ = 0;
  ++opened_;
}

} // namespace dspex
