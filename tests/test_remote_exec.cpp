// `dspex exec --node HOST:PORT --timeout-ms N` against a real `dspex run
// --listen` node that dies (SIGKILL) or hangs (SIGSTOP) with the request in
// flight: the exec process ends within a bounded wait with a classified
// error and exit code 1, whatever the remote does. Each case is built so
// that only the fix can end the exec in time: fault_hang never answers, and
// the exec's old wait was 2N + 60 s after a 10 s connect and a 10 s hello.
// Nothing asserts wall-clock time; the bounded waits only keep a broken
// build from hanging.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/cli/control.hpp>

#include "support/cli_process.hpp"
#include "support/wait.hpp"
#include "support/loopback.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

struct exec_node_fixture {
  bridge::io_loop loop;
  std::string dir, sock, cfg;
  int port = free_port();
  std::unique_ptr<cli_process> node;
  std::vector<int> pids;  // every process of the node's tree (fork server, workers)

  exec_node_fixture() {
    char tmpl[] = "/tmp/dspex-xn-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    sock = dir + "/n.sock";
    cfg = dir + "/n.json";
    auto j = default_config();
    j["root"]["children"][1]["size"] = 1;
    j["root"]["children"][1]["worker"]["fault_injection"] = true;
    j["listen"] = "127.0.0.1:" + std::to_string(port);
    std::ofstream(cfg) << j.dump(2);
    node = std::make_unique<cli_process>(loop,
                                         std::vector<std::string>{"run", cfg, "--control", sock});
    json st;
    REQUIRE_MESSAGE(wait_until([&] {
      st = cli::control_call(sock, {{"op", "status"}}, 30s);
      return st.contains("pools") && !tree_os_pids(st["tree"], "/workers/").empty();
    }, 60s), node->output());
    pids = tree_os_pids(st["tree"]);
  }
  ~exec_node_fixture() {
    if (node)
      node->stop();
    CHECK(wait_until([&] { return all_gone(pids); }, 30s));
    std::system(("rm -rf " + dir).c_str());
  }

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }

  std::unique_ptr<cli_process> exec(const std::string& command, const std::string& timeout_ms) {
    return std::make_unique<cli_process>(
      loop, std::vector<std::string>{"exec", command, "{}", "--node", endpoint(), "--timeout-ms",
                                     timeout_ms});
  }

  // The remote's worker has the request (so it is in flight on the wire).
  void wait_in_flight() {
    REQUIRE(wait_until([&] {
      auto st = cli::control_call(sock, {{"op", "status"}}, 30s);
      return st.contains("pools") && st["pools"]["default"].value("in_flight", 0) == 1;
    }, 30s));
  }

  // The exec ended (bounded wait), exit code 1, with this error class.
  static void check_ended(cli_process& e, const std::string& cls) {
    REQUIRE_MESSAGE(e.exited.wait(40s), "exec --node still running: " << e.output());
    CHECK(e.exited.get().code() == 1);
    auto out = e.output();
    auto start = out.find('{');
    REQUIRE_MESSAGE(start != std::string::npos, out);
    auto r = json::parse(out.substr(start), nullptr, false);
    REQUIRE_MESSAGE(r.is_object(), out);
    CHECK(r.value("ok", true) == false);
    CHECK_MESSAGE(r["error"].value("class", "") == cls, out);
  }
};

} // namespace

TEST_SUITE("remote_exec") {

TEST_CASE_FIXTURE(exec_node_fixture, "exec --node: the remote SIGKILLed mid-request is node_down at once") {
  // A minute of timeout: only the lost connection can end it in the bounded wait.
  auto e = exec("fault_hang", "60000");
  wait_in_flight();
  node->proc->kill();
  REQUIRE(node->exited.wait(30s));
  check_ended(*e, "node_down");
  CHECK(e->output().find("connection lost") != std::string::npos);
  CHECK(wait_until([&] { return all_gone(pids); }, 30s));  // PDEATHSIG took the workers
}

TEST_CASE_FIXTURE(exec_node_fixture, "exec --node --timeout-ms: a remote SIGSTOPped mid-request is command_timeout by the caller's timeout") {
  // Well below the heartbeat timeout (5 s): the caller's timeout ends it.
  auto e = exec("fault_hang", "1500");
  wait_in_flight();
  node->proc->signal(SIGSTOP);
  check_ended(*e, "command_timeout");
  CHECK(e->output().find("no reply from " + endpoint()) != std::string::npos);
  node->proc->signal(SIGCONT);
  // The node serves on after it is continued.
  int code = 0;
  auto out = run_cli(loop, {"exec", "ping", "--node", endpoint(), "--timeout-ms", "10000"}, &code);
  CHECK_MESSAGE(code == 0, out);
}

TEST_CASE_FIXTURE(exec_node_fixture, "exec --node: a remote SIGSTOPped mid-request is node_down by the heartbeat timeout") {
  auto e = exec("fault_hang", "120000");
  wait_in_flight();
  node->proc->signal(SIGSTOP);
  check_ended(*e, "node_down");
  node->proc->signal(SIGCONT);
}

TEST_CASE_FIXTURE(exec_node_fixture, "exec --node --timeout-ms: a remote stopped before the connect is node_down within the timeout") {
  node->proc->signal(SIGSTOP);  // the kernel still accepts the TCP connection; BASP never answers
  auto e = exec("ping", "1500");
  check_ended(*e, "node_down");
  node->proc->signal(SIGCONT);
}

TEST_CASE_FIXTURE(exec_node_fixture, "exec --node --timeout-ms: the remote's own command_timeout comes back as it is") {
  auto e = exec("fault_hang", "1000");
  check_ended(*e, "command_timeout");  // the remote's, or ours 0.5 s later: the same class
}

// Issue 26: the class once, in "class" (the message was "python_error:
// UnknownCommand: ..."); --compact: one line.
TEST_CASE_FIXTURE(exec_node_fixture, "exec --node --compact: one line, the error's class named once") {
  int code = -1;
  auto out = run_cli(loop, {"exec", "no_such_command", "--node", endpoint(), "--compact"}, &code);
  CHECK(code == 1);
  REQUIRE_MESSAGE(std::count(out.begin(), out.end(), '\n') == 1, out);
  auto r = json::parse(out, nullptr, false);
  REQUIRE_MESSAGE(r.is_object(), out);
  CHECK(r["error"]["class"] == "python_error");
  CHECK_MESSAGE(r["error"]["message"] == "UnknownCommand: unknown command 'no_such_command'", out);
  CHECK(r["error"]["python"]["type"] == "UnknownCommand");
}

} // TEST_SUITE
