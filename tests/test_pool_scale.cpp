// Resizing a running pool (issue 27, node::scale_pool): it grows by
// starting workers and shrinks by draining the idlest, under load with no
// request failing; status follows; a bad size or pool is a classified error.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>
#include <dspex/actors/pool/pool.hpp>

#include "support/load_clients.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"

#include <set>

using namespace dspex;
using namespace dspex::test;

namespace {

struct scale_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<node> n = start_test_node(sys, small_tree("pool", 2));

  ~scale_fixture() {
    if (n)
      n->stop();
  }

  json pool() { return n->status()["pools"]["default"]; }
  std::size_t worker_pids() { return tree_os_pids(n->status()["tree"], "/workers/").size(); }
};

} // namespace

TEST_SUITE("pool_scale") {

TEST_CASE_FIXTURE(scale_fixture, "scale up and down under load: every request ok, status and the tree follow") {
  load_clients load(*n, 4, "fault_sleep", json{{"seconds", 0.002}});
  REQUIRE(load.wait_answers(20));
  for (std::size_t size : {4, 1, 3, 2}) {
    auto from = pool()["size"].get<std::size_t>();
    auto r = n->scale_pool("default", size);
    REQUIRE_MESSAGE(r, why(r));
    CHECK((*r)["from"] == from);
    CHECK((*r)["size"] == size);
    CHECK((*r)["workers"] == size);
    auto p = pool();
    CHECK(p["size"] == size);
    CHECK(p["workers"] == size);
    CHECK(wait_until([&] { return worker_pids() == size; }));
    REQUIRE(load.wait_answers(20));
  }
  load.stop();
  CHECK_MESSAGE(load.all_ok(), load.tally.dump());
  CHECK(pool()["crashes"] == 0);
  CHECK(pool()["errors"].empty());
  // Scaled-down workers are gone from the tree, not left stopped.
  auto st = n->status();
  std::set<std::string> ids;
  for (auto& c : st["tree"]["children"])
    if (c["id"] == "pool_sup")
      for (auto& k : c["children"])
        if (k["id"] == "workers")
          for (auto& w : k["children"])
            ids.insert(w["id"].get<std::string>());
  CHECK(ids.size() == 2);
}

TEST_CASE("scaling down a worker stuck past drain_timeout takes the hard path: its caller gets a classified error") {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  auto j = small_tree("pool", 2);
  j["root"]["children"][1]["drain_timeout_ms"] = 300;
  auto n = start_test_node(sys, j);
  // Both workers busy: one of them has to go with its request unfinished.
  auto a = n->call("fault_sleep", json{{"seconds", 2}});
  auto b = n->call("fault_sleep", json{{"seconds", 2}});
  REQUIRE(wait_until([&] { return n->status()["pools"]["default"]["busy"] == 2; }));
  auto r = n->scale_pool("default", 1);
  REQUIRE_MESSAGE(r, why(r));
  CHECK((*r)["workers"] == 1);
  auto ra = a.get();
  auto rb = b.get();
  // The scaled-down worker's caller gets the hard path's error, the other
  // its result.
  CHECK((ra ? 1 : 0) + (rb ? 1 : 0) == 1);
  auto stopped = ra ? rb : ra;
  REQUIRE_FALSE(stopped);
  CHECK_MESSAGE(is(stopped.error(), errc::shutting_down), describe(stopped.error()));
  n->stop();
}

TEST_CASE_FIXTURE(scale_fixture, "a bad size or pool is a classified error and changes nothing") {
  for (std::size_t bad : {std::size_t{0}, max_pool_size + 1}) {
    auto r = n->scale_pool("default", bad);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_request));
    CHECK(detail_of(r.error()).find("size") != std::string::npos);
  }
  auto r = n->scale_pool("nope", 2);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::invalid_request));
  CHECK(detail_of(r.error()).find("nope") != std::string::npos);
  // Through the pool actor too (any actor may send it).
  caf::scoped_actor self{sys};
  bool refused = false;
  self->request(n->pool("default"), std::chrono::seconds(10), scale_atom::value, std::size_t{0})
    .receive([](json&) {}, [&](caf::error& e) { refused = is(e, errc::invalid_request); });
  CHECK(refused);
  CHECK(pool()["size"] == 2);
  CHECK(pool()["workers"] == 2);
}

}
