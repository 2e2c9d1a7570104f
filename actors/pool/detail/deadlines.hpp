// Deadlines of many requests behind one timer. CAF 0.17 cannot cancel a
// delayed_send: a timer per request stays in the clock thread (and holds its
// message) for its whole span even when the request answered at once, and
// arming it wakes the clock thread. Here an actor keeps its deadlines in
// order and arms a timer only when a new deadline is earlier than every
// timer already on its way; when one fires it takes what is due and arms
// the next one, if none is on its way for it. With equal timeouts that is
// one timer per timeout span, whatever the request rate.
//
// The timer message carries the time it was armed for (at_ns), so the book
// knows which of its timers went off.
#pragma once

#include <dspex/actors/node/messages.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <utility>
#include <vector>

namespace dspex {

class deadline_book {
public:
  using clock = std::chrono::steady_clock;

  /// `key` is due at `at`. Returns the time to arm a timer for, when no
  /// timer on its way fires at or before `at`.
  std::optional<clock::time_point> add(clock::time_point at, std::uint64_t key);

  /// `key` (due at `at`) was answered in time.
  void remove(clock::time_point at, std::uint64_t key);

  /// Forgets every deadline (the timers on their way then find nothing).
  void clear() { due_.clear(); }

  /// The timer armed for `fired` went off at `now`: the keys due by then,
  /// removed, earliest first.
  std::vector<std::uint64_t> fire(clock::time_point fired, clock::time_point now);

  /// After fire(): the time to arm a timer for, when the earliest deadline
  /// left has none on its way.
  std::optional<clock::time_point> next();

  std::size_t size() const { return due_.size(); }
  std::size_t timers() const { return armed_.size(); }

  static std::int64_t to_ns(clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }
  /// How long from now until `at`; zero when it passed.
  static clock::duration until(clock::time_point at) {
    auto delay = at - clock::now();
    return delay < clock::duration::zero() ? clock::duration::zero() : delay;
  }
  static clock::time_point from_ns(std::int64_t ns) {
    return clock::time_point(std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds(ns)));
  }

private:
  std::set<std::pair<clock::time_point, std::uint64_t>> due_;
  std::multiset<clock::time_point> armed_;
};

/// Arms the actor's timer for `at`, when deadline_book asked for one: the
/// message (deadline_atom, at_ns) reaches `self` at `at`.
template <class Self>
void arm_deadline(Self* self, std::optional<deadline_book::clock::time_point> at) {
  if (!at)
    return;
  self->delayed_send(self, deadline_book::until(*at), deadline_atom::value, deadline_book::to_ns(*at));
}

} // namespace dspex
