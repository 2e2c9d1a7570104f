// The worker actor against real Python processes: init handshake, requests,
// timeouts, protocol errors, process death in every shape, graceful stop.
#include <doctest/doctest.h>

#include "support/actor_fixture.hpp"
#include "support/scratch_dir.hpp"
#include "support/wait.hpp"

#include <dspex/actors/pool/detail/inflight_table.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/bridge/python_process.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <fstream>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;

namespace {

bool pid_alive(pid_t pid) {
  // A zombie still answers kill(0); the worker reaps, so this turns false.
  return pid > 0 && ::kill(pid, 0) == 0;
}

} // namespace

TEST_SUITE("worker") {

TEST_CASE("the port adds only while the worker accepts, and never after take_all") {
  inflight_table t;
  auto entry = [] {
    inflight_request r;
    r.pooled = true;
    r.tag = 7;
    r.deadline = inflight_table::clock::now() + std::chrono::seconds(1);
    return r;
  };
  std::optional<inflight_table::clock::time_point> arm;
  auto r = entry();
  CHECK_FALSE(t.add_if_accepting(t.next_id(), r, false, arm));  // a worker starts refusing
  CHECK(r.tag == 7);                                              // untouched
  t.set_accepting(true);
  auto id = t.next_id();
  CHECK(t.add_if_accepting(id, r, true, arm));
  CHECK(arm.has_value());  // the first deadline asks for a timer
  auto c = t.snapshot();
  CHECK(c.inflight == 1);
  CHECK(c.port_sends == 1);
  CHECK(c.port_session_sends == 1);
  CHECK(t.take_all().size() == 1);
  t.set_accepting(true);  // too late: whoever failed them is going
  auto again = entry();
  CHECK_FALSE(t.add_if_accepting(t.next_id(), again, false, arm));
  CHECK(t.snapshot().inflight == 0);
  CHECK(t.next_id() > id);
}

TEST_CASE_FIXTURE(actor_fixture, "init handshake, ping and stats") {
  auto w = spawn(test_worker_config("alpha"));
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "ping");
  REQUIRE(r);
  CHECK((*r)["status"] == "ok");
  CHECK((*r)["worker_id"] == "alpha");
  CHECK((*r)["pid"].get<int>() > 0);
  auto s = stats(w);
  CHECK(s["id"] == "alpha");
  CHECK(s["os_pid"] == (*r)["pid"]);
  CHECK(s["requests"] == 1);
  CHECK(s["health"] == "healthy");
  CHECK(s["state"] == "ready");
}

TEST_CASE_FIXTURE(actor_fixture, "ordinary replies are answered on the io thread, each exactly once") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  for (int i = 0; i < 20; ++i)
    REQUIRE(exec(w, "echo", json{{"i", i}}));
  REQUIRE_FALSE(exec(w, "no_such_command"));  // a Python exception is an answer too
  auto s = stats(w);
  CHECK(s["requests"] == 21);
  CHECK(s["errors"] == 1);
  // Not the init ping: the actor answers that one itself.
  CHECK(s["direct_replies"] == 21);
  CHECK(s["inflight"] == 0);
  CHECK(s["state"] == "ready");
}

TEST_CASE_FIXTURE(actor_fixture, "a reply racing its deadline answers its caller once: a reply or a timeout") {
  // The io thread (reply) and the actor (deadline) both reach for the same
  // request: whoever takes it answers, the other finds nothing. A late reply
  // within the grace is discarded, so the worker stays up throughout.
  auto c = test_worker_config();
  c.timeout_grace = 5s;
  auto w = spawn(c);
  REQUIRE_FALSE(await_ready(w));
  const int n = 30;
  int ok = 0, timed_out = 0;
  for (int i = 0; i < n; ++i) {
    auto r = exec(w, "fault_sleep", json{{"seconds", 0.02}}, 20ms);
    if (r)
      ++ok;
    else if (is(r.error(), errc::command_timeout))
      ++timed_out;
    else
      FAIL("unexpected error: " << describe(r.error()));
  }
  CHECK(ok + timed_out == n);
  // Whatever was held in a grace has been answered by now; the counts hold
  // every request exactly once.
  REQUIRE(wait_until([&] { auto s = stats(w); return s["inflight"] == 0 && s["late"] == 0; }, 10s));
  auto s = stats(w);
  CHECK(s["requests"].get<int>() == ok);
  CHECK(s["timeouts"].get<int>() == timed_out);
  CHECK(s["health"] != "unhealthy");
  CHECK(exec(w, "ping"));
}

TEST_CASE_FIXTURE(actor_fixture, "1 MiB payloads both ways") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  std::string big(1 << 20, 'q');
  auto r = exec(w, "echo", json{{"payload", big}});
  REQUIRE(r);
  CHECK((*r)["payload"].get<std::string>() == big);
}

