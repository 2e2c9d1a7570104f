// Contained process trees (bridge/process_scope.hpp): what a handler starts
// in a new session, by fork + setsid() + fork or by
// Popen(start_new_session=True), is gone once its worker is replaced, once
// the node stops, and after a host killed by SIGKILL once the next
// `dspex run` has reaped the leftovers of the dead run.
#include <doctest/doctest.h>

#include <dspex/bridge/host_run.hpp>
#include <dspex/bridge/process_scope.hpp>

#include "support/cli_process.hpp"
#include "support/pool_fixture.hpp"
#include "support/scratch_dir.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

// The escapers a test started, SIGKILLed at its end whatever it found (a
// failed check must not leave them running).
struct escapers {
  std::vector<int> pids;
  void add(const json& r) {
    pids.push_back(r["forked"].get<int>());
    pids.push_back(r["popen"].get<int>());
  }
  bool alive() const {
    for (auto p : pids)
      if (process_gone(p))
        return false;
    return true;
  }
  ~escapers() {
    for (auto p : pids)
      if (!process_gone(p))
        ::kill(p, SIGKILL);
  }
};

struct tree_fixture : pool_fixture {
  escapers started;

  void start_pool(std::uint64_t max_requests = 0) {
    auto c = test_pool_config(1);
    c.worker.handler_paths = {std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"};
    c.worker.handler_modules = {"limit_cmds"};
    c.recycle.max_requests = max_requests;
    c.recycle.jitter = 0;
    REQUIRE_FALSE(start(std::move(c)));
    REQUIRE_FALSE(await_pool_ready());
  }

  json escape() {
    auto r = exec(pool(), "escape");
    REQUIRE_MESSAGE(r, why(r));
    started.add(*r);
    // Both left the worker's session: setsid() / start_new_session.
    for (auto p : {(*r)["forked"].get<int>(), (*r)["popen"].get<int>()}) {
      CHECK(::getsid(p) != ::getsid((*r)["pid"].get<int>()));
      CHECK_FALSE(process_gone(p));
    }
    return *r;
  }
};

} // namespace

TEST_SUITE("contained_trees") {

TEST_CASE("a scope is fixed-width, names its run, and is found in the environment of what carries it") {
  auto a = bridge::new_scope(), b = bridge::new_scope();
  CHECK(a != b);
  CHECK(a.size() == b.size());
  CHECK(bridge::run_of_scope(a) == bridge::host_run_id());
  CHECK(bridge::scope_of(::getpid()).empty() == (std::getenv(bridge::scope_variable) == nullptr));
  CHECK(bridge::sweep_scope("") == 0);
}

TEST_CASE_FIXTURE(tree_fixture, "escapers are gone after their worker is recycled, and after it crashes") {
  start_pool(2);  // the second request retires it
  auto r = escape();
  auto first = r["pid"].get<int>();
  CHECK(exec(pool(), "ping"));
  REQUIRE(wait_until([&] { return status()["replaced"]["recycled_requests"] == 1; }));
  CHECK(wait_until([&] { return process_gone(first); }));
  CHECK(wait_until([&] { return all_gone(started.pids); }, 10s));
  // A worker that dies on its own (a crash) takes them along too.
  r = escape();
  CHECK_FALSE(exec(pool(), "fault_exit", {{"code", 7}}));
  CHECK(wait_until([&] { return process_gone(r["pid"].get<int>()); }));
  CHECK(wait_until([&] { return all_gone(started.pids); }, 10s));
}

TEST_CASE_FIXTURE(tree_fixture, "escapers are gone after the node stops") {
  start_pool();
  escape();
  escape();
  stop();
  CHECK(wait_until([&] { return all_gone(started.pids); }, 10s));
}

TEST_CASE("escapers of a host killed by SIGKILL are gone once the next dspex run reaped its leftovers") {
  scratch_dir scratch("contained");
  bridge::io_loop loop;
  const std::string& dir = scratch.path();
  auto config = dir + "/tree.json", sock = dir + "/control.sock";
  auto j = json::parse(run_cli(loop, {"config", "--default"}));
  auto& w = j["root"]["children"][1]["worker"];
  j["root"]["children"][1]["size"] = 1;
  w["handler_paths"] = json::array({std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"});
  w["handlers"] = json::array({"limit_cmds"});
  std::ofstream(config) << j.dump(2);
  auto start_node = [&] {
    auto p = std::make_unique<cli_process>(
      loop, std::vector<std::string>{"run", config, "--control", sock});
    REQUIRE(wait_until([&] {
      auto s = json::parse(run_cli(loop, {"status", "--json", "--control", sock}), nullptr, false);
      return s.is_object() && s.contains("pools") && s["pools"]["default"]["idle"] == 1;
    }, 60s));
    return p;
  };
  escapers started;
  auto node = start_node();
  for (int i = 0; i < 2; ++i) {
    int code = 0;
    auto out = run_cli(loop, {"exec", "escape", "--control", sock}, &code);
    REQUIRE_MESSAGE(code == 0, out);
    started.add(json::parse(out)["result"]);
  }
  CHECK(started.alive());
  node->proc->kill();
  REQUIRE(node->exited.wait(30s));
  // Nobody swept: in new sessions, they outlive the host and its workers,
  // until any new run on this machine reaps the dead run's leftovers (a
  // test running beside this one may start one first: that is no failure).
  std::this_thread::sleep_for(200ms);
  if (!started.alive())
    MESSAGE("another dspex run reaped them first");
  // The next run finds them by their scope, which names the dead run.
  auto next = start_node();
  CHECK(wait_until([&] { return all_gone(started.pids); }, 10s));
  next->stop();
  CHECK(next->exited.get().clean());
}

} // TEST_SUITE
