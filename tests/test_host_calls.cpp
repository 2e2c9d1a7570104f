// Host calls (protocol 3): a handler's ctx.call reaches another pool, the
// same pool (another worker), a C++ function registered on the node, with
// its session, under its deadline and the nesting limit; callee and caller
// crashes and cancellation, against a real node with real workers
// (tests/handlers/host_call_cmds.py, stream_cmds.py).
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>
#include <dspex/actors/remote/network.hpp>
#include <dspex/cli/control.hpp>

#include "support/cli_process.hpp"
#include "support/loopback.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/marker_file.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"

#include <caf/all.hpp>

#include <csignal>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

// Two pools, "default" (the agents) and "tools", both with the test handlers.
json two_pools(int agents = 2, int max_call_depth = 8) {
  auto j = small_tree("pool", agents);
  j["max_call_depth"] = max_call_depth;
  auto& agent = j["root"]["children"][1];
  auto& w = agent["worker"];
  w["handler_paths"] = json::array({std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"});
  w["handlers"] = json::array({"host_call_cmds", "stream_cmds"});
  auto tools = agent;
  tools["id"] = "tools_sup";
  tools["name"] = "tools";
  tools["size"] = 2;
  j["root"]["children"].push_back(tools);
  return j;
}

struct host_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<node> n;
  void start(const json& j) { n = start_test_node(sys, j); }
  ~host_fixture() {
    if (n)
      n->stop();
  }
  json run(const std::string& cmd, json args, std::optional<std::string> session = std::nullopt) {
    return run_on(*n, cmd, std::move(args), std::move(session));
  }
  static json run_on(node& on, const std::string& cmd, json args, std::optional<std::string> session) {
    auto r = on.execute(cmd, std::move(args), std::move(session), 20s);
    REQUIRE_MESSAGE(r, why(r));
    return *r;
  }
};


json host_calls(node& n) { return n.status()["host_calls"]; }

// The calling node here, its pool `far` a remote_pool naming the pool of a
// second real `dspex run` on loopback; both load the test handlers.
struct remote_host_fixture {
  bridge::io_loop loop;
  int port = free_port();
  std::string dir;
  std::unique_ptr<cli_process> b;
  test::system_config cfg;
  std::unique_ptr<caf::actor_system> net_sys;
  std::shared_ptr<node> n;

  remote_host_fixture() {
    char tmpl[] = "/tmp/dspex-hc-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    auto bj = two_pools(1);
    bj["listen"] = "127.0.0.1:" + std::to_string(port);
    std::ofstream(dir + "/b.json") << bj.dump(2);
    b = std::make_unique<cli_process>(loop, std::vector<std::string>{"run", dir + "/b.json", "--control",
                                                                     dir + "/b.sock"});
    REQUIRE_MESSAGE(wait_until([&] { return remote_pool_status().value("idle", 0) >= 1; }, 60s), b->output());
    auto aj = two_pools(1);
    aj["heartbeat_interval_ms"] = 250;
    aj["connection_timeout_ms"] = 4000;
    aj["root"]["children"].push_back({{"id", "far"}, {"type", "remote_pool"}, {"host", "127.0.0.1"},
                                      {"port", port}, {"connect_timeout_ms", 3000},
                                      {"reconnect_min_ms", 50}, {"reconnect_max_ms", 400}});
    auto tree = parse_config(aj);
    REQUIRE_MESSAGE(tree, why(tree));
    REQUIRE_FALSE(network_settings(cfg, *tree));
    net_sys = std::make_unique<caf::actor_system>(cfg);
    n = start_test_node(*net_sys, aj);
    REQUIRE(wait_until([&] { return n->status()["remotes"]["far"].value("state", "") == "connected"; }));
  }
  ~remote_host_fixture() {
    if (n)
      n->stop();
    n.reset();
    net_sys.reset();
    b->stop();
    std::system(("rm -rf " + dir).c_str());
  }
  json run(const std::string& cmd, json args, std::optional<std::string> session = std::nullopt) {
    return host_fixture::run_on(*n, cmd, std::move(args), std::move(session));
  }
  json remote_pool_status() {
    auto s = cli::control_call(dir + "/b.sock", {{"op", "status"}}, 30s);
    return s.contains("pools") ? s["pools"]["default"] : json::object();
  }
};

} // namespace

