// A whole tree from config, with every node type, through the embedding API.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>

#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <csignal>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

// Worker pids: every os_pid of the tree but a pool's fork server (no worker).
std::vector<int> worker_pids(const json& tree) {
  auto all = tree_os_pids(tree);
  auto forkers = tree_os_pids(tree, "/fork_server");
  std::vector<int> out;
  for (auto p : all)
    if (std::find(forkers.begin(), forkers.end(), p) == forkers.end())
      out.push_back(p);
  return out;
}

} // namespace

TEST_CASE("tree_os_pids: live processes only, of the paths asked for; a malformed node is skipped") {
  auto tree = json::parse(R"({"path": "/root", "children": [
    {"path": "/root/pool/workers/a", "os_pid": 41},
    {"path": "/root/pool/workers/b", "os_pid": -1},
    {"path": "/root/pool/workers/c", "os_pid": null},
    {"path": "/root/pool/workers/d", "os_pid": "42"},
    {"path": 7, "os_pid": 43},
    {"path": "/root/pool/fork_server", "os_pid": 44, "children": {"not": "an array"}},
    "not a node",
    {"path": "/root/other", "children": [{"path": "/root/other/workers/e", "os_pid": 45}]}]})");
  CHECK(tree_os_pids(tree) == std::vector<int>{41, 43, 44, 45});
  CHECK(tree_os_pids(tree, "/workers/") == std::vector<int>{41, 45});
  CHECK(tree_os_pids(json()).empty());
}

namespace {

struct node_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  node_options opts;
  node_fixture() { opts.python_path = DSPEX_TEST_PYTHON_DIR; }

  std::shared_ptr<node> start(const json& j) { return start_test_node(sys, j, opts); }
};

} // namespace

TEST_SUITE("node") {

TEST_CASE_FIXTURE(node_fixture, "a tree with every node type starts, serves, reports and stops cleanly") {
  auto j = small_tree();
  j["root"]["children"].push_back(
    {{"id", "extra"},
     {"type", "supervisor"},
     {"strategy", "one_for_all"},
     {"children",
      json::array({{{"id", "solo"}, {"type", "worker"}, {"fault_injection", true}},
                   {{"id", "sleeper"}, {"type", "process"}, {"command", {"sleep", "60"}},
                    {"shutdown", 3000}}})}});
  auto n = start(j);
  auto st = n->status();
  auto pids = worker_pids(st["tree"]);
  CHECK(pids.size() == 4);  // 2 pool workers, solo, sleeper
  CHECK(st["pools"]["default"]["workers"] == 2);
  auto kids = st["tree"]["children"];
  REQUIRE(kids.size() == 4);
  CHECK(kids[0]["id"] == "sessions");
  CHECK(kids[3]["children"][0]["id"] == "solo");
  CHECK(kids[3]["children"][1].contains("os_pid"));

  auto r = n->execute_in_session("s1", "ping");
  REQUIRE(r);
  CHECK((*r)["status"] == "ok");
  // The monitor's snapshot: pool metrics and every worker's stats.
  REQUIRE(wait_until([&] {
    auto m = n->status()["monitor"];
    return m.is_object() && m["pools"].contains("default")
           && m["pools"]["default"]["worker_stats"].size() == 2;
  }, 10s));
  auto mon = n->status()["monitor"];
  CHECK(mon["pools"]["default"]["worker_stats"]["w1"]["health"] == "healthy");
  CHECK(mon["history"].size() >= 1);
  n->stop();
  CHECK(wait_until([&] { return all_gone(pids); }, 10s));
  auto after = n->execute_anonymous("ping");
  REQUIRE_FALSE(after);
  CHECK(is(after.error(), errc::shutting_down));
}

TEST_CASE_FIXTURE(node_fixture, "sessions: duplicates refused, end and TTL sweep clean up") {
  auto j = small_tree();
  j["root"]["children"][0]["ttl_ms"] = 200;
  j["root"]["children"][0]["sweep_interval_ms"] = 50;
  auto n = start(j);
  CHECK_FALSE(n->create_session("a"));
  auto dup = n->create_session("a");
  CHECK(is(dup, errc::duplicate_session));
  CHECK(is(n->end_session("nope"), errc::unknown_session));
  REQUIRE(n->execute_in_session("b", "configure_lm", json{{"provider", "mock"}}));
  REQUIRE(n->execute_in_session("b", "create_program", json{{"id", "p"}, {"signature", "q -> a"}}));
  auto listed = n->execute_in_session("b", "list_programs");
  REQUIRE(listed);
  CHECK((*listed)["total_count"] == 1);
  // Idle sessions expire; the workers drop their programs.
  REQUIRE(wait_until([&] { return n->status()["sessions"]["expired"].get<int>() >= 2; }, 10s));
  CHECK(wait_until([&] {
    int total = 0;
    for (int i = 0; i < 2; ++i) {  // ask both workers (lifo: ask twice concurrently is not needed)
      auto l = n->execute_in_session("b", "list_programs");
      total += l ? (*l)["total_count"].get<int>() : 1;
    }
    return total == 0;
  }, 10s));
}

TEST_CASE_FIXTURE(node_fixture, "disabled mode starts no Python and answers unavailable") {
  auto n = start(small_tree("disabled"));
  auto r = n->execute_anonymous("ping");
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::unavailable));
  auto pids = worker_pids(n->status()["tree"]);
  CHECK(pids.empty());
}

TEST_CASE_FIXTURE(node_fixture, "single mode runs one worker in place of the pool") {
  auto n = start(small_tree("single"));
  auto r = n->execute_anonymous("ping");
  REQUIRE(r);
  CHECK((*r)["mode"] == "single");
  auto pids = worker_pids(n->status()["tree"]);
  CHECK(pids.size() == 1);
}

TEST_CASE_FIXTURE(node_fixture, "auto mode: pool when python works, disabled with a reason when not") {
  {
    auto n = start(small_tree("auto"));
    CHECK(n->mode() == bridge_mode::pool);
    CHECK(n->execute_anonymous("ping"));
  }
  auto j = small_tree("auto");
  j["root"]["children"][1]["worker"]["python"] = "/nonexistent/python3";
  auto n = start(j);
  CHECK(n->mode() == bridge_mode::disabled);
  CHECK(n->mode_message().find("cannot start") != std::string::npos);
}

TEST_CASE_FIXTURE(node_fixture, "a crash loop escalates: the pool supervisor gives up and root restarts it") {
  auto j = small_tree();
  j["root"]["children"][1]["size"] = 1;
  j["root"]["children"][1]["worker_intensity"] = 1;
  auto n = start(j);
  auto first = worker_pids(n->status()["tree"]);
  REQUIRE(first.size() == 1);
  // Two kills in a row exceed the worker supervisor's intensity (1 in 5 s).
  ::kill(first[0], SIGKILL);
  REQUIRE(wait_until([&] {
    auto p = worker_pids(n->status()["tree"]);
    return p.size() == 1 && p[0] != first[0];
  }, 10s));
  auto second = worker_pids(n->status()["tree"]);
  ::kill(second[0], SIGKILL);
  // The workers supervisor escalates; pool_sup restarts it (rest_for_one).
  REQUIRE(wait_until([&] {
    auto st = n->status();
    auto& pool_sup = st["tree"]["children"][1];
    return pool_sup["restarts"].get<int>() + pool_sup["children"].back()["restarts"].get<int>() >= 1
           && st["pools"]["default"]["workers"] == 1;
  }, 15s));
  CHECK(n->execute_anonymous("ping"));
}

} // TEST_SUITE
