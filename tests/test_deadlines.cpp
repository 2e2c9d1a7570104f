// deadline_book: many deadlines behind one timer. Equal timeouts arm one
// timer per span, an earlier deadline arms its own, a fired timer yields
// exactly what is due and asks for the next one only when none is on its
// way for it. No clock is read: every time is given.
#include <doctest/doctest.h>

#include <dspex/actors/pool/detail/deadlines.hpp>

using namespace dspex;
using namespace std::chrono_literals;

TEST_SUITE("deadlines") {

TEST_CASE("equal timeouts share one timer, whatever the number of requests") {
  deadline_book b;
  const auto t0 = deadline_book::clock::time_point{} + 1h;
  auto first = b.add(t0 + 30s, 1);
  REQUIRE(first);
  CHECK(*first == t0 + 30s);
  for (std::uint64_t k = 2; k <= 1000; ++k)
    CHECK_FALSE(b.add(t0 + 30s + std::chrono::milliseconds(k), k));
  CHECK(b.timers() == 1);
  // Most answer in time.
  for (std::uint64_t k = 1; k <= 999; ++k)
    b.remove(k == 1 ? t0 + 30s : t0 + 30s + std::chrono::milliseconds(k), k);
  CHECK(b.size() == 1);
  // The timer fires: nothing is due yet; it asks for the one deadline left.
  CHECK(b.fire(t0 + 30s, t0 + 30s).empty());
  auto next = b.next();
  REQUIRE(next);
  CHECK(*next == t0 + 30s + 1000ms);
  CHECK(b.timers() == 1);
  auto due = b.fire(*next, *next);
  REQUIRE(due.size() == 1);
  CHECK(due[0] == 1000);
  CHECK_FALSE(b.next());
  CHECK(b.timers() == 0);
}

TEST_CASE("an earlier deadline arms its own timer; a later timer then finds nothing new") {
  deadline_book b;
  const auto t0 = deadline_book::clock::time_point{} + 1h;
  REQUIRE(b.add(t0 + 10s, 1));
  auto early = b.add(t0 + 1s, 2);
  REQUIRE(early);
  CHECK(*early == t0 + 1s);
  CHECK(b.timers() == 2);
  auto due = b.fire(t0 + 1s, t0 + 1s);
  REQUIRE(due.size() == 1);
  CHECK(due[0] == 2);
  CHECK_FALSE(b.next());  // the 10 s timer is still on its way
  due = b.fire(t0 + 10s, t0 + 10s + 5ms);
  REQUIRE(due.size() == 1);
  CHECK(due[0] == 1);
  CHECK(b.size() == 0);
  CHECK(b.timers() == 0);
}

TEST_CASE("a timer yields everything due by now, earliest first, and nothing later") {
  deadline_book b;
  const auto t0 = deadline_book::clock::time_point{} + 1h;
  REQUIRE(b.add(t0 + 1s, 7));
  b.add(t0 + 3s, 9);
  b.add(t0 + 2s, 8);
  b.add(t0 + 5s, 10);
  auto due = b.fire(t0 + 1s, t0 + 3s);  // the clock thread ran late
  CHECK(due == std::vector<std::uint64_t>{7, 8, 9});
  auto next = b.next();
  REQUIRE(next);
  CHECK(*next == t0 + 5s);
  // clear() forgets the deadlines; the timer on its way then finds nothing.
  b.clear();
  CHECK(b.fire(*next, *next).empty());
  CHECK_FALSE(b.next());
}

TEST_CASE("the timer message's time survives the round trip through nanoseconds") {
  auto t = deadline_book::clock::now() + 1234567ns;
  CHECK(deadline_book::from_ns(deadline_book::to_ns(t)) == t);
}

} // TEST_SUITE
