// A circuit breaker over worker-level faults of a pool:
//
//   closed     requests flow; `failure_threshold` faults within `window`
//              open the circuit.
//   open       requests fail fast with circuit_open for `open_for`.
//   half_open  up to `half_open_trials` requests go through as trials; that
//              many successful trials close the circuit, one failed trial
//              (or any fault) opens it again.
//
// What feeds it (the pool decides, see pool.hpp): faults that show the pool
// cannot keep workers alive — a crash or protocol error (an exit its
// supervisor did not ask for), a failed init, a failed health ping. Not
// Python exceptions (an answer is an answer) and not command timeouts of a
// worker that is then replaced on purpose: a hung endpoint must not close
// the pool to other work.
//
// Every trial ends in exactly one of: trial_done(ticket, ok) (the request
// was answered, the lease checked in, the worker died or timed out), or
// trial_dropped(ticket) (it never reached a worker: queue timeout, refused
// as saturated or shutting_down). The ticket names the half-open period that
// admitted it, so an outcome arriving after the circuit reopened and
// half-opened again is ignored instead of being credited to the new period.
//
// Time is passed in, so the logic is testable without sleeping.
#pragma once

#include <chrono>
#include <cstdint>
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

  /// The answer of admit(): refused (circuit open or all trial slots taken),
  /// or admitted; a trial carries a non-zero ticket that must come back
  /// through trial_done or trial_dropped.
  struct admission {
    bool admitted = false;
    std::uint64_t trial = 0;
    explicit operator bool() const noexcept { return admitted; }
  };

  explicit circuit_breaker(circuit_config cfg = {}) : cfg_(cfg) {}

  /// May a request go through now? In half_open this takes a trial slot.
  admission admit(time_point now);
  /// A worker-level fault (not tied to a trial).
  void record_failure(time_point now);
  /// The outcome of a trial admitted by admit().
  void trial_done(time_point now, std::uint64_t ticket, bool ok);
  /// A trial that ended without an outcome: frees its slot.
  void trial_dropped(std::uint64_t ticket);

  state current(time_point now);
  int opened_count() const noexcept { return opened_; }
  int trials_in_flight() const noexcept { return trials_in_flight_; }
  const circuit_config& config() const noexcept { return cfg_; }

private:
  void open(time_point now);
  bool live(std::uint64_t ticket) const noexcept {
    return ticket != 0 && ticket == epoch_ && state_ == state::half_open;
  }

  circuit_config cfg_;
  state state_ = state::closed;
  std::deque<time_point> failures_;
  time_point opened_at_{};
  std::uint64_t epoch_ = 0;  // counts half-open periods; a trial's ticket
  int trials_in_flight_ = 0;
  int trial_successes_ = 0;
  int opened_ = 0;
};

const char* to_string(circuit_breaker::state s) noexcept;

} // namespace dspex
