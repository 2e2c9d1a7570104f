// The supervisor, in the spirit of OTP's supervisor_SUITE: start and stop
// order, failed starts, restart types, intensity, shutdown specs,
// escalation, failing restarts, the dynamic API, auto shutdown,
// simple_one_for_one at 1000 children. Strategies: test_supervisor_strategies.
#include "test_supervisor_support.hpp"

#include <dspex/supervision/restart_intensity.hpp>

using namespace dspex_sup_test;

namespace {

supervisor_flags one_for_one(int intensity = 1,
                             std::chrono::milliseconds period = 5000ms) {
  return supervisor_flags{}.with_intensity(intensity, period);
}

} // namespace

TEST_SUITE("supervisor") {

// -- pieces ----------------------------------------------------------------------

TEST_CASE("restart intensity counts restarts within the period") {
  manual_clock clk;
  SUBCASE("intensity 0 gives up at the first restart") {
    restart_intensity r{0, 5000ms};
    CHECK_FALSE(r.add(clk.now()));
  }
  SUBCASE("intensity N allows N restarts within the period") {
    restart_intensity r{3, 5000ms};
    CHECK(r.add(clk.now()));
    clk.advance(1000ms);
    CHECK(r.add(clk.now()));
    clk.advance(1000ms);
    CHECK(r.add(clk.now()));
    clk.advance(1000ms);
    CHECK_FALSE(r.add(clk.now())); // 4 within 3 s
  }
  SUBCASE("restarts older than the period are forgotten") {
    restart_intensity r{2, 5000ms};
    CHECK(r.add(clk.now())); // t=0
    clk.advance(3000ms);
    CHECK(r.add(clk.now())); // t=3
    clk.advance(2000ms);
    // t=5: the one at t=0 is exactly `period` old and still counts (OTP keeps
    // restarts with T >= Now - Period).
    CHECK_FALSE(r.add(clk.now()));
    restart_intensity r2{2, 5000ms};
    manual_clock c2;
    CHECK(r2.add(c2.now()));
    c2.advance(3000ms);
    CHECK(r2.add(c2.now()));
    c2.advance(2001ms);
    CHECK(r2.add(c2.now())); // t=0 fell out of the window
    CHECK(r2.recent() == 2);
  }
}

TEST_CASE("exit reasons map to OTP's classes") {
  CHECK(classify(caf::error{}) == exit_class::normal);
  CHECK(classify(caf::make_error(caf::exit_reason::normal)) == exit_class::normal);
  CHECK(classify(caf::make_error(caf::exit_reason::user_shutdown))
        == exit_class::shutdown);
  CHECK(classify(caf::error{static_cast<std::uint8_t>(caf::exit_reason::user_shutdown),
                            caf::atom("exit"), caf::make_message(std::string{"x"})})
        == exit_class::shutdown);
  CHECK(classify(caf::make_error(caf::exit_reason::kill)) == exit_class::killed);
  CHECK(classify(caf::make_error(caf::exit_reason::unhandled_exception))
        == exit_class::crash);
  CHECK(classify(caf::make_error(caf::sec::runtime_error, "boom"))
        == exit_class::crash);
  CHECK(render_reason(caf::make_error(caf::exit_reason::user_shutdown)) == "shutdown");
  CHECK(render_reason(caf::make_error(caf::exit_reason::kill)) == "killed");
  CHECK(render_reason(caf::error{}) == "normal");
  CHECK(describe(make_error(supervision_errc::not_found, "w1"))
        == "not_found: w1");
}

TEST_CASE("flags and specs are validated") {
  auto bad = [](supervisor_flags f, std::vector<child_spec> xs) {
    return is(validate(f, xs), supervision_errc::invalid_spec);
  };
  CHECK_FALSE(validate(supervisor_flags{}, {worker("a"), worker("b")}));
  CHECK(bad(supervisor_flags{}, {worker("a"), worker("a")}));
  CHECK(bad(supervisor_flags{}, {worker("")}));
  CHECK(bad(supervisor_flags{}, {child_spec{"a", nullptr}}));
  CHECK(bad(supervisor_flags{}.with_intensity(-1, 5000ms), {}));
  CHECK(bad(supervisor_flags{}.with_intensity(1, 0ms), {}));
  auto sofo = supervisor_flags{}.with_strategy(strategy::simple_one_for_one);
  CHECK(bad(sofo, {}));
  CHECK(bad(sofo, {worker("a"), worker("b")}));
  CHECK_FALSE(validate(sofo, {worker("a")}));
  CHECK(bad(sofo.with_auto_shutdown(auto_shutdown::any_significant),
            {worker("a").with_restart(restart_type::temporary)}));
  // significant: not with permanent, not with auto_shutdown never
  auto any = supervisor_flags{}.with_auto_shutdown(auto_shutdown::any_significant);
  CHECK(bad(any, {worker("a").with_significant()}));
  CHECK(bad(supervisor_flags{},
            {worker("a").with_restart(restart_type::transient).with_significant()}));
  CHECK_FALSE(validate(any, {worker("a")
                               .with_restart(restart_type::transient)
                               .with_significant()}));
  // shutdown defaults by type, as OTP
  CHECK(shutdown_spec{}.resolve(child_type::worker)
        == shutdown_spec::timeout(5000ms));
  CHECK(shutdown_spec{}.resolve(child_type::supervisor)
        == shutdown_spec::infinity());
}

// -- start and stop ----------------------------------------------------------------

TEST_CASE("children start in order and stop in reverse order") {
  fixture f;
  auto sup = f.start(one_for_one(), {worker("a"), worker("b"), worker("c")});
  CHECK(f.statuses(sup) == "a:running b:running c:running");
  auto counts = count_children(f.sys, sup);
  REQUIRE(counts);
  CHECK(counts->specs == 3);
  CHECK(counts->active == 3);
  CHECK(counts->workers == 3);
  CHECK(counts->supervisors == 0);
  auto reason = f.stop(sup);
  CHECK(classify(reason) == exit_class::shutdown);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, start c, exit c shutdown, exit b shutdown, "
           "exit a shutdown, stop shutdown");
}

