// Descriptors: a real `dspex run` under `prlimit --nofile=32:64` raises its
// soft limit to the hard one (and says so), gives its children the soft
// limit it found, and survives descriptor exhaustion on its control socket:
// held connections (events followers, which have no read deadline) use up
// its descriptors; the next client gets a one-line resource_exhausted
// refusal instead of waiting unanswered in the backlog, the node does not
// spin meanwhile, and once the connections close it answers again. The CPU
// check reads utime+stime over a short window with a generous bound; no
// wall-clock time is asserted.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/cli/control.hpp>

#include "support/cli_process.hpp"
#include "support/wait.hpp"

#include <cstdlib>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* prlimit_path = "/usr/bin/prlimit";

// utime + stime of `pid`, in clock ticks.
long long cpu_ticks(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return -1;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 3.. after "pid (comm)"
    if (i == 14)
      utime = std::stoll(field);
    if (i == 15)
      stime = std::stoll(field);
  }
  return utime + stime;
}

// "Max open files" of /proc/PID/limits: {soft, hard}.
std::pair<std::string, std::string> nofile_of(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream s(line.substr(14));
      std::string soft, hard;
      s >> soft >> hard;
      return {soft, hard};
    }
  return {};
}

int connect_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

// The first line the node sends on `fd`, waiting up to `limit`; "" if none.
std::string first_line(int fd, std::chrono::milliseconds limit) {
  std::string buf;
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (auto nl = buf.find('\n'); nl != std::string::npos)
      return buf.substr(0, nl);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0)
      return buf;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0)
      continue;
    char chunk[512];
    auto n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0)
      return buf;
    buf.append(chunk, static_cast<std::size_t>(n));
  }
}

struct fd_fixture {
  bridge::io_loop loop;
  std::string dir, sock, cfg;
  std::unique_ptr<cli_process> node;
  std::vector<int> pids;
  std::vector<int> held;

  fd_fixture() {
    REQUIRE_MESSAGE(::access(prlimit_path, X_OK) == 0, "util-linux prlimit is needed");
    char tmpl[] = "/tmp/dspex-fd-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    sock = dir + "/n.sock";
    cfg = dir + "/n.json";
    auto j = default_config();
    j["root"]["children"][1]["size"] = 1;
    std::ofstream(cfg) << j.dump(2);
    // prlimit sets the limits and execs dspex: the pid is the node's.
    node = std::make_unique<cli_process>(
      loop, std::vector<std::string>{"--nofile=32:64", DSPEX_TEST_CLI, "run", cfg, "--control", sock},
      std::vector<std::pair<std::string, std::string>>{}, prlimit_path);
    json st;
    REQUIRE_MESSAGE(wait_until([&] {
      st = cli::control_call(sock, {{"op", "status"}}, 30s);
      return st.contains("pools") && !tree_os_pids(st["tree"], "/workers/").empty();
    }, 60s), node->output());
    pids = tree_os_pids(st["tree"]);
  }
  ~fd_fixture() {
    for (int fd : held)
      ::close(fd);
    if (node)
      node->stop();
    CHECK(wait_until([&] { return all_gone(pids); }, 30s));
    std::system(("rm -rf " + dir).c_str());
  }
};

} // namespace

TEST_SUITE("descriptors") {

TEST_CASE_FIXTURE(fd_fixture, "RLIMIT_NOFILE: the soft limit raised to the hard one and logged; children get the soft limit found") {
  auto pid = node->proc->pid();
  CHECK(node->line_with("RLIMIT_NOFILE").find("raised from 32 to 64 (the hard limit)")
        != std::string::npos);
  CHECK(nofile_of(pid) == std::pair<std::string, std::string>{"64", "64"});
  for (int w : pids)  // the fork server and the worker it forked
    CHECK_MESSAGE(nofile_of(w) == (std::pair<std::string, std::string>{"32", "64"}), "pid " << w);
}

TEST_CASE_FIXTURE(fd_fixture, "out of descriptors: the control socket refuses in one line, does not spin, and answers once they are free") {
  auto pid = node->proc->pid();
  // Followers hold a descriptor each for as long as they stay (no read
  // deadline); the node has 64 and max_connections is 64, so the
  // descriptors run out first.
  // Before the fix the client past the last descriptor waited in the
  // backlog, unanswered: an empty line here.
  std::string refusal;
  for (int i = 0; i < 200; ++i) {
    int fd = connect_unix(sock);
    std::string req = "{\"op\": \"events\"}\n";
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
    auto line = first_line(fd, 20s);
    if (line.find("\"following\"") != std::string::npos) {
      held.push_back(fd);
      continue;
    }
    refusal = line;
    ::close(fd);
    break;
  }
  CAPTURE(held.size());
  REQUIRE_MESSAGE(!refusal.empty(), "no answer past the last descriptor\n" << node->output());
  auto r = json::parse(refusal, nullptr, false);
  REQUIRE_MESSAGE(r.is_object(), refusal);
  CHECK(r["error"].value("class", "") == "resource_exhausted");
  CHECK(r["error"].value("message", "").find("out of file descriptors") != std::string::npos);
  CHECK(held.size() < 64);

  // Exhausted, with clients still coming: each is refused at once (none is
  // left waiting in the backlog) and the node's CPU stays low.
  auto ticks_per_s = ::sysconf(_SC_CLK_TCK);
  auto before = cpu_ticks(pid);
  for (int i = 0; i < 20; ++i) {
    int fd = connect_unix(sock);
    CHECK(first_line(fd, 20s).find("resource_exhausted") != std::string::npos);
    ::close(fd);
    std::this_thread::sleep_for(50ms);
  }
  auto spent = cpu_ticks(pid) - before;
  CHECK_MESSAGE(spent < ticks_per_s / 2, "CPU ticks in ~1 s: " << spent);  // a spin would be ~1 s
  int code = 0;
  auto out = run_cli(loop, {"status", "--control", sock}, &code);
  CHECK(code == 1);
  CHECK_MESSAGE(out.find("out of file descriptors") != std::string::npos, out);
  CHECK(node->line_with("refusing control connections").find("Too many open files")
        != std::string::npos);

  // Descriptors free again: the node answers as before.
  for (int fd : held)
    ::close(fd);
  held.clear();
  REQUIRE(wait_until([&] {
    auto st = cli::control_call(sock, {{"op", "status"}}, 30s);
    return st.contains("pools");
  }, 30s));
  auto ping = cli::control_call(sock, {{"op", "exec"}, {"command", "ping"}}, 30s);
  CHECK_MESSAGE(ping.value("ok", false), ping.dump());
  out = run_cli(loop, {"status", "--control", sock}, &code);
  CHECK(code == 0);
  CHECK(!node->line_with("descriptors available again").empty());
  CHECK(!node->exited.wait(0ms));
}

} // TEST_SUITE