TEST_CASE_FIXTURE(actor_fixture, "a Python exception is a python_error with type, message and traceback") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "execute_program", json{{"program_id", "nope"}, {"inputs", json::object()}});
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::python_error));
  auto pe = python_error_of(r.error());
  REQUIRE(pe);
  CHECK_FALSE(pe->type.empty());
  CHECK_FALSE(pe->message.empty());
  CHECK(pe->traceback.find("Traceback") != std::string::npos);
  // The worker is fine afterwards.
  CHECK(exec(w, "ping"));
  auto u = exec(w, "no_such_command");
  REQUIRE_FALSE(u);
  CHECK(python_error_of(u.error())->message.find("no_such_command") != std::string::npos);
}

TEST_CASE_FIXTURE(actor_fixture, "user print() does not corrupt the stream") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "fault_print", json{{"text", "\x00\x00\x00\x05hello I am not a frame"}});
  CHECK(r);
  CHECK(exec(w, "ping"));
}

TEST_CASE_FIXTURE(actor_fixture, "a request timeout fails the caller and replaces the worker") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "fault_sleep", json{{"seconds", 30}}, 200ms);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::command_timeout));
  auto reason = await_down(w);
  CHECK(is(reason, errc::command_timeout));
}

TEST_CASE_FIXTURE(actor_fixture, "garbage from the worker is a protocol error and the worker goes") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "fault_garbage", json{{"bytes", 64}});
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::protocol_error));
  CHECK(is(await_down(w), errc::protocol_error));
}

TEST_CASE_FIXTURE(actor_fixture, "an oversized frame from the worker is a protocol error") {
  auto c = test_worker_config();
  c.max_frame_bytes = 1 << 20;
  auto w = spawn(c);
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "fault_oversized", json{{"length", 4294967295u}});
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::protocol_error));
  CHECK(detail_of(r.error()).find("frame_too_large") != std::string::npos);
  CHECK(is(await_down(w), errc::protocol_error));
}

TEST_CASE_FIXTURE(actor_fixture, "a request with a string that is not UTF-8 is refused; the worker stays") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  auto pid = stats(w)["os_pid"].get<pid_t>();
  for (auto args : {json{{"payload", "ok \xC3\x28"}}, json{{"k\xFF", 1}}, json{{"list", {1, "\xED\xA0\x80"}}}}) {
    auto r = exec(w, "echo", args);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_request));
    CHECK(detail_of(r.error()).find("UTF-8") != std::string::npos);
  }
  auto ok = exec(w, "echo", json{{"payload", "caf\xC3\xA9"}});
  REQUIRE(ok);
  CHECK((*ok)["payload"] == "caf\xC3\xA9");
  CHECK(stats(w)["os_pid"].get<pid_t>() == pid);
}

TEST_CASE_FIXTURE(actor_fixture, "the worker dies in the middle of a reply") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  auto r = exec(w, "fault_partial");
  REQUIRE_FALSE(r);
  // The truncated frame or the death is seen first; either way it is classified.
  CHECK((is(r.error(), errc::protocol_error) || is(r.error(), errc::worker_crashed)));
  auto reason = await_down(w);
  CHECK((is(reason, errc::protocol_error) || is(reason, errc::process_exited)));
}

TEST_CASE_FIXTURE(actor_fixture, "process death: the in-flight caller hears at once, the reason names it") {
  SUBCASE("SIGKILL while serving") {
    auto w = spawn(test_worker_config());
    REQUIRE_FALSE(await_ready(w));
    auto pid = stats(w)["os_pid"].get<pid_t>();
    std::thread killer([pid] {
      std::this_thread::sleep_for(100ms);
      ::kill(pid, SIGKILL);
    });
    // The request would time out only after 20 s; the death answers it now.
    auto r = exec(w, "fault_hang");
    killer.join();
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::worker_crashed));
    CHECK(detail_of(r.error()).find("SIGKILL") != std::string::npos);
    auto reason = await_down(w);
    CHECK(is(reason, errc::process_exited));
    CHECK(detail_of(reason) == "signal 9 (SIGKILL)");
    CHECK_FALSE(pid_alive(pid));
  }
  SUBCASE("exit(3)") {
    auto w = spawn(test_worker_config());
    REQUIRE_FALSE(await_ready(w));
    auto r = exec(w, "fault_exit", json{{"code", 3}});
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::worker_crashed));
    auto reason = await_down(w);
    CHECK(detail_of(reason) == "exit code 3");
  }
  SUBCASE("exit(0) is a normal exit") {
    auto w = spawn(test_worker_config());
    REQUIRE_FALSE(await_ready(w));
    auto r = exec(w, "fault_exit", json{{"code", 0}});
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::worker_crashed));
    CHECK(await_down(w) == caf::exit_reason::normal);
  }
  SUBCASE("abort") {
    auto w = spawn(test_worker_config());
    REQUIRE_FALSE(await_ready(w));
    CHECK_FALSE(exec(w, "fault_abort"));
    auto reason = await_down(w);
    CHECK(detail_of(reason).find("SIGABRT") != std::string::npos);
  }
  SUBCASE("segfault") {
    auto w = spawn(test_worker_config());
    REQUIRE_FALSE(await_ready(w));
    auto pid = stats(w)["os_pid"].get<pid_t>();
    ::kill(pid, SIGSEGV);
    auto reason = await_down(w);
    CHECK(detail_of(reason).find("SIGSEGV") != std::string::npos);
  }
}

