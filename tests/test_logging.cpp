// dspex run's stderr log: one logfmt line per supervision event at a level
// that says how bad it is, --log-level and config log_level, and Python
// workers' own stderr lines still under their label.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>

#include "support/cli_process.hpp"
#include "support/scratch_dir.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <sys/stat.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

struct log_fixture {
  scratch_dir scratch{"logging"};  // first: removed after all that uses it
  bridge::io_loop loop;
  std::string dir = scratch.path(), sock;
  json cfg;

  log_fixture() {
    sock = dir + "/control.sock";
    cfg = json::parse(run_cli(loop, {"config", "--default"}));
    cfg["root"]["children"][1]["size"] = 2;
    cfg["root"]["children"][1]["worker"]["fault_injection"] = true;
  }

  std::string write_config(const json& j) {
    auto path = dir + "/tree.json";
    std::ofstream(path) << j.dump(2);
    return path;
  }

  std::unique_ptr<cli_process> start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"run", write_config(cfg), "--control", sock};
    args.insert(args.end(), extra.begin(), extra.end());
    auto p = std::make_unique<cli_process>(loop, args);
    REQUIRE(wait_until([&] {
      return !p->line_with("dspex: running").empty() || p->exited.count() > 0;
    }, 60s));
    INFO(p->output());
    REQUIRE(!p->line_with("dspex: running").empty());
    return p;
  }

  void stop(cli_process& p) {
    p.proc->signal(SIGTERM);
    REQUIRE(p.exited.wait(60s));
    CHECK(p.exited.get().clean());
  }

  std::vector<int> worker_pids() {
    auto st = json::parse(run_cli(loop, {"status", "--json", "--control", sock}), nullptr, false);
    return st.is_object() ? tree_os_pids(st["tree"], "/workers/") : std::vector<int>{};
  }
};

} // namespace

TEST_SUITE("logging") {

TEST_CASE_FIXTURE(log_fixture, "default level info: crashes and restarts logged, starts not; worker lines keep their label") {
  auto node = start();
  int code = 0;
  run_cli(loop, {"exec", "fault_print", R"({"text": "hello from python"})", "--control", sock}, &code);
  CHECK(code == 0);
  // The worker's print() reaches dspex's stderr as "[wN] hello from python".
  CHECK(wait_until([&] {
    auto l = node->line_with("hello from python");
    return l.rfind("[w", 0) == 0 && l.find("] hello from python") != std::string::npos;
  }, 30s));

  auto pids = worker_pids();
  REQUIRE(!pids.empty());
  ::kill(pids.front(), SIGKILL);
  auto pid = std::to_string(pids.front());
  CHECK(wait_until([&] {
    return !node->line_with("level=warning event=child_restarted path=root/pool_sup/workers/").empty();
  }, 30s));
  auto crash = node->line_with("event=child_exited path=root/pool_sup/workers/");
  INFO(node->output());
  CHECK(crash.rfind("ts=", 0) == 0);
  CHECK(crash.find("level=error") != std::string::npos);
  CHECK(crash.find("os_pid=" + pid + " reason=crash signal=SIGKILL") != std::string::npos);
  CHECK(node->line_with("event=child_started").empty());

  stop(*node);
  CHECK(!node->line_with("level=info event=supervisor_stopped path=root reason=shutdown").empty());
}

TEST_CASE_FIXTURE(log_fixture, "--log-level debug shows starts; config log_level off shows nothing") {
  auto node = start({"--log-level", "debug"});
  auto pids = worker_pids();
  REQUIRE(!pids.empty());
  auto started = node->line_with("level=debug event=child_started path=root/pool_sup/workers/w");
  INFO(node->output());
  CHECK(started.find("os_pid=") != std::string::npos);
  stop(*node);

  cfg["log_level"] = "off";
  node = start();
  pids = worker_pids();
  REQUIRE(!pids.empty());
  ::kill(pids.front(), SIGKILL);
  CHECK(wait_until([&] { return worker_pids().size() == 2 && worker_pids() != pids; }, 30s));
  stop(*node);
  INFO(node->output());
  CHECK(node->line_with("level=").empty());
}

TEST_CASE_FIXTURE(log_fixture, "unknown levels are refused, naming where") {
  int code = 0;
  auto out = run_cli(loop, {"run", write_config(cfg), "--control", sock, "--log-level", "loud"}, &code);
  CHECK(code == 2);
  CHECK(out.find("--log-level") != std::string::npos);
  cfg["log_level"] = "loud";
  out = run_cli(loop, {"config", "--check", write_config(cfg)}, &code);
  CHECK(code == 2);
  CHECK(out.find("config.log_level: expected one of trace") != std::string::npos);
}

} // TEST_SUITE
