// The real dspex binary: run + events + status + exec, SIGTERM, and a host
// killed by SIGKILL leaving no worker behind.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>
#include <dspex/bridge/python_process.hpp>

#include "support/cli_process.hpp"
#include "support/scratch_dir.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

struct cli_fixture {
  scratch_dir scratch{"cli"};  // first: removed after all that uses it
  bridge::io_loop loop;
  std::string dir = scratch.path();
  std::string config, events, sock;

  cli_fixture() {
    config = dir + "/tree.json";
    events = dir + "/events.jsonl";
    sock = dir + "/control.sock";
    ::unlink(events.c_str());
    auto out = run_cli(loop, {"config", "--default"});
    auto j = json::parse(out);
    j["root"]["children"][1]["size"] = 2;
    std::ofstream(config) << j.dump(2);
  }

  json status() {
    auto out = run_cli(loop, {"status", "--json", "--control", sock});
    return json::parse(out, nullptr, false);
  }

  std::unique_ptr<cli_process> start_node() {
    auto p = std::make_unique<cli_process>(
      loop, std::vector<std::string>{"run", config, "--events", events, "--control", sock});
    REQUIRE(wait_until([&] {
      auto s = status();
      return s.is_object() && s.contains("pools") && s["pools"]["default"]["workers"] == 2;
    }, 60s));
    return p;
  }
};

} // namespace

TEST_SUITE("cli") {

TEST_CASE_FIXTURE(cli_fixture, "config --check reports precise errors") {
  auto bad = dir + "/bad.json";
  std::ofstream(bad) << R"({"root": {"children": [{"id": "p", "type": "pool", "size": "two"}]}})";
  int code = 0;
  auto out = run_cli(loop, {"config", "--check", bad}, &code);
  CHECK(code == 2);
  CHECK(out.find("root.children[0].size") != std::string::npos);
  CHECK(run_cli(loop, {"config", "--check", config}, &code).find("ok") != std::string::npos);
  CHECK(code == 0);
}

TEST_CASE_FIXTURE(cli_fixture, "CAF's own options reach CAF") {
  int code = 0;
  auto out = run_cli(loop, {"run", "--demo", "--caf#scheduler.max-threads=abc"}, &code);
  CHECK(code == 2);
  CHECK(out.find("CAF configuration") != std::string::npos);
  auto ini = dir + "/caf.ini";
  std::ofstream(ini) << "[scheduler]\nmax-threads=1\n";
  out = run_cli(loop, {"run", config, "--demo", "--config-file=" + ini}, &code);
  CHECK(code == 0);
  CHECK(out.find("shut down cleanly") != std::string::npos);
}

TEST_CASE_FIXTURE(cli_fixture, "run + events + status + exec, then SIGTERM: exit 0 and nothing left") {
  auto node = start_node();
  auto st = status();
  auto pids = tree_os_pids(st["tree"], "/workers/");
  CHECK(pids.size() == 2);

  int code = 0;
  auto out = run_cli(loop, {"exec", "ping", "--session", "s1", "--control", sock}, &code);
  CHECK(code == 0);
  auto reply = json::parse(out, nullptr, false);
  REQUIRE(reply.is_object());
  CHECK(reply["ok"] == true);
  CHECK(reply["result"]["status"] == "ok");
  out = run_cli(loop, {"exec", "no_such_command", "--control", sock}, &code);
  CHECK(code == 1);
  CHECK(json::parse(out)["error"]["class"] == "python_error");
  CHECK(run_cli(loop, {"status", "--control", sock}).find("pool default") != std::string::npos);

  node->proc->signal(SIGTERM);
  REQUIRE(node->exited.wait(60s));
  CHECK(node->exited.get().clean());
  CHECK(wait_until([&] { return all_gone(pids); }, 10s));

  std::ifstream in(events);
  std::string line;
  bool saw_worker_start = false, saw_stop = false;
  while (std::getline(in, line)) {
    auto e = json::parse(line);
    CHECK(e.contains("ts"));
    CHECK(e.contains("event"));
    if (e["event"] == "child_started" && e["path"] == "root/pool_sup/workers/w1")
      saw_worker_start = e.contains("os_pid");
    if (e["event"] == "child_exited" && e["path"] == "root/pool_sup/workers/w2")
      saw_stop = e["reason"] == "shutdown";
  }
  CHECK(saw_worker_start);
  CHECK(saw_stop);
}

TEST_CASE_FIXTURE(cli_fixture, "a host killed by SIGKILL leaves no worker behind") {
  auto node = start_node();
  auto pids = tree_os_pids(status()["tree"], "/workers/");
  REQUIRE(pids.size() == 2);
  // Every process of this run, the fork server included, names it.
  auto marker = "--run-id h" + std::to_string(node->proc->pid()) + "-";
  auto of_run = [&] {
    std::vector<int> found;
    for (auto& e : std::filesystem::directory_iterator("/proc")) {
      auto name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos)
        continue;
      std::ifstream in(e.path() / "cmdline", std::ios::binary);
      std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      for (auto& c : s)
        c = c == '\0' ? ' ' : c;
      if (s.find(marker) != std::string::npos && !process_gone(std::stoi(name)))
        found.push_back(std::stoi(name));
    }
    return found;
  };
  CHECK(of_run().size() >= 2);
  node->proc->kill();
  REQUIRE(node->exited.wait(30s));
  // Parent-death signal and EOF: the workers die with their host, and so
  // does the fork server (and its workers with it).
  CHECK(wait_until([&] { return all_gone(pids); }, 5s));
  CHECK(wait_until([&] { return of_run().empty(); }, 5s));
}

