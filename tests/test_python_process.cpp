// python_process against real processes: frames both ways, exit
// classification, staged stop, close-on-exec under concurrent spawns.
#include <doctest/doctest.h>

#include <dspex/bridge/python_process.hpp>

#include "support/wait.hpp"

#include <atomic>
#include <csignal>
#include <mutex>
#include <thread>

using namespace dspex::bridge;
using dspex::test::promise_box;
using dspex::test::wait_until;

namespace {

// A frame echo peer in plain Python: reads frames until EOF, writes each back.
const char* echo_script = R"(
import sys
r, w = sys.stdin.buffer, sys.stdout.buffer
while True:
    h = r.read(4)
    if len(h) < 4:
        sys.exit(0)
    n = int.from_bytes(h, 'big')
    body = r.read(n)
    w.write(h + body)
    w.flush()
)";

struct recorder {
  std::mutex mx;
  std::vector<std::string> frames;
  std::vector<protocol_error> errors;
  std::vector<std::string> lines;
  promise_box<exit_status> exited;

  process_callbacks callbacks() {
    process_callbacks cbs;
    cbs.on_frame = [this](std::string f) {
      std::lock_guard<std::mutex> g(mx);
      frames.push_back(std::move(f));
    };
    cbs.on_protocol_error = [this](protocol_error e) {
      std::lock_guard<std::mutex> g(mx);
      errors.push_back(std::move(e));
    };
    cbs.on_output = [this](std::string_view l) {
      std::lock_guard<std::mutex> g(mx);
      lines.emplace_back(l);
    };
    cbs.on_exit = [this](exit_status s) { exited.set(s); };
    return cbs;
  }
  std::size_t frame_count() {
    std::lock_guard<std::mutex> g(mx);
    return frames.size();
  }
  std::size_t error_count() {
    std::lock_guard<std::mutex> g(mx);
    return errors.size();
  }
};

process_options python(std::string script) {
  process_options o;
  o.executable = "python3";
  o.args = {"-c", std::move(script)};
  return o;
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

} // namespace

