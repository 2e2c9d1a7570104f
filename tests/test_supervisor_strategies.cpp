// Restart strategies: the exact order of stops and starts, read from the
// event stream (OTP supervisor_SUITE's one_for_one, one_for_all,
// rest_for_one and simple_one_for_one groups).
#include "test_supervisor_support.hpp"

using namespace dspex_sup_test;

namespace {

supervisor_flags flags_for(strategy s, int intensity = 10) {
  return supervisor_flags{}.with_strategy(s).with_intensity(intensity, 5000ms);
}

/// Crashes child `id` of `sup` and waits until it was restarted
/// (`restarts` restarts of it in total so far).
void crash(fixture& f, const caf::actor& sup, const std::string& id,
           std::size_t restarts = 1) {
  caf::anon_send(f.child(sup, id), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/" + id, restarts));
}

} // namespace

TEST_SUITE("supervisor strategies") {

TEST_CASE("one_for_one restarts only the child that exited") {
  fixture f;
  auto sup = f.start(flags_for(strategy::one_for_one),
                     {worker("a"), worker("b"), worker("c")});
  crash(f, sup, "b");
  crash(f, sup, "a");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, start c, "
           "exit b crash, restart b, "
           "exit a crash, restart a, "
           "exit c shutdown, exit b shutdown, exit a shutdown, stop shutdown");
}

TEST_CASE("one_for_all stops the others in reverse order, then starts all in order") {
  fixture f;
  auto sup = f.start(flags_for(strategy::one_for_all),
                     {worker("a"), worker("b"), worker("c"), worker("d")});
  auto a = f.child(sup, "a");
  crash(f, sup, "b");
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/d"));
  CHECK(f.child(sup, "a") != a);
  CHECK(f.statuses(sup) == "a:running b:running c:running d:running");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, start c, start d, "
           "exit b crash, exit d shutdown, exit c shutdown, exit a shutdown, "
           "restart a, restart b, restart c, restart d, "
           "exit d shutdown, exit c shutdown, exit b shutdown, exit a shutdown, "
           "stop shutdown");
}

TEST_CASE("rest_for_one restarts the child and those started after it") {
  fixture f;
  auto sup = f.start(flags_for(strategy::rest_for_one),
                     {worker("a"), worker("b"), worker("c"), worker("d")});
  auto a = f.child(sup, "a");
  crash(f, sup, "b");
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/d"));
  CHECK(f.child(sup, "a") == a);
  crash(f, sup, "d", 2);
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, start c, start d, "
           "exit b crash, exit d shutdown, exit c shutdown, "
           "restart b, restart c, restart d, "
           "exit d crash, restart d, "
           "exit d shutdown, exit c shutdown, exit b shutdown, exit a shutdown, "
           "stop shutdown");
}

