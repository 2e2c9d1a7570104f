// max_sessions with real workers: a new session over the cap is refused
// with resource_exhausted through every path that creates one (a request
// with a new session id, create_session, a lease, single mode) while the
// existing sessions are served; ending or expiring one admits a new one;
// status and /metrics show the count and the cap; refusals leave nothing
// behind in the pool.
#include <doctest/doctest.h>

#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/metrics/node_metrics.hpp>

#include "support/cli_process.hpp"
#include "support/scratch_dir.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <fstream>
#include <sys/stat.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

struct cap_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  node_options opts;
  cap_fixture() { opts.python_path = DSPEX_TEST_PYTHON_DIR; }

  std::shared_ptr<node> start(const json& j) { return start_test_node(sys, j, opts); }
};

json capped_tree(std::size_t cap, const std::string& mode = "pool") {
  auto j = small_tree(mode, 2);
  j["root"]["children"][0]["max_sessions"] = cap;
  return j;
}

bool refused(const caf::expected<json>& r) {
  return !r && is(r.error(), errc::resource_exhausted);
}

// The value of the one sample of family `name` (-1 when absent).
double family_value(const std::vector<prometheus::MetricFamily>& fams, const std::string& name) {
  for (auto& f : fams)
    if (f.name == name && f.metric.size() == 1)
      return f.type == prometheus::MetricType::Counter ? f.metric[0].counter.value
                                                       : f.metric[0].gauge.value;
  return -1;
}

// A lease through the pool's own message: the worker, or the error.
caf::expected<caf::actor> lease(caf::actor_system& sys, const caf::actor& pool,
                                std::optional<std::string> sid) {
  caf::scoped_actor self{sys};
  caf::expected<caf::actor> out{caf::error{}};
  self->request(pool, 30s, checkout_atom::value, std::move(sid))
    .receive([&](caf::actor& w) { out = w; }, [&](caf::error& e) { out = std::move(e); });
  if (out)
    self->request(pool, 30s, checkin_atom::value, *out, true).receive([] {}, [](caf::error&) {});
  return out;
}

} // namespace

