// The io scheduler (actors/node/detail/io_scheduler.hpp): one thread runs the actors and
// the io loop's handlers, wakes for work from other threads, and an actor
// that waits for the loop (the fork server) runs the loop itself.
#include <doctest/doctest.h>

#include <dspex/actors/node/detail/io_scheduler.hpp>
#include <dspex/actors/node/detail/spare_cpu.hpp>
#include <dspex/bridge/fork_server.hpp>
#include <dspex/bridge/python_process.hpp>

#include "support/actor_fixture.hpp"
#include "support/system_config.hpp"
#include "support/wait.hpp"

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/network/multiplexer.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

std::string id_of(std::thread::id id) {
  std::ostringstream out;
  out << id;
  return out.str();
}

// Answers with the id of the thread it runs on.
caf::behavior thread_teller(caf::event_based_actor*) {
  return {[](caf::get_atom) { return id_of(std::this_thread::get_id()); }};
}

// A system on the shipped configuration, with a thread_teller.
struct io_system {
  system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<bridge::io_loop> loop = driven_io_loop(sys);
  caf::scoped_actor self{sys};
  caf::actor teller = sys.spawn(thread_teller);

  ~io_system() { self->send_exit(teller, caf::exit_reason::kill); }

  /// The teller's thread, asked from this one.
  std::string ask_thread() {
    std::string out = "no answer";
    self->request(teller, caf::infinite, caf::get_atom::value)
      .receive([&](std::string& s) { out = std::move(s); }, [&](caf::error&) { out = "error"; });
    return out;
  }
};

// `n` threads that spin until it goes: that many runnable tasks all along.
class busy_threads {
public:
  explicit busy_threads(int n) {
    for (int i = 0; i < n; ++i)
      threads_.emplace_back([this] {
        while (!stop_.load(std::memory_order_relaxed)) {
        }
      });
  }
  ~busy_threads() {
    stop_ = true;
    for (auto& t : threads_)
      t.join();
  }

private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

} // namespace

TEST_CASE_FIXTURE(io_system, "io scheduler: one thread runs the actors and the io loop's handlers") {
  REQUIRE(loop);
  CHECK(loop->is_driven());
  auto actor_thread = ask_thread();
  // run_sync from outside: posted, run when the thread next sleeps in the loop.
  auto handler_thread = loop->run_sync([] { return id_of(std::this_thread::get_id()); });
  CHECK(actor_thread == handler_thread);
  CHECK(actor_thread != id_of(std::this_thread::get_id()));
  CHECK_FALSE(loop->on_loop_thread());
}

TEST_CASE_FIXTURE(io_system, "io scheduler: work from other threads wakes it, a handler's send runs the actor") {
  REQUIRE(loop);
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(1ms);  // the thread is asleep in epoll now
    CHECK(ask_thread() != "no answer");
  }
  // A handler that sends (as the io thread answers a reply): the actor runs
  // after the handler, on the same thread, and its answer reaches us.
  caf::actor me = caf::actor_cast<caf::actor>(self.ptr());
  promise_box<std::string> from_handler;
  loop->post([&] {
    from_handler.set(id_of(std::this_thread::get_id()));
    caf::anon_send(teller, caf::get_atom::value);  // answered to nobody: dropped
    caf::anon_send(me, caf::ok_atom::value);
  });
  bool got = false;
  self->receive([&](caf::ok_atom) { got = true; }, caf::after(20s) >> [] {});
  CHECK(got);
  REQUIRE(from_handler.wait());
  CHECK(from_handler.get() == ask_thread());
}

TEST_CASE_FIXTURE(io_system, "io scheduler: a throwing handler is reported, the thread goes on") {
  REQUIRE(loop);
  loop->post([] { throw std::runtime_error("a handler's bug (expected in this test)"); });
  CHECK(loop->run_sync([] { return 7; }) == 7);
  CHECK(ask_thread() != "no answer");
}

TEST_CASE_FIXTURE(io_system, "io scheduler: an actor that waits for the fork server runs the loop itself") {
  REQUIRE(loop);
  auto opts = fork_server_options_for(actor_fixture::test_worker_config("fs"));
  std::shared_ptr<bridge::fork_server> fs;
  std::shared_ptr<bridge::python_process> child;
  // Both waits (the server's ready line, the fork's pid) are answered by
  // the loop's handlers, which only this very thread can run.
  auto starter = sys.spawn([&](caf::event_based_actor*) -> caf::behavior {
    return {[&](caf::get_atom) -> int {
      fs = bridge::fork_server::start(*loop, opts, {});
      bridge::process_options po;
      po.args = {"--worker-id", "fs-child", "--run-id", opts.run_id, "--fault-injection"};
      child = bridge::python_process::fork_from(*loop, *fs, po, {}, 20s);
      return child->pid();
    }};
  });
  int pid = 0;
  self->request(starter, caf::infinite, caf::get_atom::value)
    .receive([&](int p) { pid = p; }, [&](caf::error& e) { FAIL(to_string(e)); });
  CHECK(pid > 0);
  REQUIRE(fs);
  auto server_pid = fs->pid();
  child->kill();
  fs->stop();
  CHECK(wait_until([&] { return child->reaped(); }));
  CHECK(wait_until([&] { return process_gone(server_pid); }));
  child.reset();
  fs.reset();
  self->send_exit(starter, caf::exit_reason::kill);
}

