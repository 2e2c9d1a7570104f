// Several pools in one tree, each reachable by name: through the embedding
// API (node::execute_on, node::pool) and through the control socket's
// "pool" field; unknown names and duplicate names are classified errors.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>
#include <dspex/cli/control.hpp>

#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <set>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

// The default tree with a second pool "batch" under a supervisor of its own
// (so that the name check has to look below the root).
json two_pools() {
  auto j = default_config();
  j["root"]["children"][1]["size"] = 2;
  auto second = j["root"]["children"][1];
  second["id"] = "batch_sup";
  second["name"] = "batch";
  second["size"] = 1;
  j["root"]["children"].push_back(
    {{"id", "more"}, {"type", "supervisor"}, {"strategy", "one_for_one"},
     {"children", json::array({second})}});
  return j;
}

std::set<int> pids_under(const json& status, const std::string& part) {
  auto v = tree_os_pids(status["tree"], part);
  return {v.begin(), v.end()};
}

struct two_pool_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<node> n;

  two_pool_fixture() {
    n = start_test_node(sys, two_pools());
  }
  ~two_pool_fixture() {
    if (n)
      n->stop();
  }
};

} // namespace

TEST_SUITE("named_pools") {

TEST_CASE_FIXTURE(two_pool_fixture, "exec on each pool by name reaches that pool's workers") {
  auto st = n->status();
  auto defaults = pids_under(st, "/pool_sup/workers/");
  auto batch = pids_under(st, "/batch_sup/workers/");
  REQUIRE(defaults.size() == 2);
  REQUIRE(batch.size() == 1);
  CHECK(n->pool_names() == std::vector<std::string>{"default", "batch"});
  CHECK(n->pool("batch") != nullptr);
  CHECK(n->pool("default") == n->target());
  CHECK(n->pool("nope") == nullptr);

  for (int i = 0; i < 6; ++i) {
    auto a = n->execute_on("batch", "ping");
    REQUIRE_MESSAGE(a, why(a));
    CHECK(batch.count((*a)["pid"].get<int>()) == 1);
    auto b = n->execute_on("default", "ping");
    REQUIRE_MESSAGE(b, why(b));
    CHECK(defaults.count((*b)["pid"].get<int>()) == 1);
    auto c = n->execute("ping");  // no name: the first pool, as before
    REQUIRE(c);
    CHECK(defaults.count((*c)["pid"].get<int>()) == 1);
  }

  auto bad = n->execute_on("nope", "ping");
  REQUIRE(!bad);
  CHECK(is(bad.error(), errc::invalid_request));
  auto msg = describe(bad.error());
  CHECK(msg.find("\"nope\"") != std::string::npos);
  CHECK(msg.find("default, batch") != std::string::npos);
}

TEST_CASE_FIXTURE(two_pool_fixture, "the control protocol's pool field picks the pool") {
  char tmpl[] = "/tmp/dspex-np-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  std::string dir = tmpl, path = dir + "/c.sock";
  {
    cli::control_server srv(*n, path);
    REQUIRE(srv.listening());
    auto batch = pids_under(n->status(), "/batch_sup/workers/");
    auto r = cli::control_call(path, {{"op", "exec"}, {"command", "ping"}, {"pool", "batch"}}, 30s);
    REQUIRE(r.value("ok", false));
    CHECK(batch.count(r["result"]["pid"].get<int>()) == 1);
    r = cli::control_call(path, {{"op", "exec"}, {"command", "ping"}, {"pool", "nope"}}, 30s);
    CHECK(r.value("ok", true) == false);
    CHECK(r["error"]["class"] == "invalid_request");
    CHECK(r["error"]["message"].get<std::string>().find("known pools: default, batch")
          != std::string::npos);
    r = cli::control_call(path, {{"op", "exec"}, {"command", "ping"}, {"pool", 7}}, 30s);
    CHECK(r["error"]["class"] == "invalid_request");
    CHECK(r["error"]["message"].get<std::string>().find("pool: expected") != std::string::npos);
    r = cli::control_call(path, {{"op", "exec"}, {"command", "ping"}, {"pool", nullptr}}, 30s);
    CHECK(r.value("ok", false));
  }
  ::unlink((path + ".lock").c_str());
  ::rmdir(dir.c_str());
}

TEST_CASE("a pool name used twice in the tree is a config error naming both places") {
  auto j = two_pools();
  j["root"]["children"][3]["children"][0]["name"] = "default";
  auto r = parse_config(j);
  REQUIRE(!r);
  CHECK(is(r.error(), errc::invalid_config));
  auto d = detail_of(r.error());
  CHECK(d.find("root.children[3].children[0].name: duplicate pool name \"default\"")
        != std::string::npos);
  CHECK(d.find("also used by root.children[1]") != std::string::npos);
  // A pool without a name is named by its id: the id clashes just the same.
  j = two_pools();
  j["root"]["children"][3]["children"][0].erase("name");
  j["root"]["children"][3]["children"][0]["id"] = "default";
  r = parse_config(j);
  REQUIRE(!r);
  CHECK(detail_of(r.error()).find("duplicate pool name \"default\"") != std::string::npos);
  CHECK(parse_config(two_pools()));
}

} // TEST_SUITE
