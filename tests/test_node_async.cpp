// node::call and node::stream: the embedding API's asynchronous calls,
// against a real node with real workers (tests/handlers/stream_cmds.py).
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>

#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/marker_file.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"

#include <caf/all.hpp>

#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unistd.h>
#include <vector>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

json stream_tree() {
  auto j = small_tree("pool", 1);
  auto& w = j["root"]["children"][1]["worker"];
  w["handler_paths"] = json::array({std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"});
  w["handlers"] = json::array({"stream_cmds"});
  return j;
}

struct async_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<node> n = start_test_node(sys, stream_tree());
  ~async_fixture() { n->stop(); }
};


} // namespace

TEST_SUITE("node async") {

TEST_CASE_FIXTURE(async_fixture, "call: a future, and a callback") {
  auto f = n->call("echo", {{"x", 1}});
  REQUIRE(f.wait_for(eventually) == std::future_status::ready);
  auto r = f.get();
  REQUIRE_MESSAGE(r, why(r));
  CHECK(*r == json{{"x", 1}});
  std::promise<caf::expected<json>> p;
  auto h = n->call("acount", {{"s", 0.01}}, {}, [&p](caf::expected<json> r) { p.set_value(std::move(r)); });
  CHECK(h.valid());
  auto got = p.get_future().get();
  REQUIRE(got);
  CHECK((*got)["slept"] == 0.01);
}

TEST_CASE_FIXTURE(async_fixture, "stream: every chunk in order, then the result") {
  std::mutex mx;
  std::vector<json> chunks;
  std::promise<caf::expected<json>> p;
  n->stream("count", {{"n", 200}}, {},
            [&](json c) {
              std::lock_guard<std::mutex> g(mx);
              chunks.push_back(std::move(c));
            },
            [&](caf::expected<json> r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  REQUIRE(r);
  CHECK(*r == json{{"total", 200}});
  std::lock_guard<std::mutex> g(mx);
  REQUIRE(chunks.size() == 200);
  for (int i = 0; i < 200; ++i)
    CHECK(chunks[i] == json{{"i", i}});
}

TEST_CASE_FIXTURE(async_fixture, "cancel: the answer is cancelled and the handler's finally runs") {
  marker_file marker;
  std::promise<caf::expected<json>> p;
  auto h = n->call("spin", {{"marker", marker.path}}, {},
                   [&p](caf::expected<json> r) { p.set_value(std::move(r)); });
  REQUIRE(marker.await("started"));
  h.cancel();
  auto r = p.get_future().get();
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::cancelled));
  REQUIRE(marker.await("finally"));
  h.cancel();  // after the end: nothing
  // The worker serves on.
  auto f = n->call("pid");
  CHECK(f.get());
}

TEST_CASE_FIXTURE(async_fixture, "refused at once, and a throwing callback harms nobody") {
  caf::expected<json> got{json()};
  auto h = n->call("echo", {}, call_options{"no_such_pool", std::nullopt, 0ms},
                   [&got](caf::expected<json> r) { got = std::move(r); });
  CHECK_FALSE(h.valid());
  REQUIRE_FALSE(got);
  CHECK(is(got.error(), errc::invalid_request));
  std::promise<void> p;
  n->stream("count", {{"n", 3}}, {}, [](json) { throw std::runtime_error("bad chunk callback"); },
            [&p](caf::expected<json>) {
              p.set_value();
              throw std::runtime_error("bad result callback");
            });
  p.get_future().get();
  auto f = n->call("echo", {{"still", true}});
  auto r = f.get();
  REQUIRE(r);
  CHECK((*r)["still"] == true);
}

} // TEST_SUITE