TEST_CASE_FIXTURE(cli_fixture, "status shows the host calls in flight and their targets") {
  // Two pools loading the host-call handlers: default calls tools.
  std::ifstream default_config(config);
  auto j = json::parse(default_config);
  auto& pool = j["root"]["children"][1];
  pool["worker"]["handler_paths"] = json::array({std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"});
  pool["worker"]["handlers"] = json::array({"host_call_cmds", "stream_cmds"});
  auto tools = pool;
  tools["id"] = "tools_sup";
  tools["name"] = "tools";
  j["root"]["children"].push_back(tools);
  std::ofstream(config) << j.dump(2);
  auto node = start_node();
  const auto marker = dir + "/spin.marker";
  std::ofstream(marker).flush();
  auto marked = [&](const std::string& what) {
    std::ifstream in(marker);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()).find(what)
           != std::string::npos;
  };

  // A handler of default waits on pool:tools, whose handler spins.
  auto caller = std::make_unique<cli_process>(
    loop, std::vector<std::string>{"exec", "call",
                                   json{{"target", "pool:tools"}, {"command", "spin"},
                                        {"args", {{"marker", marker}}}}.dump(),
                                   "--timeout-ms", "30000", "--control", sock});
  REQUIRE(wait_until([&] { return marked("started"); }, 30s));
  auto out = run_cli(loop, {"status", "--control", sock});
  CHECK_MESSAGE(out.find("host calls: 1 in flight (pool:tools 1), 1 total\n") != std::string::npos, out);

  // The client goes: its request is cancelled, and with it the call.
  caller->proc->kill();
  REQUIRE(caller->exited.wait(30s));
  REQUIRE(wait_until([&] { return marked("finally"); }, 30s));
  REQUIRE(wait_until([&] { return status()["host_calls"]["in_flight"] == 0; }, 30s));
  out = run_cli(loop, {"status", "--control", sock});
  CHECK_MESSAGE(out.find("host calls: 0 in flight, 1 total\n") != std::string::npos, out);

  node->proc->signal(SIGTERM);
  REQUIRE(node->exited.wait(60s));
  CHECK(node->exited.get().clean());
}

} // TEST_SUITE