TEST_CASE_FIXTURE(actor_fixture, "an init ping that never answers fails the start with init_failed") {
  auto c = test_worker_config();
  c.init_timeout = 300ms;
  // A module that never reads its input: the ping stays unanswered.
  scratch_dir dir("silent-module");
  std::ofstream(dir / "silent_worker.py") << "import time\ntime.sleep(60)\n";
  c.python_path = dir.path();
  c.module = "silent_worker";
  auto w = spawn(c);
  auto err = await_ready(w);
  CHECK(is(err, errc::init_failed));
  CHECK(detail_of(err).find("init ping") != std::string::npos);
  CHECK(is(await_down(w), errc::init_failed));
}

TEST_CASE_FIXTURE(actor_fixture, "a worker whose interpreter cannot start fails its init") {
  auto c = test_worker_config();
  c.module = "dspex_no_such_module";
  auto w = spawn(c);
  auto err = await_ready(w);
  CHECK(is(err, errc::init_failed));
  CHECK(detail_of(err).find("exit code 1") != std::string::npos);
}

TEST_CASE_FIXTURE(actor_fixture, "graceful stop: shutdown command, the process is reaped, the reason kept") {
  auto w = spawn(test_worker_config());
  REQUIRE_FALSE(await_ready(w));
  auto pid = stats(w)["os_pid"].get<pid_t>();
  self->send_exit(w, caf::exit_reason::user_shutdown);
  CHECK(await_down(w) == caf::exit_reason::user_shutdown);
  CHECK_FALSE(pid_alive(pid));
}

TEST_CASE_FIXTURE(actor_fixture, "graceful stop of a hung worker escalates to SIGKILL") {
  auto c = test_worker_config();
  c.stop_grace = 100ms;
  c.term_grace = 100ms;
  auto w = spawn(c);
  REQUIRE_FALSE(await_ready(w));
  auto pid = stats(w)["os_pid"].get<pid_t>();
  // Python's SIGTERM handler cannot run while the main thread is blocked in C? It can: make sure
  // the worker is busy, then stop; whatever it does, the process is gone at the end.
  self->send(w, exec_atom::value, make_command("fault_hang"));
  self->send_exit(w, caf::exit_reason::user_shutdown);
  CHECK(await_down(w) == caf::exit_reason::user_shutdown);
  CHECK_FALSE(pid_alive(pid));
}

TEST_CASE("leftovers of a dead run are stopped, live runs are left alone") {
  bridge::io_loop loop;
  struct fake {
    std::shared_ptr<bridge::python_process> p;
    std::shared_ptr<std::atomic<bool>> up = std::make_shared<std::atomic<bool>>(false);
  };
  auto spawn_fake = [&](const std::string& run) {
    bridge::process_options o;
    o.executable = "python3";
    o.framed = false;
    o.args = {"-c", "import time; print('up', flush=True); time.sleep(60)", "dspex_worker",
              "--run-id", run};
    fake f;
    bridge::process_callbacks cbs;
    cbs.on_output = [up = f.up](std::string_view line) {
      if (line == "up")
        *up = true;
    };
    f.p = bridge::python_process::spawn(loop, o, std::move(cbs));
    return f;
  };
  auto dead_fake = spawn_fake("h999999999-1");
  auto live_fake = spawn_fake(bridge::host_run_id());
  auto foreign_fake = spawn_fake("test-run-42");  // not our form: never ours to stop
  auto dead = dead_fake.p, live = live_fake.p, foreign = foreign_fake.p;
  // Wait for Python itself: `python3` may be a launcher (a pyenv shim) that
  // execs through several programs, and in the middle of an exec a process's
  // command line reads empty, so a scan then would not see the marker. A
  // node starting in a parallel test reaps dead runs too, so `dead` may
  // already be gone: only the end is checked, never who stopped it.
  REQUIRE(wait_until([&] { return dead->reaped() || *dead_fake.up; }));
  bridge::reap_leftovers();
  CHECK(wait_until([&] { return dead->reaped(); }));
  CHECK_FALSE(live->reaped());
  CHECK_FALSE(foreign->reaped());
  CHECK(bridge::run_is_alive(bridge::host_run_id()));
  CHECK_FALSE(bridge::run_is_alive("h999999999-1"));
}

} // TEST_SUITE