TEST_SUITE("host calls") {

TEST_CASE_FIXTURE(host_fixture, "a handler calls another pool, in its own session unless told") {
  start(two_pools());
  CHECK(run("call", {{"target", "pool:tools"}, {"command", "echo"}, {"args", {{"x", 1}}}})
        == json{{"ok", {{"x", 1}}}});
  CHECK(run("acall", {{"target", "pool:tools"}, {"command", "echo"}, {"args", {{"y", 2}}}})
        == json{{"ok", {{"y", 2}}}});
  CHECK(run("call", {{"target", "pool:tools"}, {"command", "session_of"}}, std::string("s9"))
        == json{{"ok", "s9"}});
  auto st = host_calls(*n);
  CHECK(st["total"] == 3);
  CHECK(st["in_flight"] == 0);
}

TEST_CASE_FIXTURE(host_fixture, "registered C++ functions, asynchronous and blocking") {
  start(two_pools());
  REQUIRE_FALSE(n->register_function("add", [](json args, const host_call_info& info, host_reply reply) {
    // Answered later, from another thread.
    std::thread([args, reply, s = info.session] {
      reply(json{{"sum", args["a"].get<int>() + args["b"].get<int>()}, {"session", s ? *s : "-"}});
    }).detach();
  }));
  REQUIRE_FALSE(n->register_blocking_function("slow", [](const json& args, const host_call_info& info) {
    std::this_thread::sleep_for(50ms);
    if (args.contains("fail"))
      return caf::expected<json>(make_error(errc::invalid_request, "slow: told to fail"));
    if (args.contains("throw"))
      throw std::runtime_error("slow: threw");
    return caf::expected<json>(json{{"depth", info.depth}, {"worker", info.worker}});
  }));
  CHECK(is(n->register_function("add", [](json, const host_call_info&, host_reply) {}),
           errc::invalid_request));  // taken
  auto r = run("call", {{"target", "fn:add"}, {"command", "add"}, {"args", {{"a", 2}, {"b", 3}}}},
               std::string("s1"));
  CHECK(r["ok"] == json{{"sum", 5}, {"session", "s1"}});
  r = run("call", {{"target", "fn:slow"}, {"command", "slow"}});
  CHECK(r["ok"]["depth"] == 1);
  CHECK(r["ok"]["worker"].get<std::string>().size() > 0);
  r = run("call", {{"target", "fn:slow"}, {"command", "slow"}, {"args", {{"fail", true}}}});
  CHECK(r["error"] == "invalid_request");
  CHECK(r["message"] == "slow: told to fail");
  r = run("call", {{"target", "fn:slow"}, {"command", "slow"}, {"args", {{"throw", true}}}});
  CHECK(r["error"] == "host_error");
  n->unregister_function("add");
  r = run("call", {{"target", "fn:add"}, {"command", "add"}, {"args", {{"a", 1}, {"b", 1}}}});
  CHECK(r["error"] == "invalid_request");
}

TEST_CASE_FIXTURE(host_fixture, "a call to its own pool: another worker, or a classified error") {
  start(two_pools(2));
  CHECK(run("call", {{"target", "pool:default"}, {"command", "echo"}, {"args", {{"z", 3}}}})
        == json{{"ok", {{"z", 3}}}});
  // One worker: the call waits for a worker that can only come free when
  // the call ends, and ends at its own timeout instead of hanging.
  n->stop();
  n.reset();
  start(two_pools(1));
  auto r = run("call", {{"target", "pool:default"}, {"command", "echo"}, {"timeout", 0.5}});
  REQUIRE(r.contains("error"));
  CHECK((r["error"] == "command_timeout" || r["error"] == "checkout_timeout"));
}

TEST_CASE_FIXTURE(host_fixture, "nested calls up to max_call_depth, then refused") {
  start(two_pools(4, 3));
  // depth 1 calls depth 2 calls depth 3: the bottom.
  CHECK(run("nest", {{"n", 3}, {"pool", "default"}}) == json{{"bottom", true}});
  // The fourth call is refused; the error comes back up as the result.
  auto r = run("nest", {{"n", 4}, {"pool", "default"}});
  CHECK(r["error"] == "invalid_request");
  CHECK(r["message"].get<std::string>().find("max_call_depth") != std::string::npos);
}

TEST_CASE_FIXTURE(host_fixture, "bad targets are classified and the handler goes on") {
  start(two_pools());
  auto r = run("twice", {{"first", "pool:nope"}, {"second", "pool:tools"}, {"command", "echo"}});
  CHECK(r[0]["error"] == "invalid_request");
  CHECK(r[1]["ok"] == json::object());
  r = run("twice", {{"first", "fn:nope"}, {"second", "pool:tools"}, {"command", "echo"}});
  CHECK(r[0]["error"] == "invalid_request");
  CHECK(r[1].contains("ok"));
}

TEST_CASE_FIXTURE(host_fixture, "the callee's worker dies: worker_crashed, and the handler goes on") {
  start(two_pools());
  auto r = run("twice", {{"first", "pool:tools"}, {"second", "pool:tools"}, {"command", "fault_exit"},
                         {"args", {{"code", 3}}}});
  CHECK(r[0]["error"] == "worker_crashed");
  CHECK(r[1]["error"] == "worker_crashed");
  CHECK(run("call", {{"target", "pool:tools"}, {"command", "echo"}}) == json{{"ok", json::object()}});
}

TEST_CASE_FIXTURE(host_fixture, "a cancelled request cancels its calls; a dead caller leaks nothing") {
  start(two_pools());
  marker_file marker;
  std::promise<caf::expected<json>> p;
  auto h = n->call("call", {{"target", "pool:tools"}, {"command", "spin"}, {"args", {{"marker", marker.path}}}},
                   {}, [&p](caf::expected<json> r) { p.set_value(std::move(r)); });
  REQUIRE(marker.await("started"));
  h.cancel();
  auto r = p.get_future().get();
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::cancelled));
  // The tool's handler was cancelled in turn.
  REQUIRE(marker.await("finally"));
  REQUIRE(wait_until([&] { return host_calls(*n)["in_flight"] == 0; }));

  // The calling worker is killed while its call waits on a function that
  // answers late: the answer is dropped, nothing stays in flight.
  std::promise<host_reply> held;
  REQUIRE_FALSE(n->register_function("late", [&held](json, const host_call_info&, host_reply reply) {
    held.set_value(std::move(reply));
  }));
  auto f = n->call("call", {{"target", "fn:late"}, {"command", "late"}});
  auto reply = held.get_future().get();
  // Which worker is busy: kill every worker of the agents pool.
  for (auto pid : tree_os_pids(n->status()["tree"], "/pool_sup/workers/"))
    ::kill(pid, SIGKILL);
  auto killed = f.get();
  REQUIRE_FALSE(killed);
  CHECK(is(killed.error(), errc::worker_crashed));
  reply(json{{"too", "late"}});  // goes nowhere
  REQUIRE(wait_until([&] { return host_calls(*n)["in_flight"] == 0; }));
  CHECK(run("call", {{"target", "pool:tools"}, {"command", "echo"}}) == json{{"ok", json::object()}});
}