TEST_CASE("temporary siblings are dropped, not restarted") {
  fixture f;
  auto temp = [](std::string id) {
    return worker(std::move(id)).with_restart(restart_type::temporary);
  };
  SUBCASE("one_for_all") {
    auto sup = f.start(flags_for(strategy::one_for_all),
                       {worker("a"), temp("t"), worker("c")});
    crash(f, sup, "a");
    REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/c"));
    CHECK(f.statuses(sup) == "a:running c:running");
    f.stop(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(f.log->trace("root")
          == "start a, start t, start c, "
             "exit a crash, exit c shutdown, exit t shutdown, "
             "restart a, restart c, "
             "exit c shutdown, exit a shutdown, stop shutdown");
  }
  SUBCASE("rest_for_one") {
    auto sup = f.start(flags_for(strategy::rest_for_one),
                       {worker("a"), worker("b"), temp("t"), worker("c")});
    crash(f, sup, "b");
    REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/c"));
    CHECK(f.statuses(sup) == "a:running b:running c:running");
    f.stop(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(f.log->trace("root")
          == "start a, start b, start t, start c, "
             "exit b crash, exit c shutdown, exit t shutdown, "
             "restart b, restart c, "
             "exit c shutdown, exit b shutdown, exit a shutdown, stop shutdown");
  }
  SUBCASE("a temporary child's own exit does not touch its siblings") {
    auto sup = f.start(flags_for(strategy::one_for_all),
                       {worker("a"), temp("t"), worker("c")});
    caf::anon_send(f.child(sup, "t"), crash_atom::value);
    REQUIRE(f.log->wait_for(event_kind::child_exited, "root/t"));
    CHECK(f.statuses(sup) == "a:running c:running");
    f.stop(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(f.log->trace("root")
          == "start a, start t, start c, exit t crash, "
             "exit c shutdown, exit a shutdown, stop shutdown");
  }
}

TEST_CASE("a transient child's normal exit does not touch its siblings") {
  fixture f;
  auto sup = f.start(flags_for(strategy::one_for_all),
                     {worker("a"), worker("b").with_restart(restart_type::transient),
                      worker("c")});
  caf::anon_send(f.child(sup, "b"), stop_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_exited, "root/b"));
  CHECK(f.statuses(sup) == "a:running b:undefined c:running");
  // As in OTP, a later one_for_all restart starts every non-temporary spec
  // again, b included.
  crash(f, sup, "a");
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/c"));
  CHECK(f.statuses(sup) == "a:running b:running c:running");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, start c, exit b normal, "
           "exit a crash, exit c shutdown, restart a, restart b, restart c, "
           "exit c shutdown, exit b shutdown, exit a shutdown, stop shutdown");
}

TEST_CASE("one_for_all: a sibling whose restart fails is retried with the group") {
  fixture f;
  auto ctl = std::make_shared<start_control>();
  auto sup = f.start(flags_for(strategy::one_for_all, 5),
                     {worker("a"), child_spec{"b", spawn_controlled(ctl)}, worker("c")});
  ctl->fail_next = 1;
  caf::anon_send(f.child(sup, "a"), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/c"));
  CHECK(f.statuses(sup) == "a:running b:running c:running");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  // First round: a restarts, b fails, c is not reached. The retry (a second
  // restart within the intensity) stops a again and starts all three.
  CHECK(f.log->trace("root")
        == "start a, start b, start c, "
           "exit a crash, exit c shutdown, exit b shutdown, "
           "restart a, fail b, "
           "exit a shutdown, restart a, restart b, restart c, "
           "exit c shutdown, exit b shutdown, exit a shutdown, stop shutdown");
}

TEST_CASE("rest_for_one: a failing restart is retried from the failed child on") {
  fixture f;
  auto ctl = std::make_shared<start_control>();
  auto sup = f.start(flags_for(strategy::rest_for_one, 5),
                     {worker("a"), worker("b"), child_spec{"c", spawn_controlled(ctl)},
                      worker("d")});
  ctl->fail_next = 2;
  caf::anon_send(f.child(sup, "b"), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/d"));
  CHECK(f.statuses(sup) == "a:running b:running c:running d:running");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, start c, start d, "
           "exit b crash, exit d shutdown, exit c shutdown, "
           "restart b, fail c, fail c, restart c, restart d, "
           "exit d shutdown, exit c shutdown, exit b shutdown, exit a shutdown, "
           "stop shutdown");
}

TEST_CASE("simple_one_for_one restarts only the dynamic child that exited") {
  fixture f;
  child_spec tmpl{"w", nullptr};
  tmpl.start_with_args = [](caf::local_actor* self,
                            const caf::message& args) -> caf::expected<caf::actor> {
    return self->spawn(test_worker, args.get_as<int>(0));
  };
  auto sup = f.start(flags_for(strategy::simple_one_for_one), {tmpl});
  for (int i = 1; i <= 3; ++i)
    REQUIRE(start_child(f.sys, sup, caf::make_message(i)));
  auto before = f.children(sup);
  caf::anon_send(f.child(sup, "w#2"), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/w#2"));
  auto after = f.children(sup);
  REQUIRE(after.size() == 3);
  CHECK(after[0].handle == before[0].handle);
  CHECK(after[1].handle != before[1].handle);
  CHECK(after[2].handle == before[2].handle);
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->count(event_kind::child_exited, "root/w#1") == 1);
  CHECK(f.log->count(event_kind::child_exited, "root/w#2") == 2);
  CHECK(f.log->count(event_kind::child_exited, "root/w#3") == 1);
}

TEST_CASE("simple_one_for_one: a dynamic child not restarted is removed") {
  fixture f;
  child_spec tmpl{"w", spawn_worker()};
  tmpl.restart = restart_type::transient;
  auto sup = f.start(flags_for(strategy::simple_one_for_one), {tmpl});
  auto w1 = start_child(f.sys, sup, caf::message{});
  auto w2 = start_child(f.sys, sup, caf::message{});
  REQUIRE(w1);
  REQUIRE(w2);
  caf::anon_send(*w1, stop_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_exited, "root/w#1"));
  CHECK(f.statuses(sup) == "w#2:running");
  caf::anon_send(*w2, crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/w#2"));
  CHECK(f.statuses(sup) == "w#2:running");
  f.stop(sup);
}

} // TEST_SUITE