TEST_SUITE("session_cap") {

TEST_CASE_FIXTURE(cap_fixture, "the session after max_sessions is refused; the others go on") {
  auto n = start(capped_tree(3));
  for (auto sid : {"s1", "s2", "s3"}) {
    auto r = n->execute_in_session(sid, "ping");
    REQUIRE_MESSAGE(r, why(r));
  }
  auto r4 = n->execute_in_session("s4", "ping");
  REQUIRE(refused(r4));
  auto detail = detail_of(r4.error());
  CHECK(detail.find("'s4'") != std::string::npos);
  CHECK(detail.find("max_sessions (3)") != std::string::npos);

  // The existing sessions and anonymous requests are served, state included.
  REQUIRE(n->execute_in_session("s1", "configure_lm", json{{"provider", "mock"}}));
  REQUIRE(n->execute_in_session("s1", "create_program", json{{"id", "p"}, {"signature", "q -> a"}}));
  auto listed = n->execute_in_session("s1", "list_programs");
  REQUIRE(listed);
  CHECK((*listed)["total_count"] == 1);
  CHECK(n->execute_in_session("s2", "ping"));
  CHECK(n->execute_anonymous("ping"));

  // Every other path that creates a session is refused too.
  CHECK(is(n->create_session("s5"), errc::resource_exhausted));
  CHECK(is(n->create_session("s2"), errc::duplicate_session));
  auto l = lease(sys, n->target(), std::string("s6"));
  REQUIRE_FALSE(l);
  CHECK(is(l.error(), errc::resource_exhausted));
  CHECK(lease(sys, n->target(), std::string("s3")));
  CHECK(lease(sys, n->target(), std::nullopt));

  // Many refusals leave the pool holding nothing of them (affinity).
  for (int i = 0; i < 50; ++i)
    CHECK(refused(n->execute_in_session("flood-" + std::to_string(i), "ping")));

  auto st = n->status();
  INFO(st["sessions"].dump());
  CHECK(st["sessions"]["sessions"] == 3);
  CHECK(st["sessions"]["max_sessions"] == 3);
  CHECK(st["sessions"]["refused"] == 53);
  CHECK(st["pools"]["default"]["sessions"].get<int>() <= 3);
  // s4, the flood and the lease of s6 (create_session does not reach the pool).
  CHECK(st["pools"]["default"]["requests"]["resource_exhausted"] == 52);
  auto fams = metrics::node_families(st);
  CHECK(family_value(fams, "dspex_sessions") == 3);
  CHECK(family_value(fams, "dspex_sessions_max") == 3);
  CHECK(family_value(fams, "dspex_sessions_refused_total") == 53);

  // Ending one admits a new one, and the cap holds again after it.
  REQUIRE_FALSE(n->end_session("s1"));
  auto r = n->execute_in_session("s4", "ping");
  CHECK_MESSAGE(r, why(r));
  CHECK(refused(n->execute_in_session("s7", "ping")));
  CHECK(n->execute_in_session("s2", "ping"));
  n->stop();
}

TEST_CASE_FIXTURE(cap_fixture, "expired sessions make room under the cap") {
  auto j = capped_tree(2);
  j["root"]["children"][0]["ttl_ms"] = 300;
  j["root"]["children"][0]["sweep_interval_ms"] = 50;
  auto n = start(j);
  REQUIRE(n->execute_in_session("a", "ping"));
  REQUIRE(n->execute_in_session("b", "ping"));
  CHECK(refused(n->execute_in_session("c", "ping")));
  REQUIRE(wait_until([&] { return n->status()["sessions"]["expired"].get<int>() >= 2; }, 20s));
  auto r = n->execute_in_session("c", "ping");
  CHECK_MESSAGE(r, why(r));
  CHECK(n->status()["sessions"]["sessions"] == 1);
  n->stop();
}

TEST_CASE_FIXTURE(cap_fixture, "single mode admits sessions under the cap too") {
  auto n = start(capped_tree(1, "single"));
  REQUIRE(n->execute_in_session("a", "ping"));
  CHECK(n->execute_in_session("a", "ping"));
  auto r = n->execute_in_session("b", "ping");
  CHECK(refused(r));
  CHECK(n->execute_anonymous("ping"));
  REQUIRE_FALSE(n->end_session("a"));
  CHECK(n->execute_in_session("b", "ping"));
  n->stop();
}

TEST_CASE("max_sessions is validated") {
  auto j = small_tree();
  CHECK(parse_config(j)->root.children.size() == 3);
  for (json bad : {json(0), json(-1), json("10"), json(1e9), json(1.5)}) {
    j["root"]["children"][0]["max_sessions"] = bad;
    auto c = parse_config(j);
    REQUIRE_FALSE(c);
    CHECK(detail_of(c.error()).find("root.children[0].max_sessions") != std::string::npos);
  }
  j["root"]["children"][0]["max_sessions"] = 7;
  auto c = parse_config(j);
  REQUIRE(c);
  auto& reg = std::get<session_registry_config>(c->root.children[0].body);
  CHECK(reg.max_sessions == 7);
  CHECK(std::get<session_registry_config>(parse_config(small_tree())->root.children[0].body)
          .max_sessions == 100000);
}

TEST_CASE("dspex run: the cap through the control socket and in status") {
  scratch_dir scratch("session-cap");
  bridge::io_loop loop;
  const std::string& dir = scratch.path();
  auto config = dir + "/tree.json", sock = dir + "/control.sock";
  auto j = json::parse(run_cli(loop, {"config", "--default"}));
  j["root"]["children"][1]["size"] = 1;
  j["root"]["children"][0]["max_sessions"] = 2;
  std::ofstream(config) << j.dump(2);
  cli_process node(loop, {"run", config, "--control", sock, "--metrics", "127.0.0.1:0"});
  std::string line;
  REQUIRE(wait_until([&] {
    line = node.line_with("metrics on http://");
    return !line.empty() || node.exited.count() > 0;
  }, 60s));
  INFO(node.output());
  REQUIRE(!line.empty());

  int code = 0;
  for (auto sid : {"x1", "x2"}) {
    run_cli(loop, {"exec", "ping", "--session", sid, "--control", sock}, &code);
    CHECK(code == 0);
  }
  auto out = run_cli(loop, {"exec", "ping", "--session", "x3", "--control", sock}, &code);
  CHECK(code != 0);
  CHECK(out.find("resource_exhausted") != std::string::npos);
  CHECK(out.find("max_sessions (2)") != std::string::npos);
  run_cli(loop, {"exec", "ping", "--session", "x1", "--control", sock}, &code);
  CHECK(code == 0);

  out = run_cli(loop, {"status", "--control", sock}, &code);
  CHECK(code == 0);
  CHECK(out.find("sessions: 2 of max 2") != std::string::npos);
  auto st = json::parse(run_cli(loop, {"status", "--json", "--control", sock}));
  CHECK(st["sessions"]["max_sessions"] == 2);
  CHECK(st["sessions"]["refused"] == 1);

  node.proc->signal(SIGTERM);
  REQUIRE(node.exited.wait(60s));
  CHECK(node.exited.get().clean());
}

} // TEST_SUITE