TEST_CASE("io scheduler: the spin window from DSPEX_IO_SPIN_US: microseconds up to 1000, else 30") {
  using us = std::chrono::microseconds;
  CHECK(io_spin_window(nullptr) == us(30));
  CHECK(io_spin_window("") == us(30));
  CHECK(io_spin_window("0") == us(0));
  CHECK(io_spin_window("75") == us(75));
  CHECK(io_spin_window("5000") == us(1000));
  for (auto bad : {"-1", "x", "10us", " 10", "99999999999999999999999"})
    CHECK(io_spin_window(bad) == us(30));
}

TEST_CASE("io scheduler: the runnable tasks in /proc/loadavg's fourth field") {
  CHECK(spare_cpu::runnable("1.18 1.96 2.01 3/345 12345\n") == 3);
  CHECK(spare_cpu::runnable("0.00 0.00 0.00 1/80 7") == 1);
  for (auto bad : {"", "1.18 1.96 2.01", "1.18 1.96 2.01 ", "1.18 1.96 2.01 x/345",
                   "1.18 1.96 2.01 3", "1.18 1.96 2.01 -3/345", "1.18 1.96 2.01 3 345"})
    CHECK_FALSE(spare_cpu::runnable(bad));
}

TEST_CASE("io scheduler: no CPU to spare while more threads than CPUs are busy (the spin stops)") {
  spare_cpu probe(std::chrono::microseconds(0));
  busy_threads hogs(probe.cpus() + 2);
  // Every hog is runnable all along: the count is above the CPUs at once,
  // whatever else the machine runs.
  CHECK(wait_until([&] { return !probe.now(); }));
}

TEST_CASE_FIXTURE(io_system, "io scheduler: with no CPU to spare it sleeps at once and still wakes for every job") {
  REQUIRE(loop);
  busy_threads hogs(spare_cpu().cpus() + 2);
  // Each ask comes from this thread while the loop thread goes to sleep
  // without a spin: one lost between its checks would never be answered.
  int answered = 0;
  for (int i = 0; i < 300; ++i)
    self->request(teller, 10s, caf::get_atom::value)
      .receive([&](std::string&) { ++answered; }, [&](caf::error&) {});
  CHECK(answered == 300);
}

TEST_CASE_FIXTURE(io_system, "io scheduler: an idle host sleeps in epoll after its spin window") {
  REQUIRE(loop);
  ask_thread();  // work done: the thread spins one window, then sleeps
  auto tid = loop->run_sync([] { return static_cast<long>(::syscall(SYS_gettid)); });
  auto voluntary = [tid] {
    std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0)
        return std::stol(line.substr(line.find(':') + 1));
    return -1L;
  };
  // Each ask is work that ends with a spin window and a sleep: a thread
  // that kept spinning would never switch out voluntarily.
  auto before = voluntary();
  REQUIRE(before >= 0);
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(20ms);
    ask_thread();
  }
  CHECK(voluntary() > before);
}

TEST_CASE("io scheduler: more than one scheduler thread asked for is CAF's work sharing") {
  caf::actor_system_config cfg;
  recommended_settings(cfg);
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};
  CHECK_FALSE(driven_io_loop(sys));
  CHECK(sys.scheduler().num_workers() == 2);
}

TEST_CASE("io scheduler: CAF's network multiplexer runs on its thread (DSPEX_MIDDLEMAN_THREAD=1: on CAF's own)") {
  for (bool own : {false, true}) {
    CAPTURE(own);
    if (own)
      ::setenv("DSPEX_MIDDLEMAN_THREAD", "1", 1);
    system_config c1, c2;
    c1.load<caf::io::middleman>();
    c2.load<caf::io::middleman>();
    caf::actor_system server{c1};
    caf::actor_system client{c2};
    ::unsetenv("DSPEX_MIDDLEMAN_THREAD");
    if (!driven_io_loop(server))
      return;  // DSPEX_IO_THREAD=1: no scheduler thread to drive it
    auto teller = server.spawn(thread_teller);
    auto port = server.middleman().publish(teller, 0, "127.0.0.1");
    REQUIRE(port);
    auto proxy = client.middleman().remote_actor("127.0.0.1", *port);
    REQUIRE(proxy);
    caf::scoped_actor self{client};
    // A few round trips through BASP and back: the answer comes, whichever
    // thread moves the bytes.
    std::string server_thread;
    for (int i = 0; i < 20; ++i)
      self->request(*proxy, 10s, caf::get_atom::value)
        .receive([&](std::string& s) { server_thread = s; },
                 [&](caf::error& e) { FAIL(client.render(e)); });
    auto local = client.spawn(thread_teller);
    std::string client_thread;
    self->request(local, 10s, caf::get_atom::value)
      .receive([&](std::string& s) { client_thread = s; }, [&](caf::error&) {});
    auto server_mpx = id_of(server.middleman().backend().thread_id());
    auto client_mpx = id_of(client.middleman().backend().thread_id());
    if (own) {
      CHECK(server_mpx != server_thread);
      CHECK(client_mpx != client_thread);
    } else {
      CHECK(server_mpx == server_thread);
      CHECK(client_mpx == client_thread);
    }
    self->send_exit(local, caf::exit_reason::kill);
    self->send_exit(teller, caf::exit_reason::kill);
  }
}