TEST_CASE_FIXTURE(remote_host_fixture, "a call to a remote_pool runs on the other node, in the caller's session") {
  CHECK(run("call", {{"target", "pool:far"}, {"command", "echo"}, {"args", {{"x", 1}}}})
        == json{{"ok", {{"x", 1}}}});
  CHECK(run("acall", {{"target", "pool:far"}, {"command", "session_of"}}, std::string("s5"))
        == json{{"ok", "s5"}});
  CHECK(remote_pool_status()["requests"].value("ok", 0) >= 2);  // served there
  // Nested across the nodes: far's handler calls its own node's tools.
  CHECK(run("call", {{"target", "pool:far"}, {"command", "call"},
                     {"args", {{"target", "pool:tools"}, {"command", "session_of"}}}}, std::string("s6"))
        == json{{"ok", {{"ok", "s6"}}}});
  CHECK(host_calls(*n)["in_flight"] == 0);

  // The other node goes: node_down, and the handler goes on.
  b->stop();
  REQUIRE(wait_until([&] { return n->status()["remotes"]["far"].value("state", "") != "connected"; }));
  auto r = run("twice", {{"first", "pool:far"}, {"second", "pool:tools"}, {"command", "echo"}});
  CHECK(r[0]["error"] == "node_down");
  CHECK(r[1] == json{{"ok", json::object()}});
  CHECK(host_calls(*n)["in_flight"] == 0);
}

} // TEST_SUITE
