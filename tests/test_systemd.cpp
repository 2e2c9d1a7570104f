// `dspex run` under systemd's notify protocol: the test binds the datagram
// socket systemd would (NOTIFY_SOCKET) and reads what a real dspex sends.
#include <doctest/doctest.h>

#include "support/cli_process.hpp"
#include "support/scratch_dir.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// systemd's end of NOTIFY_SOCKET: an AF_UNIX datagram socket.
struct notify_socket {
  std::string path;
  int fd = -1;
  std::vector<std::string> got;  // every datagram, in order

  explicit notify_socket(std::string p) : path(std::move(p)) {
    ::unlink(path.c_str());
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof sa.sun_path);
    std::copy(path.begin(), path.end(), sa.sun_path);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  }
  ~notify_socket() {
    ::close(fd);
    ::unlink(path.c_str());
  }

  /// Reads datagrams until one contains `what` or `limit` passes.
  bool wait_for(const std::string& what, std::chrono::milliseconds limit = 60s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      for (auto& m : got)
        if (m.find(what) != std::string::npos)
          return true;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return false;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) > 0) {
        char buf[4096];
        auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0)
          got.emplace_back(buf, static_cast<std::size_t>(n));
      }
    }
  }
  int count(const std::string& what) const {
    int n = 0;
    for (auto& m : got)
      n += m.find(what) != std::string::npos;
    return n;
  }
};

} // namespace

TEST_SUITE("systemd") {

TEST_CASE("dspex run: READY=1 when it serves, WATCHDOG=1, STOPPING=1 on SIGTERM, exit 0") {
  scratch_dir scratch("systemd");
  bridge::io_loop loop;
  const std::string& dir = scratch.path();
  auto config = dir + "/tree.json";
  auto sock = dir + "/control.sock";
  auto j = json::parse(run_cli(loop, {"config", "--default"}));
  j["root"]["children"][1]["size"] = 2;
  std::ofstream(config) << j.dump(2);
  notify_socket systemd(dir + "/notify.sock");

  cli_process node(loop, {"run", config, "--control", sock},
               {{"NOTIFY_SOCKET", systemd.path}, {"WATCHDOG_USEC", "200000"}});
  REQUIRE(systemd.wait_for("READY=1"));
  INFO(node.output());
  // Ready means serving: a request sent at once is answered by a worker.
  int code = 0;
  auto out = run_cli(loop, {"exec", "ping", "--control", sock}, &code);
  CHECK(code == 0);
  CHECK(json::parse(out, nullptr, false).value("ok", false));
  CHECK(systemd.count("STATUS=serving: 2 workers in 1 pools") == 1);
  CHECK(systemd.count("STOPPING=1") == 0);
  // Every 100 ms (half of WATCHDOG_USEC); a few of them, whatever the load.
  CHECK(wait_until([&] {
    systemd.wait_for("no such message", 50ms);
    return systemd.count("WATCHDOG=1") >= 2;
  }, 60s));

  node.proc->signal(SIGTERM);
  CHECK(systemd.wait_for("STOPPING=1"));
  REQUIRE(node.exited.wait(60s));
  CHECK(node.exited.get().clean());
  // READY came once, before anything else but watchdog pings and STOPPING.
  CHECK(systemd.count("READY=1") == 1);
  CHECK(systemd.got.front().find("READY=1") != std::string::npos);
}

TEST_CASE("dspex run: a watchdog meant for another pid (WATCHDOG_PID) is off") {
  scratch_dir scratch("systemd");
  bridge::io_loop loop;
  const std::string& dir = scratch.path();
  auto sock = dir + "/control2.sock";
  notify_socket systemd(dir + "/notify2.sock");
  // WATCHDOG_PID names another process: READY yes, watchdog pings no.
  cli_process node(loop, {"run", "--control", sock},
               {{"NOTIFY_SOCKET", systemd.path}, {"WATCHDOG_USEC", "100000"},
                {"WATCHDOG_PID", "1"}});
  REQUIRE(systemd.wait_for("READY=1"));
  systemd.wait_for("WATCHDOG=1", 500ms);
  CHECK(systemd.count("WATCHDOG=1") == 0);
  node.proc->signal(SIGTERM);
  REQUIRE(node.exited.wait(60s));
  CHECK(node.exited.get().clean());
}

} // TEST_SUITE
