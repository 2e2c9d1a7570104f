#include <dspex/actors/pool/circuit_breaker.hpp>

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
    ++epoch_;
    trials_in_flight_ = 0;
    trial_successes_ = 0;
  }
  return state_;
}

circuit_breaker::admission circuit_breaker::admit(time_point now) {
  if (!cfg_.enabled)
    return {true, 0};
  switch (current(now)) {
    case state::closed: return {true, 0};
    case state::open: return {false, 0};
    case state::half_open:
      if (trials_in_flight_ >= cfg_.half_open_trials)
        return {false, 0};
      ++trials_in_flight_;
      return {true, epoch_};
  }
  return {true, 0};
}

void circuit_breaker::trial_done(time_point now, std::uint64_t ticket, bool ok) {
  current(now);
  if (!live(ticket))
    return;  // from an earlier half-open period: already accounted for
  if (trials_in_flight_ > 0)
    --trials_in_flight_;
  if (!ok) {
    open(now);
    return;
  }
  if (++trial_successes_ >= cfg_.half_open_trials) {
    state_ = state::closed;
    failures_.clear();
    trials_in_flight_ = 0;
    trial_successes_ = 0;
  }
}

void circuit_breaker::trial_dropped(std::uint64_t ticket) {
  if (live(ticket) && trials_in_flight_ > 0)
    --trials_in_flight_;
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