TEST_SUITE("python_process") {

TEST_CASE("frames go both ways, and EOF on input ends the process cleanly") {
  io_loop loop;
  recorder rec;
  auto p = python_process::spawn(loop, python(echo_script), rec.callbacks());
  CHECK(p->pid() > 0);
  std::string big(1 << 20, 'z');  // 1 MiB, many pipe buffers' worth
  CHECK(p->send("hello"));
  CHECK(p->send(""));
  CHECK(p->send(big));
  REQUIRE(wait_until([&] { return rec.frame_count() == 3; }));
  {
    std::lock_guard<std::mutex> g(rec.mx);
    CHECK(rec.frames[0] == "hello");
    CHECK(rec.frames[1] == "");
    CHECK(rec.frames[2] == big);
  }
  p->close_input();
  REQUIRE(rec.exited.wait());
  CHECK(rec.exited.get().clean());
  CHECK(p->reaped());
  CHECK(rec.exited.count() == 1);
}

TEST_CASE("a body above max_frame_bytes is refused before writing") {
  io_loop loop;
  recorder rec;
  auto opts = python(echo_script);
  opts.max_frame_bytes = 8;
  auto p = python_process::spawn(loop, opts, rec.callbacks());
  CHECK_FALSE(p->send("123456789"));
  CHECK(p->send("12345678"));
  REQUIRE(wait_until([&] { return rec.frame_count() == 1; }));
  p->close_input();
  REQUIRE(rec.exited.wait());
}

TEST_CASE("exit codes and signals are told apart") {
  io_loop loop;
  SUBCASE("exit(9) is an exit code") {
    recorder rec;
    auto p = python_process::spawn(loop, python("import os; os._exit(9)"), rec.callbacks());
    REQUIRE(rec.exited.wait());
    auto s = rec.exited.get();
    CHECK(s.exited());
    CHECK(s.code() == 9);
    CHECK_FALSE(s.signaled());
    CHECK(s.describe() == "exit code 9");
  }
  SUBCASE("SIGKILL is a signal") {
    recorder rec;
    auto p = python_process::spawn(loop, python("import time; time.sleep(60)"), rec.callbacks());
    p->kill();
    REQUIRE(rec.exited.wait());
    auto s = rec.exited.get();
    CHECK(s.signaled());
    CHECK(s.signal() == SIGKILL);
    CHECK(s.describe() == "signal 9 (SIGKILL)");
  }
  SUBCASE("abort is SIGABRT") {
    recorder rec;
    auto p = python_process::spawn(loop, python("import os; os.abort()"), rec.callbacks());
    REQUIRE(rec.exited.wait());
    CHECK(rec.exited.get().signal() == SIGABRT);
  }
}

TEST_CASE("the stop plan escalates to SIGKILL for a process that ignores everything") {
  io_loop loop;
  recorder rec;
  auto p = python_process::spawn(
    loop,
    python("import signal, time, sys\n"
           "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
           "print('ready', file=sys.stderr, flush=True)\n"
           "time.sleep(60)\n"),
    rec.callbacks());
  // Wait until the handler is installed, or SIGTERM would end it early.
  REQUIRE(wait_until([&] {
    std::lock_guard<std::mutex> g(rec.mx);
    return !rec.lines.empty();
  }));
  p->stop(stop_plan{std::nullopt, std::chrono::milliseconds(50), std::chrono::milliseconds(50)});
  REQUIRE(rec.exited.wait());
  CHECK(rec.exited.get().signal() == SIGKILL);
}

TEST_CASE("the stop plan ends at SIGTERM for a process that honours it") {
  io_loop loop;
  recorder rec;
  // Ignores EOF (never reads stdin) but dies on SIGTERM's default action.
  auto p = python_process::spawn(loop, python("import time; time.sleep(60)"), rec.callbacks());
  p->stop(stop_plan{std::nullopt, std::chrono::milliseconds(50), std::chrono::seconds(10)});
  REQUIRE(rec.exited.wait());
  CHECK(rec.exited.get().signal() == SIGTERM);
}

TEST_CASE("stderr arrives line by line") {
  io_loop loop;
  recorder rec;
  auto p = python_process::spawn(
    loop, python("import sys; sys.stderr.write('one\\ntwo\\nthree')"), rec.callbacks());
  REQUIRE(rec.exited.wait());
  std::lock_guard<std::mutex> g(rec.mx);
  CHECK(rec.lines == std::vector<std::string>{"one", "two", "three"});
}

TEST_CASE("an oversized frame from the process is a protocol error, not an allocation") {
  io_loop loop;
  recorder rec;
  auto p = python_process::spawn(
    loop,
    python("import sys, time\n"
           "sys.stdout.buffer.write(b'\\x00\\x00\\x00\\x02ok' + b'\\xff\\xff\\xff\\xff' + b'x' * 100)\n"
           "sys.stdout.buffer.flush()\n"
           "time.sleep(60)\n"),
    rec.callbacks());
  REQUIRE(wait_until([&] { return rec.error_count() == 1; }));
  {
    std::lock_guard<std::mutex> g(rec.mx);
    CHECK(rec.frames == std::vector<std::string>{"ok"});
    CHECK(rec.errors[0].code == protocol_errc::frame_too_large);
  }
  p->kill();
  REQUIRE(rec.exited.wait());
}

TEST_CASE("a process that dies inside a frame reports a truncated frame, then its exit") {
  io_loop loop;
  recorder rec;
  auto p = python_process::spawn(
    loop,
    python("import sys, os\n"
           "sys.stdout.buffer.write(b'\\x00\\x00\\x01\\x00partial')\n"
           "sys.stdout.buffer.flush()\n"
           "os._exit(1)\n"),
    rec.callbacks());
  REQUIRE(rec.exited.wait());
  CHECK(rec.exited.get().code() == 1);
  std::lock_guard<std::mutex> g(rec.mx);
  REQUIRE(rec.errors.size() == 1);
  CHECK(rec.errors[0].code == protocol_errc::truncated_frame);
}

TEST_CASE("a missing executable is an error at spawn") {
  io_loop loop;
  recorder rec;
  process_options o;
  o.executable = "dspex-no-such-program";
  CHECK_THROWS_AS(python_process::spawn(loop, o, rec.callbacks()), std::system_error);
}

TEST_CASE("dropping the last handle kills the process") {
  io_loop loop;
  recorder rec;
  auto p = python_process::spawn(loop, python("import time; time.sleep(60)"), rec.callbacks());
  auto pid = p->pid();
  CHECK(alive(pid));
  p.reset();
  REQUIRE(rec.exited.wait());
  CHECK(rec.exited.get().signal() == SIGKILL);
  CHECK_FALSE(alive(pid));
}

TEST_CASE("16 processes spawned from 4 threads at once each exit when their own input closes") {
  // Without close-on-exec pipes, a child inherits its siblings' stdin write
  // ends and never sees EOF.
  io_loop loop;
  constexpr int threads = 4, per_thread = 4;
  std::vector<std::unique_ptr<recorder>> recs;
  for (int i = 0; i < threads * per_thread; ++i)
    recs.push_back(std::make_unique<recorder>());
  std::vector<std::shared_ptr<python_process>> procs(threads * per_thread);
  std::atomic<int> ready{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      ++ready;
      while (ready.load() < threads) {
      }
      for (int i = 0; i < per_thread; ++i) {
        auto k = t * per_thread + i;
        procs[k] = python_process::spawn(loop, python(echo_script), recs[k]->callbacks());
      }
    });
  for (auto& t : ts)
    t.join();
  for (auto& p : procs)
    p->close_input();
  for (auto& r : recs) {
    REQUIRE(r->exited.wait());
    CHECK(r->exited.get().clean());
  }
}

} // TEST_SUITE
