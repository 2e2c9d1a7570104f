// The circuit breaker (actors/pool/circuit_breaker.hpp) on its own: time is
// passed in, so its whole cycle runs without a pool, a worker or a wait.
// Through a pool: test_pool_scripted.cpp (scripted workers) and
// test_pool_faults.cpp (real processes), both on the pool's manual clock.
#include <doctest/doctest.h>

#include <dspex/actors/pool/circuit_breaker.hpp>

#include <chrono>

using namespace dspex;
using namespace std::chrono;

TEST_SUITE("circuit_breaker") {

TEST_CASE("opens after the threshold, fails fast, half-opens, closes on success") {
  circuit_config cfg;
  cfg.failure_threshold = 3;
  cfg.window = std::chrono::seconds(10);
  cfg.open_for = std::chrono::seconds(5);
  circuit_breaker cb(cfg);
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  CHECK(cb.admit(t));
  CHECK(cb.admit(t).trial == 0);  // closed: no trials
  cb.record_failure(t);
  cb.record_failure(t);
  CHECK(cb.current(t) == circuit_breaker::state::closed);
  cb.record_failure(t);
  CHECK(cb.current(t) == circuit_breaker::state::open);
  CHECK_FALSE(cb.admit(t + std::chrono::seconds(1)));
  auto later = t + std::chrono::seconds(6);
  CHECK(cb.current(later) == circuit_breaker::state::half_open);
  auto trial = cb.admit(later);
  CHECK(trial);
  CHECK(trial.trial != 0);
  CHECK_FALSE(cb.admit(later));  // one trial at a time
  cb.trial_done(later, trial.trial, true);
  CHECK(cb.current(later) == circuit_breaker::state::closed);
  CHECK(cb.opened_count() == 1);
}

TEST_CASE("failures outside the window do not add up; a failed trial reopens") {
  circuit_config cfg;
  cfg.failure_threshold = 2;
  cfg.window = std::chrono::seconds(1);
  cfg.open_for = std::chrono::seconds(1);
  circuit_breaker cb(cfg);
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  cb.record_failure(t);
  cb.record_failure(t + std::chrono::seconds(5));
  CHECK(cb.current(t + std::chrono::seconds(5)) == circuit_breaker::state::closed);
  cb.record_failure(t + std::chrono::milliseconds(5500));
  CHECK(cb.current(t + std::chrono::milliseconds(5500)) == circuit_breaker::state::open);
  auto later = t + std::chrono::seconds(7);
  auto trial = cb.admit(later);
  CHECK(trial);
  cb.trial_done(later, trial.trial, false);
  CHECK(cb.current(later) == circuit_breaker::state::open);
  CHECK(cb.opened_count() == 2);
}

TEST_CASE("every trial ends: a dropped trial frees its slot, a stale ticket is ignored") {
  circuit_config cfg;
  cfg.failure_threshold = 1;
  cfg.open_for = seconds(1);
  circuit_breaker cb(cfg);
  auto t = steady_clock::time_point{} + hours(1);
  cb.record_failure(t);
  CHECK(cb.current(t) == circuit_breaker::state::open);
  auto t1 = t + seconds(2);
  auto first = cb.admit(t1);
  REQUIRE(first);
  CHECK_FALSE(cb.admit(t1));
  cb.trial_dropped(first.trial);  // timed out in the queue, say
  CHECK(cb.trials_in_flight() == 0);
  auto second = cb.admit(t1);
  REQUIRE(second);
  // A fault reopens; the second trial's outcome then belongs to the past.
  cb.record_failure(t1);
  CHECK(cb.current(t1) == circuit_breaker::state::open);
  auto t2 = t1 + seconds(2);
  CHECK(cb.current(t2) == circuit_breaker::state::half_open);
  cb.trial_done(t2, second.trial, true);  // stale: must not close
  CHECK(cb.current(t2) == circuit_breaker::state::half_open);
  cb.trial_dropped(second.trial);         // stale: must not free a slot
  auto third = cb.admit(t2);
  REQUIRE(third);
  CHECK_FALSE(cb.admit(t2));
  cb.trial_done(t2, third.trial, true);
  CHECK(cb.current(t2) == circuit_breaker::state::closed);
}

TEST_CASE("half_open_trials 2: two answered trials close, one failed trial reopens") {
  circuit_config cfg;
  cfg.failure_threshold = 1;
  cfg.open_for = seconds(1);
  cfg.half_open_trials = 2;
  circuit_breaker cb(cfg);
  auto t = steady_clock::time_point{} + hours(1);
  cb.record_failure(t);
  auto t1 = t + seconds(2);
  auto a = cb.admit(t1), b = cb.admit(t1);
  REQUIRE(a);
  REQUIRE(b);
  CHECK_FALSE(cb.admit(t1));
  cb.trial_done(t1, a.trial, true);
  CHECK(cb.current(t1) == circuit_breaker::state::half_open);
  cb.trial_done(t1, b.trial, true);
  CHECK(cb.current(t1) == circuit_breaker::state::closed);
  cb.record_failure(t1);
  auto t2 = t1 + seconds(2);
  auto c = cb.admit(t2);
  cb.trial_done(t2, c.trial, false);
  CHECK(cb.current(t2) == circuit_breaker::state::open);
  CHECK(cb.opened_count() == 3);
}

TEST_CASE("a disabled breaker admits everything and never opens") {
  circuit_config cfg;
  cfg.enabled = false;
  cfg.failure_threshold = 1;
  circuit_breaker cb(cfg);
  auto t = steady_clock::time_point{} + hours(1);
  for (int i = 0; i < 10; ++i)
    cb.record_failure(t);
  CHECK(cb.current(t) == circuit_breaker::state::closed);
  auto a = cb.admit(t);
  CHECK(a);
  CHECK(a.trial == 0);
}

} // TEST_SUITE
