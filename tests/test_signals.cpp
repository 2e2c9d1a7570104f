// Signals to a real `dspex run`, each with a request in flight on the
// control socket (fault_sleep on the pool's one worker): SIGUSR1, SIGUSR2
// and a process-directed SIGPIPE are logged (or ignored) and the node
// serves on, the request answered; SIGHUP reloads every pool (a new fork
// server and worker; the request in flight answered by the old one); SIGQUIT drains and stops as SIGTERM
// does: the request answered, exit 0, socket file removed, no process of
// the tree left. The signal mask is checked in every thread of the node
// (blocked before any thread started), and a child starts with none of it.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/cli/control.hpp>

#include "support/cli_process.hpp"
#include "support/wait.hpp"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

// A "SigBlk:" / "SigIgn:" mask of /proc/PID[/task/TID]/status.
std::uint64_t status_mask(const std::string& status_path, const std::string& field) {
  std::ifstream in(status_path);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0)
      return std::stoull(line.substr(field.size() + 1), nullptr, 16);
  return ~std::uint64_t{0};  // not found: fails every check below
}

std::uint64_t bit(int sig) { return std::uint64_t{1} << (sig - 1); }

std::vector<std::string> task_ids(int pid) {
  std::vector<std::string> out;
  auto path = "/proc/" + std::to_string(pid) + "/task";
  if (auto* d = ::opendir(path.c_str())) {
    while (auto* e = ::readdir(d))
      if (e->d_name[0] != '.')
        out.emplace_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

struct signal_fixture {
  bridge::io_loop loop;
  std::string dir, sock, cfg;
  std::unique_ptr<cli_process> node;
  std::vector<int> pids;  // fork server, worker, the process child
  int sleeper = 0;

  signal_fixture() {
    char tmpl[] = "/tmp/dspex-sig-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    sock = dir + "/n.sock";
    cfg = dir + "/n.json";
    auto j = default_config();
    j["root"]["children"][1]["size"] = 1;
    j["root"]["children"][1]["worker"]["fault_injection"] = true;
    j["root"]["children"].push_back(
      {{"id", "sleeper"}, {"type", "process"}, {"command", {"sleep", "600"}}});
    std::ofstream(cfg) << j.dump(2);
    node = std::make_unique<cli_process>(loop,
                                         std::vector<std::string>{"run", cfg, "--control", sock});
    json st;
    REQUIRE_MESSAGE(wait_until([&] {
      st = cli::control_call(sock, {{"op", "status"}}, 30s);
      return st.contains("pools") && !tree_os_pids(st["tree"], "/workers/").empty()
             && !tree_os_pids(st["tree"], "sleeper").empty();
    }, 60s), node->output());
    pids = tree_os_pids(st["tree"]);
    sleeper = tree_os_pids(st["tree"], "sleeper").at(0);
  }
  ~signal_fixture() {
    if (node)
      node->stop();
    CHECK(wait_until([&] { return all_gone(pids); }, 30s));
    std::system(("rm -rf " + dir).c_str());
  }

  json status() { return cli::control_call(sock, {{"op", "status"}}, 30s); }

  // Sends `sig` while a request sleeps on the worker; the request's reply.
  json signal_in_flight(int sig) {
    json reply;
    std::thread caller([&] {
      reply = cli::control_call(sock, {{"op", "exec"}, {"command", "fault_sleep"},
                                       {"args", {{"seconds", 1.5}}}}, 60s);
    });
    bool in_flight = wait_until([&] {
      auto st = status();
      return st.contains("pools") && st["pools"]["default"].value("in_flight", 0) == 1;
    }, 30s);
    if (in_flight)
      ::kill(node->proc->pid(), sig);  // process-directed, as kill(1) sends it
    caller.join();
    REQUIRE(in_flight);
    return reply;
  }

  bool sleeps(const json& reply) {
    return reply.value("ok", false) && reply["result"].value("slept_s", 0.0) == 1.5;
  }
};

} // namespace

TEST_SUITE("signals") {

TEST_CASE_FIXTURE(signal_fixture, "every thread of dspex run blocks its signals; children start with none blocked and SIGPIPE at its default") {
  auto pid = node->proc->pid();
  auto taken = bit(SIGHUP) | bit(SIGINT) | bit(SIGQUIT) | bit(SIGTERM) | bit(SIGUSR1) | bit(SIGUSR2);
  auto tasks = task_ids(pid);
  REQUIRE(tasks.size() > 3);  // CAF's, the io loop's, the control server's...
  for (auto& tid : tasks) {
    auto path = "/proc/" + std::to_string(pid) + "/task/" + tid + "/status";
    CHECK_MESSAGE((status_mask(path, "SigBlk") & taken) == taken, "thread " << tid);
  }
  CHECK((status_mask("/proc/" + std::to_string(pid) + "/status", "SigIgn") & bit(SIGPIPE)) != 0);
  // The process child: an empty mask and SIGPIPE not ignored (an ignored
  // signal would survive its exec).
  auto child = "/proc/" + std::to_string(sleeper) + "/status";
  CHECK(status_mask(child, "SigBlk") == 0);
  CHECK((status_mask(child, "SigIgn") & bit(SIGPIPE)) == 0);
}

TEST_CASE_FIXTURE(signal_fixture, "SIGUSR1, SIGUSR2 and SIGPIPE: logged or ignored, the request in flight answered, the node serves on") {
  for (int sig : {SIGUSR1, SIGUSR2, SIGPIPE}) {
    CAPTURE(sig);
    auto r = signal_in_flight(sig);
    CHECK_MESSAGE(sleeps(r), r.dump());
    CHECK(!node->exited.wait(0ms));
    auto ping = cli::control_call(sock, {{"op", "exec"}, {"command", "ping"}}, 30s);
    CHECK_MESSAGE(ping.value("ok", false), ping.dump());
  }
  CHECK(node->line_with("SIGUSR1 received").find("ignored") != std::string::npos);
  CHECK(node->line_with("SIGUSR2 received").find("ignored") != std::string::npos);
  CHECK(!node->exited.wait(0ms));
  CHECK(::access(sock.c_str(), F_OK) == 0);
}

TEST_CASE_FIXTURE(signal_fixture, "SIGHUP: a rolling reload of every pool, the request in flight answered, new fork server and worker") {
  auto before = tree_os_pids(status()["tree"], "pool_sup");
  REQUIRE(before.size() == 2);  // the fork server and the worker
  auto r = signal_in_flight(SIGHUP);
  CHECK_MESSAGE(sleeps(r), r.dump());
  CHECK(node->line_with("SIGHUP received").find("rolling reload") != std::string::npos);
  REQUIRE_MESSAGE(wait_until([&] { return !node->line_with("pool default reloaded").empty(); }, 60s),
                  node->output());
  CHECK(node->line_with("pool default reloaded").find("1 workers") != std::string::npos);
  auto st = status();
  auto after = tree_os_pids(st["tree"], "pool_sup");
  CHECK(after.size() == 2);
  for (int pid : after) {
    CHECK(std::find(before.begin(), before.end(), pid) == before.end());
    pids.push_back(pid);  // reaped at the end too
  }
  CHECK(wait_until([&] { return all_gone(before); }, 30s));
  CHECK(st["pools"]["default"]["reloads"]["ok"] == 1);
  CHECK(st["pools"]["default"]["crashes"] == 0);
  auto ping = cli::control_call(sock, {{"op", "exec"}, {"command", "ping"}}, 30s);
  CHECK_MESSAGE(ping.value("ok", false), ping.dump());
  CHECK(!node->exited.wait(0ms));
}

TEST_CASE_FIXTURE(signal_fixture, "SIGQUIT and SIGTERM drain: the request in flight answered, exit 0, socket removed, no process left") {
  int sig = SIGQUIT;
  SUBCASE("SIGQUIT") { sig = SIGQUIT; }
  SUBCASE("SIGTERM") { sig = SIGTERM; }
  CAPTURE(sig);
  auto r = signal_in_flight(sig);
  CHECK_MESSAGE(sleeps(r), r.dump());
  REQUIRE_MESSAGE(node->exited.wait(60s), node->output());
  CHECK(node->exited.get().code() == 0);
  CHECK(node->line_with(sig == SIGQUIT ? "SIGQUIT received" : "SIGTERM received").find("draining")
        != std::string::npos);
  struct stat sb{};
  CHECK(::stat(sock.c_str(), &sb) != 0);  // the socket file is gone
  CHECK(wait_until([&] { return all_gone(pids); }, 30s));
}

} // TEST_SUITE
