// pool_group: one name over local pools and remote_pools. Real workers
// throughout; the remote member is a real `dspex run` on loopback, killed
// with SIGKILL under load. Nothing asserts wall-clock time.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/remote/network.hpp>
#include <dspex/cli/control.hpp>
#include <dspex/metrics/node_metrics.hpp>

#include "support/cli_process.hpp"
#include "support/loopback.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <vector>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

/// A second pool like the default one, named `name`.
json pool_named(const json& like, const std::string& name) {
  auto p = like;
  p["id"] = name + "_sup";
  p["name"] = name;
  return p;
}

json group(const std::string& name, std::vector<std::string> members, json extra = json::object()) {
  json g = {{"id", name}, {"type", "pool_group"}, {"members", members}, {"health_interval_ms", 50}};
  g.update(extra);
  return g;
}

std::string config_error(const json& j) {
  auto c = parse_config(j);
  return c ? std::string() : detail_of(c.error());
}

/// The sample of family `name` labelled member=`member`; -1 when none.
double member_sample(const std::vector<prometheus::MetricFamily>& fams, const std::string& name,
                     const std::string& member) {
  for (auto& f : fams)
    if (f.name == name)
      for (auto& m : f.metric)
        for (auto& l : m.label)
          if (l.name == "member" && l.value == member)
            return f.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
  return -1;
}

call_options on(const std::string& pool, std::optional<std::string> session = std::nullopt) {
  return call_options{pool, std::move(session), 0ms};
}

struct caf_node {
  test::system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<node> n;

  explicit caf_node(const json& j) {
    auto tree = parse_config(j);
    REQUIRE_MESSAGE(tree, why(tree));
    REQUIRE_FALSE(network_settings(cfg, *tree));
    sys = std::make_unique<caf::actor_system>(cfg);
    n = start_test_node(*sys, j);
  }
  ~caf_node() {
    if (n)
      n->stop();
    n.reset();
    sys.reset();
  }
  json member(const std::string& g, std::size_t i) { return n->status()["groups"][g]["members"][i]; }
};

} // namespace