TEST_CASE("a failed start during init fails the supervisor's start") {
  fixture f;
  auto ctl = std::make_shared<start_control>();
  ctl->fail_always = true;
  auto sup = start_supervisor(f.sys, one_for_one(),
                              {worker("a"), worker("b"),
                               child_spec{"c", spawn_controlled(ctl)},
                               worker("d")},
                              f.options());
  REQUIRE_FALSE(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(is(sup.error(), supervision_errc::start_failed));
  auto text = describe(sup.error());
  INFO(text);
  CHECK(text.find("child 'c' failed to start") != std::string::npos);
  CHECK(text.find("start refused") != std::string::npos);
  // supervisor_stopped is the supervisor's last event.
  CHECK(f.log->trace("root")
        == "start a, start b, fail c, exit b shutdown, exit a shutdown, "
           "stop shutdown");
  CHECK(ctl->calls == 1);
}

TEST_CASE("a start function that throws is a failed start") {
  fixture f;
  child_spec thrower{"t", [](caf::local_actor*) -> caf::expected<caf::actor> {
                       throw std::runtime_error("no luck");
                     }};
  auto sup = start_supervisor(f.sys, one_for_one(), {worker("a"), thrower},
                              f.options());
  REQUIRE_FALSE(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(describe(sup.error()).find("no luck") != std::string::npos);
  CHECK(f.log->trace("root") == "start a, fail t, exit a shutdown, stop shutdown");
}

TEST_CASE("invalid specs fail the start without starting anything") {
  fixture f;
  auto sup = start_supervisor(f.sys, one_for_one(), {worker("a"), worker("a")},
                              f.options());
  REQUIRE_FALSE(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(is(sup.error(), supervision_errc::invalid_spec));
  CHECK(f.log->trace("root") == "stop shutdown");
}

TEST_CASE("await_ready: a child counts as started only once it answers") {
  fixture f;
  // Answers ready with caf::ok_atom.
  auto ok_child = [](caf::event_based_actor*) -> caf::behavior {
    return {[](ready_atom) { return caf::ok_atom::value; }};
  };
  // Answers ready with an error.
  auto refusing = [](caf::event_based_actor*) -> caf::behavior {
    return {[](ready_atom) -> caf::result<void> {
      return caf::make_error(caf::sec::runtime_error, "init failed");
    }};
  };
  // Never answers (keeps the promise).
  auto silent = [](caf::event_based_actor* self) -> caf::behavior {
    auto kept = std::make_shared<caf::response_promise>();
    return {[self, kept](ready_atom) -> caf::response_promise {
      *kept = self->make_response_promise();
      return *kept;
    }};
  };
  // Exits instead of answering.
  auto quitter = [](caf::event_based_actor* self) -> caf::behavior {
    // (A void handler would answer with an empty message before quitting.)
    return {[self](ready_atom) -> caf::response_promise {
      auto rp = self->make_response_promise();
      self->quit(caf::make_error(caf::sec::runtime_error, "died in init"));
      return rp;
    }};
  };
  auto spec = [](std::string id, auto fn) {
    return child_spec{std::move(id),
                      [fn](caf::local_actor* self) -> caf::expected<caf::actor> {
                        return self->spawn(fn);
                      }}
      .with_ready(10000ms);
  };
  SUBCASE("empty and ok answers") {
    auto sup = f.start(one_for_one(),
                       {worker("a").with_ready(10000ms), spec("b", ok_child)});
    CHECK(f.statuses(sup) == "a:running b:running");
    f.stop(sup);
  }
  SUBCASE("an error answer") {
    auto sup = start_supervisor(f.sys, one_for_one(),
                                {worker("a"), spec("b", refusing)}, f.options());
    REQUIRE_FALSE(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(describe(sup.error()).find("init failed") != std::string::npos);
    CHECK(f.log->trace("root") == "start a, fail b, exit a shutdown, stop shutdown");
  }
  SUBCASE("no answer within the timeout") {
    auto s = spec("b", silent).with_ready(50ms);
    auto sup = start_supervisor(f.sys, one_for_one(), {worker("a"), s},
                                f.options());
    REQUIRE_FALSE(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(describe(sup.error()).find("not ready within 50 ms") != std::string::npos);
    CHECK(f.log->trace("root") == "start a, fail b, exit a shutdown, stop shutdown");
  }
  SUBCASE("the child exits before answering") {
    auto sup = start_supervisor(f.sys, one_for_one(),
                                {worker("a"), spec("b", quitter)}, f.options());
    REQUIRE_FALSE(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(describe(sup.error()).find("died in init") != std::string::npos);
    CHECK(f.log->trace("root") == "start a, fail b, exit a shutdown, stop shutdown");
  }
}

TEST_CASE("a start that returns an invalid actor is OTP's ignore") {
  fixture f;
  auto ignore = [](caf::local_actor*) -> caf::expected<caf::actor> {
    return caf::actor{};
  };
  auto sup = f.start(one_for_one(),
                     {worker("a"), child_spec{"i", ignore},
                      child_spec{"t", ignore}.with_restart(restart_type::temporary)});
  // The permanent spec is kept, not running; the temporary one is dropped.
  CHECK(f.statuses(sup) == "a:running i:undefined");
  f.stop(sup);
}

// -- restart types -------------------------------------------------------------------

TEST_CASE("permanent, transient and temporary children after each kind of exit") {
  struct row {
    restart_type restart;
    const char* how; // crash | killed | normal | shutdown
    bool restarted;
    const char* status_after; // status in which_children, "" if removed
  };
  std::vector<row> rows{
    {restart_type::permanent, "crash", true, "c:running"},
    {restart_type::permanent, "killed", true, "c:running"},
    {restart_type::permanent, "normal", true, "c:running"},
    {restart_type::permanent, "shutdown", true, "c:running"},
    {restart_type::transient, "crash", true, "c:running"},
    {restart_type::transient, "killed", true, "c:running"},
    {restart_type::transient, "normal", false, "c:undefined"},
    {restart_type::transient, "shutdown", false, "c:undefined"},
    {restart_type::temporary, "crash", false, ""},
    {restart_type::temporary, "killed", false, ""},
    {restart_type::temporary, "normal", false, ""},
    {restart_type::temporary, "shutdown", false, ""},
  };
  for (auto& r : rows) {
    CAPTURE(to_string(r.restart));
    CAPTURE(r.how);
    fixture f;
    auto sup = f.start(one_for_one(10), {worker("c").with_restart(r.restart)});
    auto c = f.child(sup, "c");
    std::string how = r.how;
    if (how == "crash")
      caf::anon_send(c, crash_atom::value);
    else if (how == "killed")
      caf::anon_send_exit(c, caf::exit_reason::kill);
    else if (how == "normal")
      caf::anon_send(c, stop_atom::value);
    else
      caf::anon_send(c, shut_atom::value);
    REQUIRE(f.log->wait_for(event_kind::child_exited, "root/c"));
    if (r.restarted)
      REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/c"));
    // The restart decision is made before the supervisor answers this.
    CHECK(f.statuses(sup) == r.status_after);
    f.stop(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    std::string cls = how == "normal" ? "normal" : how;
    std::string expected = "start c, exit c " + cls;
    if (r.restarted)
      expected += ", restart c, exit c shutdown";
    expected += ", stop shutdown";
    CHECK(f.log->trace("root") == expected);
  }
}

// -- intensity ---------------------------------------------------------------------------

TEST_CASE("intensity 0: the first restart stops everything") {
  fixture f;
  auto sup = f.start(one_for_one(0), {worker("a"), worker("b"), worker("c")});
  caf::scoped_actor self{f.sys};
  self->monitor(sup);
  caf::anon_send(f.child(sup, "b"), crash_atom::value);
  auto reason = fixture::await_down(self, sup);
  CHECK(reason == caf::exit_reason::user_shutdown);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, start c, exit b crash, intensity b, "
           "exit c shutdown, exit a shutdown, stop shutdown");
}

TEST_CASE("intensity N within the period, on a manual clock") {
  fixture f;
  auto clk = std::make_shared<manual_clock>();
  auto sup = f.start(one_for_one(3, 5000ms), {worker("a"), worker("b")},
                     f.options("root", clk));
  auto crash_and_wait = [&](std::size_t nth_restart) {
    caf::anon_send(f.child(sup, "a"), crash_atom::value);
    REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/a", nth_restart));
  };
  // 3 restarts within the period are fine...
  crash_and_wait(1);
  clk->advance(1000ms);
  crash_and_wait(2);
  clk->advance(1000ms);
  crash_and_wait(3);
  // ... and once the first ones are older than the period, 3 more are too.
  clk->advance(5001ms);
  crash_and_wait(4);
  crash_and_wait(5);
  crash_and_wait(6);
  CHECK(f.log->count(event_kind::intensity_reached, "root/a") == 0);
  // The 4th within the period is one too many.
  caf::scoped_actor self{f.sys};
  self->monitor(sup);
  caf::anon_send(f.child(sup, "a"), crash_atom::value);
  auto reason = fixture::await_down(self, sup);
  CHECK(reason == caf::exit_reason::user_shutdown);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  auto trace = f.log->trace("root");
  CHECK(trace.find("exit a crash, intensity a, exit b shutdown, stop shutdown")
        != std::string::npos);
  CHECK(f.log->count(event_kind::child_restarted, "root/a") == 6);
}

// -- shutdown specs ------------------------------------------------------------------------

TEST_CASE("shutdown: brutal_kill, timeout, infinity") {
  fixture f;
  auto sup = f.start(
    one_for_one(),
    {worker("inf").with_shutdown(shutdown_spec::infinity()),
     worker("brutal").with_shutdown(shutdown_spec::brutal_kill()),
     worker("polite").with_shutdown(shutdown_spec::timeout(10000ms)),
     child_spec{"stubborn", spawn_stubborn()}.with_shutdown(
       shutdown_spec::timeout(50ms))});
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start inf, start brutal, start polite, start stubborn, "
           "exit stubborn killed, exit polite shutdown, exit brutal killed, "
           "exit inf shutdown, stop shutdown");
}

TEST_CASE("a child that hangs on shutdown is killed and the tree still stops") {
  fixture f;
  auto nested = supervisor_child(
    "sub", one_for_one(),
    {worker("w1"),
     child_spec{"hang", spawn_stubborn()}.with_shutdown(shutdown_spec::timeout(100ms)),
     worker("w2")});
  auto sup = f.start(one_for_one(), {worker("a"), nested, worker("b")});
  auto reason = f.stop(sup);
  CHECK(classify(reason) == exit_class::shutdown);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root/sub")
        == "start w1, start hang, start w2, exit w2 shutdown, exit hang killed, "
           "exit w1 shutdown, stop shutdown");
  CHECK(f.log->trace("root")
        == "start a, start sub, start b, exit b shutdown, exit sub shutdown, "
           "exit a shutdown, stop shutdown");
}

TEST_CASE("terminate_child kills a child that ignores the request") {
  fixture f;
  auto sup = f.start(one_for_one(), {child_spec{"hang", spawn_stubborn()}.with_shutdown(
                                       shutdown_spec::timeout(50ms))});
  CHECK_FALSE(terminate_child(f.sys, sup, "hang"));
  CHECK(f.statuses(sup) == "hang:undefined");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root") == "start hang, exit hang killed, stop shutdown");
}

TEST_CASE("a killed supervisor takes its children down") {
  fixture f;
  auto sup = f.start(one_for_one(), {worker("a"), supervisor_child("sub", one_for_one(), {worker("b")})});
  caf::scoped_actor self{f.sys};
  auto a = f.child(sup, "a");
  auto sub = f.child(sup, "sub");
  auto b = f.child(sub, "b");
  self->monitor(a);
  self->monitor(b);
  self->monitor(sub);
  caf::anon_send_exit(sup, caf::exit_reason::kill);
  fixture::await_down(self, a);
  fixture::await_down(self, sub);
  fixture::await_down(self, b);
}

// -- escalation ----------------------------------------------------------------------------

TEST_CASE("escalation through a nested supervisor") {
  fixture f;
  auto clk = std::make_shared<manual_clock>(); // nobody advances it
  auto sub = supervisor_child("sub", one_for_one(0), {worker("w")});
  auto sup = f.start(one_for_one(1), {sub, worker("x")}, f.options("root", clk));
  caf::scoped_actor self{f.sys};
  self->monitor(sup);
  // w crashes: sub gives up at once (intensity 0), root restarts sub.
  caf::anon_send(f.child(f.child(sup, "sub"), "w"), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/sub"));
  // Again: sub gives up, root's second restart within the period is one too
  // many (intensity 1): root stops x and gives up too.
  caf::anon_send(f.child(f.child(sup, "sub"), "w"), crash_atom::value);
  auto reason = fixture::await_down(self, sup);
  CHECK(reason == caf::exit_reason::user_shutdown);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root/sub", 2));
  CHECK(f.log->trace("root/sub")
        == "start w, exit w crash, intensity w, stop shutdown, "
           "start w, exit w crash, intensity w, stop shutdown");
  CHECK(f.log->trace("root")
        == "start sub, start x, exit sub shutdown, restart sub, "
           "exit sub shutdown, intensity sub, exit x shutdown, stop shutdown");
}

TEST_CASE("a transient nested supervisor that gives up is not restarted") {
  fixture f;
  auto sub = supervisor_child("sub", one_for_one(0), {worker("w")})
               .with_restart(restart_type::transient);
  auto sup = f.start(one_for_one(1), {sub, worker("x")});
  caf::anon_send(f.child(f.child(sup, "sub"), "w"), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_exited, "root/sub"));
  CHECK(f.statuses(sup) == "sub:undefined x:running");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start sub, start x, exit sub shutdown, exit x shutdown, stop shutdown");
}

TEST_CASE("a nested supervisor's failed init fails its parent's start") {
  fixture f;
  auto ctl = std::make_shared<start_control>();
  ctl->fail_always = true;
  auto sub = supervisor_child("sub", one_for_one(),
                              {worker("w1"), child_spec{"w2", spawn_controlled(ctl)}});
  auto sup = start_supervisor(f.sys, one_for_one(), {worker("a"), sub},
                              f.options());
  REQUIRE_FALSE(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  auto text = describe(sup.error());
  INFO(text);
  CHECK(text.find("child 'sub' failed to start") != std::string::npos);
  CHECK(text.find("child 'w2' failed to start") != std::string::npos);
  CHECK(text.find("start refused") != std::string::npos);
  CHECK(f.log->trace("root") == "start a, fail sub, exit a shutdown, stop shutdown");
}

// -- failing restarts --------------------------------------------------------------------

TEST_CASE("a restart that keeps failing counts towards intensity and is retried") {
  fixture f;
  auto ctl = std::make_shared<start_control>();
  auto clk = std::make_shared<manual_clock>();
  SUBCASE("until the intensity is reached") {
    auto sup = f.start(one_for_one(3), {child_spec{"a", spawn_controlled(ctl)}, worker("b")},
                       f.options("root", clk));
    ctl->fail_always = true;
    caf::anon_send(f.child(sup, "a"), crash_atom::value);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(f.log->trace("root")
          == "start a, start b, exit a crash, fail a, fail a, fail a, "
             "intensity a, exit b shutdown, stop shutdown");
    CHECK(ctl->calls == 4); // the first start and 3 restarts
  }
  SUBCASE("until it succeeds") {
    auto sup = f.start(one_for_one(3), {child_spec{"a", spawn_controlled(ctl)}, worker("b")},
                       f.options("root", clk));
    ctl->fail_next = 2;
    caf::anon_send(f.child(sup, "a"), crash_atom::value);
    REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/a"));
    CHECK(f.statuses(sup) == "a:running b:running");
    f.stop(sup);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(f.log->trace("root")
          == "start a, start b, exit a crash, fail a, fail a, restart a, "
             "exit b shutdown, exit a shutdown, stop shutdown");
  }
  SUBCASE("a shutdown request comes in between retries") {
    auto sup = f.start(one_for_one(1000000), {child_spec{"a", spawn_controlled(ctl)}},
                       f.options("root", clk));
    ctl->fail_always = true;
    caf::anon_send(f.child(sup, "a"), crash_atom::value);
    REQUIRE(f.log->wait_for(event_kind::child_start_failed, "root/a", 3));
    CHECK(f.statuses(sup) == "a:restarting");
    auto reason = f.stop(sup);
    CHECK(classify(reason) == exit_class::shutdown);
    CHECK(f.log->count(event_kind::intensity_reached, "root/a") == 0);
  }
}

// -- the dynamic API ---------------------------------------------------------------------

TEST_CASE("start_child, terminate_child, restart_child, delete_child") {
  fixture f;
  auto sup = f.start(one_for_one(), {worker("a")});
  // start_child appends
  auto b = start_child(f.sys, sup, worker("b"));
  REQUIRE(b);
  CHECK(*b);
  CHECK(f.statuses(sup) == "a:running b:running");
  // duplicates
  auto dup = start_child(f.sys, sup, worker("b"));
  CHECK(is(dup.error(), supervision_errc::already_started));
  // a failing start_child leaves nothing behind
  auto ctl = std::make_shared<start_control>();
  ctl->fail_always = true;
  auto bad = start_child(f.sys, sup, child_spec{"x", spawn_controlled(ctl)});
  CHECK(is(bad.error(), supervision_errc::start_failed));
  auto invalid = start_child(f.sys, sup, child_spec{"", spawn_worker()});
  CHECK(is(invalid.error(), supervision_errc::invalid_spec));
  CHECK(is(start_child(f.sys, sup, caf::make_message(1)).error(),
           supervision_errc::simple_one_for_one));
  // terminate_child keeps the spec
  CHECK_FALSE(terminate_child(f.sys, sup, "b"));
  CHECK(f.statuses(sup) == "a:running b:undefined");
  CHECK(is(start_child(f.sys, sup, worker("b")).error(),
           supervision_errc::already_present));
  CHECK(is(terminate_child(f.sys, sup, "nope"), supervision_errc::not_found));
  // restart_child
  CHECK(is(restart_child(f.sys, sup, "a").error(), supervision_errc::running));
  CHECK(is(restart_child(f.sys, sup, "nope").error(), supervision_errc::not_found));
  auto b2 = restart_child(f.sys, sup, "b");
  REQUIRE(b2);
  CHECK(*b2 != *b);
  CHECK(f.statuses(sup) == "a:running b:running");
  // delete_child
  CHECK(is(delete_child(f.sys, sup, "b"), supervision_errc::running));
  CHECK_FALSE(terminate_child(f.sys, sup, *b2)); // by handle
  CHECK_FALSE(delete_child(f.sys, sup, "b"));
  CHECK(is(delete_child(f.sys, sup, "b"), supervision_errc::not_found));
  CHECK(f.statuses(sup) == "a:running");
  // a terminated temporary child is gone
  REQUIRE(start_child(f.sys, sup, worker("t").with_restart(restart_type::temporary)));
  CHECK_FALSE(terminate_child(f.sys, sup, "t"));
  CHECK(f.statuses(sup) == "a:running");
  // terminate_child never triggers a restart
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "start a, start b, fail x, exit b shutdown, start b, exit b shutdown, "
           "start t, exit t shutdown, exit a shutdown, stop shutdown");
}

TEST_CASE("which_children and count_children with a nested supervisor") {
  fixture f;
  auto sup = f.start(one_for_one(),
                     {worker("a"),
                      supervisor_child("sub", one_for_one(), {worker("w1"), worker("w2")})});
  auto xs = f.children(sup);
  REQUIRE(xs.size() == 2);
  CHECK(xs[0].id == "a");
  CHECK(xs[0].type == child_type::worker);
  CHECK(xs[1].id == "sub");
  CHECK(xs[1].type == child_type::supervisor);
  CHECK(xs[1].status == child_status::running);
  auto counts = count_children(f.sys, sup);
  REQUIRE(counts);
  CHECK(counts->specs == 2);
  CHECK(counts->active == 2);
  CHECK(counts->supervisors == 1);
  CHECK(counts->workers == 1);
  CHECK(f.statuses(xs[1].handle) == "w1:running w2:running");
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root/sub")
        == "start w1, start w2, exit w2 shutdown, exit w1 shutdown, stop shutdown");
}

TEST_CASE("subscribe adds an event subscriber at run time") {
  fixture f;
  supervisor_options opts; // no subscribers at start
  auto sup = f.start(one_for_one(), {worker("a")}, opts);
  CHECK_FALSE(subscribe(f.sys, sup, f.events));
  caf::anon_send(f.child(sup, "a"), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/a"));
  f.stop(sup);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  CHECK(f.log->trace("root")
        == "exit a crash, restart a, exit a shutdown, stop shutdown");
}

// -- auto shutdown -------------------------------------------------------------------------

TEST_CASE("auto_shutdown any_significant and all_significant") {
  fixture f;
  auto sig = [](std::string id) {
    return worker(std::move(id)).with_restart(restart_type::transient).with_significant();
  };
  SUBCASE("any_significant: one significant child ending shuts down") {
    auto sup = f.start(one_for_one().with_auto_shutdown(auto_shutdown::any_significant),
                       {worker("a"), sig("s1"), sig("s2")});
    caf::anon_send(f.child(sup, "s1"), stop_atom::value);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(f.log->trace("root")
          == "start a, start s1, start s2, exit s1 normal, exit s2 shutdown, "
             "exit a shutdown, stop shutdown");
  }
  SUBCASE("all_significant: only the last one does") {
    auto sup = f.start(one_for_one().with_auto_shutdown(auto_shutdown::all_significant),
                       {worker("a"), sig("s1"), sig("s2")});
    caf::anon_send(f.child(sup, "s1"), stop_atom::value);
    REQUIRE(f.log->wait_for(event_kind::child_exited, "root/s1"));
    CHECK(f.statuses(sup) == "a:running s1:undefined s2:running");
    // A crash of a transient significant child restarts it: no shutdown.
    caf::anon_send(f.child(sup, "s2"), crash_atom::value);
    REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/s2"));
    caf::anon_send(f.child(sup, "s2"), shut_atom::value);
    REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
    CHECK(f.log->trace("root")
          == "start a, start s1, start s2, exit s1 normal, exit s2 crash, "
             "restart s2, exit s2 shutdown, exit a shutdown, stop shutdown");
  }
  SUBCASE("terminate_child of a significant child does not shut down") {
    auto sup = f.start(one_for_one().with_auto_shutdown(auto_shutdown::any_significant),
                       {worker("a"), sig("s1")});
    CHECK_FALSE(terminate_child(f.sys, sup, "s1"));
    CHECK(f.statuses(sup) == "a:running s1:undefined");
    f.stop(sup);
  }
  SUBCASE("significant children need auto_shutdown") {
    auto sup = start_supervisor(f.sys, one_for_one(), {sig("s1")}, f.options());
    CHECK(is(sup.error(), supervision_errc::invalid_spec));
    auto ok = f.start(one_for_one(), {worker("a")});
    CHECK(is(start_child(f.sys, ok, sig("s1")).error(), supervision_errc::invalid_spec));
    f.stop(ok);
  }
}

// -- simple_one_for_one ----------------------------------------------------------------------

TEST_CASE("simple_one_for_one with 1000 dynamic children") {
  fixture f;
  constexpr int n = 1000;
  child_spec tmpl{"w", nullptr};
  tmpl.start_with_args = [](caf::local_actor* self,
                            const caf::message& args) -> caf::expected<caf::actor> {
    if (!args.match_elements<int>())
      return caf::make_error(caf::sec::invalid_argument, "want one int");
    return self->spawn(test_worker, args.get_as<int>(0));
  };
  tmpl.shutdown = shutdown_spec::timeout(10000ms);
  auto sup = f.start(supervisor_flags{}
                       .with_strategy(strategy::simple_one_for_one)
                       .with_intensity(10, 5000ms),
                     {tmpl});
  CHECK(f.children(sup).empty());
  caf::scoped_actor self{f.sys};
  std::vector<caf::actor> kids;
  for (int i = 0; i < n; ++i) {
    auto kid = start_child(self, sup, caf::make_message(i));
    REQUIRE(kid);
    kids.push_back(*kid);
  }
  auto counts = count_children(f.sys, sup);
  REQUIRE(counts);
  CHECK(counts->specs == 1);
  CHECK(counts->active == n);
  CHECK(counts->workers == n);
  auto xs = f.children(sup);
  REQUIRE(xs.size() == static_cast<std::size_t>(n));
  CHECK(xs.front().id == "w#1");
  CHECK(xs.back().id == "w#1000");
  // Bad arguments fail the start and leave nothing behind.
  CHECK(is(start_child(self, sup, caf::make_message(std::string{"x"})).error(),
           supervision_errc::start_failed));
  // Spec-based API calls do not apply.
  CHECK(is(start_child(self, sup, worker("x")).error(),
           supervision_errc::simple_one_for_one));
  CHECK(is(restart_child(self, sup, "w#1").error(),
           supervision_errc::simple_one_for_one));
  CHECK(is(delete_child(self, sup, "w#1"), supervision_errc::simple_one_for_one));
  // Terminate 10 by handle: they are removed.
  for (int i = 0; i < 10; ++i)
    CHECK_FALSE(terminate_child(self, sup, kids[i]));
  CHECK(count_children(f.sys, sup)->active == n - 10);
  // A crashed child is restarted with its arguments.
  caf::anon_send(kids[500], crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::child_restarted, "root/w#501"));
  caf::actor again;
  for (auto& x : f.children(sup))
    if (x.id == "w#501")
      again = x.handle;
  REQUIRE(again);
  CHECK(again != kids[500]);
  int answer = -1;
  self->request(again, caf::infinite, which_atom::value)
    .receive([&](int x) { answer = x; }, [](caf::error&) {});
  CHECK(answer == 500);
  CHECK(count_children(f.sys, sup)->active == n - 10);
  // Stop them all.
  auto reason = f.stop(sup);
  CHECK(classify(reason) == exit_class::shutdown);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "root"));
  auto events = f.log->snapshot();
  std::size_t started = 0, exited = 0, shut = 0;
  for (auto& ev : events) {
    if (ev.kind == event_kind::child_started)
      ++started;
    if (ev.kind == event_kind::child_exited) {
      ++exited;
      if (ev.reason_class == exit_class::shutdown)
        ++shut;
    }
  }
  CHECK(started == static_cast<std::size_t>(n));
  // 10 terminated + 1 crash + the n - 10 still running at the end
  CHECK(exited == static_cast<std::size_t>(n + 1));
  CHECK(shut == static_cast<std::size_t>(n));
  CHECK(events.back().kind == event_kind::supervisor_stopped);
}

// -- no global state ------------------------------------------------------------------------

TEST_CASE("supervisors with the same child ids live side by side") {
  fixture f;
  auto s1 = f.start(one_for_one(0), {worker("a"), worker("b")}, f.options("one"));
  auto s2 = f.start(one_for_one(0), {worker("a"), worker("b")}, f.options("two"));
  caf::anon_send(f.child(s1, "a"), crash_atom::value);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "one"));
  CHECK(f.statuses(s2) == "a:running b:running");
  f.stop(s2);
  REQUIRE(f.log->wait_for(event_kind::supervisor_stopped, "two"));
  CHECK(f.log->trace("two")
        == "start a, start b, exit b shutdown, exit a shutdown, stop shutdown");
}

} // TEST_SUITE