TEST_SUITE("pool group") {

TEST_CASE("pool_group config: members must be pools or remote_pools of the tree, each once") {
  auto base = small_tree("pool", 1);
  auto& kids = base["root"]["children"];
  kids.push_back(pool_named(kids[1], "second"));

  auto ok = base;
  ok["root"]["children"].push_back(group("both", {"default", "second"}, {{"idempotent", {"fault_sleep"}}}));
  CHECK(config_error(ok).empty());

  auto unknown = base;
  unknown["root"]["children"].push_back(group("g", {"default", "nowhere"}));
  CHECK(config_error(unknown).find("members[1]: no pool or remote_pool named \"nowhere\"") != std::string::npos);

  auto twice = base;
  twice["root"]["children"].push_back(group("g", {"default", "default"}));
  CHECK(config_error(twice).find("is a member twice") != std::string::npos);

  auto nested = base;
  nested["root"]["children"].push_back(group("g1", {"default"}));
  nested["root"]["children"].push_back(group("g2", {"g1", "second"}));
  CHECK(config_error(nested).find("\"g1\" is a pool_group") != std::string::npos);

  auto empty = base;
  empty["root"]["children"].push_back(group("g", {}));
  CHECK(config_error(empty).find("members") != std::string::npos);

  auto clash = base;
  clash["root"]["children"].push_back(group("second", {"default"}));
  CHECK(config_error(clash).find("duplicate pool name \"second\"") != std::string::npos);

  auto bad_type = base;
  bad_type["root"]["children"].push_back(group("g", {"default"}, {{"members", "default"}}));
  CHECK(config_error(bad_type).find("an array of strings") != std::string::npos);
}

TEST_CASE("a group over two local pools spreads requests, keeps a session on one member, and skips a member that is down") {
  auto j = small_tree("pool", 1);
  auto& kids = j["root"]["children"];
  kids.push_back(pool_named(kids[1], "second"));
  // A remote member nobody listens for: down from the start, never routed to.
  kids.push_back({{"id", "nowhere"}, {"type", "remote_pool"}, {"host", "127.0.0.1"},
                  {"port", free_port()}, {"connect_timeout_ms", 500}, {"reconnect_min_ms", 50},
                  {"reconnect_max_ms", 200}});
  kids.push_back(group("all", {"default", "second", "nowhere"}));
  caf_node c(j);
  auto& n = c.n;
  REQUIRE(wait_until([&] { return c.member("all", 2).value("state", "") == "down"; }));

  // Concurrent requests: both local members take some, the dead one none.
  std::vector<std::future<caf::expected<json>>> calls;
  for (int i = 0; i < 40; ++i)
    calls.push_back(n->call("fault_sleep", {{"seconds", 0.01}}, on("all")));
  for (auto& f : calls) {
    auto r = f.get();
    REQUIRE_MESSAGE(r, why(r));
  }
  auto s = n->status()["groups"]["all"];
  CHECK(s["type"] == "pool_group");
  CHECK(s["members"][0]["routed"].get<int>() > 0);
  CHECK(s["members"][1]["routed"].get<int>() > 0);
  CHECK(s["members"][0]["routed"].get<int>() + s["members"][1]["routed"].get<int>() == 40);
  CHECK(s["members"][2]["routed"] == 0);
  CHECK(s["members"][2]["why"].get<std::string>().find("remote node") != std::string::npos);
  CHECK(s["in_flight"] == 0);
  auto fams = metrics::node_families(n->status());
  CHECK(member_sample(fams, "dspex_group_member_up", "default") == 1);
  CHECK(member_sample(fams, "dspex_group_member_up", "nowhere") == 0);
  CHECK(member_sample(fams, "dspex_group_routed_total", "default") == s["members"][0]["routed"].get<double>());
  CHECK(member_sample(fams, "dspex_group_member_in_flight", "second") == 0);

  // A session sticks to the member its first request went to.
  REQUIRE_FALSE(n->create_session("s1"));
  std::set<int> pids;
  for (int i = 0; i < 6; ++i) {
    auto r = n->call("ping", json::object(), on("all", "s1")).get();
    REQUIRE_MESSAGE(r, why(r));
    pids.insert((*r)["pid"].get<int>());
  }
  CHECK(pids.size() == 1);
  CHECK(n->status()["groups"]["all"]["sessions"] == 1);
}

TEST_CASE("a group with a remote member: the remote node SIGKILLed under load; idempotent requests are retried, the rest get node_down, the survivor serves") {
  bridge::io_loop loop;
  char tmpl[] = "/tmp/dspex-pg-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl, b_cfg = dir + "/b.json", b_sock = dir + "/b.sock";
  const int port = free_port();
  auto bj = small_tree("pool", 2);
  bj["heartbeat_interval_ms"] = 250;
  bj["connection_timeout_ms"] = 4000;
  bj["listen"] = "127.0.0.1:" + std::to_string(port);
  std::ofstream(b_cfg) << bj.dump(2);
  cli_process b(loop, {"run", b_cfg, "--control", b_sock});
  REQUIRE_MESSAGE(wait_until([&] {
    auto s = cli::control_call(b_sock, {{"op", "status"}}, 30s);
    return s.contains("pools") && s["pools"]["default"].value("idle", 0) >= 2;
  }, 60s), b.output());

  auto aj = small_tree("pool", 2);
  aj["heartbeat_interval_ms"] = 250;
  aj["connection_timeout_ms"] = 4000;
  auto& kids = aj["root"]["children"];
  kids.push_back({{"id", "far"}, {"type", "remote_pool"}, {"host", "127.0.0.1"}, {"port", port},
                  {"connect_timeout_ms", 3000}, {"reconnect_min_ms", 50}, {"reconnect_max_ms", 400}});
  kids.push_back(group("both", {"default", "far"}, {{"idempotent", {"fault_sleep"}}}));
  caf_node c(aj);
  auto& n = c.n;
  REQUIRE(wait_until([&] { return c.member("both", 1).value("state", "") == "up"; }));

  // Load: idempotent sleeps and plain pings, some of each on the remote node
  // when it dies.
  std::vector<std::future<caf::expected<json>>> sleeps, pings;
  for (int i = 0; i < 8; ++i)
    sleeps.push_back(n->call("fault_sleep", {{"seconds", 1.0}}, on("both")));
  REQUIRE(wait_until([&] { return c.member("both", 1).value("in_flight", 0) > 0; }));
  b.proc->kill();  // SIGKILL: no goodbye on the wire
  REQUIRE(b.exited.wait(30s));
  for (auto& f : sleeps) {
    auto r = f.get();
    CHECK_MESSAGE(r, why(r));  // retried on the survivor
  }
  auto s = n->status()["groups"]["both"];
  CHECK(s["retried"].get<int>() > 0);
  CHECK(s["members"][1]["state"] == "down");
  CHECK(s["members"][1]["failed"].get<int>() > 0);
  // Everything now goes to the survivor, at once.
  for (int i = 0; i < 10; ++i)
    pings.push_back(n->call("ping", json::object(), on("both")));
  for (auto& f : pings) {
    auto r = f.get();
    CHECK_MESSAGE(r, why(r));
  }
  CHECK(n->status()["groups"]["both"]["in_flight"] == 0);
  std::system(("rm -rf " + dir).c_str());
}

TEST_CASE("a group passes cancellation and streams through to the member") {
  auto j = small_tree("pool", 1);
  auto& kids = j["root"]["children"];
  kids[1]["worker"]["handler_paths"] = json::array({std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"});
  kids[1]["worker"]["handlers"] = json::array({"stream_cmds"});
  kids.push_back(pool_named(kids[1], "second"));
  kids.push_back(group("g", {"default", "second"}));
  caf_node c(j);
  auto& n = c.n;

  // A stream: every chunk in order, under the caller's ref, then the result.
  std::mutex mx;
  std::vector<json> chunks;
  promise_box<std::optional<caf::expected<json>>> done;
  n->stream("count", {{"n", 50}}, on("g"),
            [&](json ch) {
              std::lock_guard<std::mutex> g(mx);
              chunks.push_back(std::move(ch));
            },
            [&](caf::expected<json> r) { done.set(std::move(r)); });
  REQUIRE(done.wait(60s));
  auto r = *done.get();
  REQUIRE_MESSAGE(r, why(r));
  {
    std::lock_guard<std::mutex> g(mx);
    REQUIRE(chunks.size() == 50);
    for (int i = 0; i < 50; ++i)
      CHECK(chunks[i] == json{{"i", i}});
  }

  // A cancel reaches the handler on whichever member has it.
  promise_box<std::optional<caf::expected<json>>> got;
  auto h = n->call("fault_sleep", {{"seconds", 30}}, on("g"), [&](caf::expected<json> x) { got.set(std::move(x)); });
  REQUIRE(wait_until([&] { return n->status()["groups"]["g"]["in_flight"] == 1; }));
  h.cancel();
  REQUIRE(got.wait(60s));
  auto x = *got.get();
  REQUIRE_FALSE(x);
  CHECK(is(x.error(), errc::cancelled));
  REQUIRE(wait_until([&] { return n->status()["groups"]["g"]["in_flight"] == 0; }));
}

}
