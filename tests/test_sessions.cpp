// Session state with real Python workers: every session runs on its own LM
// (same worker or another), a pool default serves the rest, programs and
// LMs survive a worker's SIGKILL, a pool restart and a registry restart, and
// an LM's api_key reaches each worker once per (worker, session, LM version)
// and shows nowhere else.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/session/session_registry.hpp>
#include <dspex/actors/session/detail/session_state.hpp>

#include "support/event_log.hpp"
#include "support/pool_fixture.hpp"
#include "support/why.hpp"

#include <csignal>
#include <set>

using namespace dspex;
using namespace dspex::test;
namespace sup = dspex::supervision;

namespace {

constexpr const char* secret = "sk-SECRET-4242";

// A registry the test may replace, and a pool tree that looks it up.
struct sessions_fixture : actor_fixture {
  std::mutex mx;
  caf::actor registry, current_pool, root, sink_hdl;
  std::shared_ptr<event_log> sink = std::make_shared<event_log>();

  caf::actor reg() {
    std::lock_guard<std::mutex> g(mx);
    return registry;
  }
  caf::actor pool() {
    std::lock_guard<std::mutex> g(mx);
    return current_pool;
  }

  static pool_config config(std::size_t size, affinity_mode aff = affinity_mode::hint) {
    auto c = pool_fixture::test_pool_config(size);
    c.affinity = aff;
    c.default_lm = json{{"provider", "mock"}, {"model", "dflt"}};
    return c;
  }

  void start(pool_config c) {
    registry = spawn_session_registry(sys, session_registry_config{});
    sink_hdl = sys.spawn(event_sink, sink);
    sup::supervisor_options opts;
    opts.subscribers = {sink_hdl};
    auto spec = pool_supervisor_spec(
      "pool_sup", std::move(c), loop,
      [this](caf::actor p) {
        std::lock_guard<std::mutex> g(mx);
        current_pool = std::move(p);
      },
      [this] { return reg(); });
    auto r = sup::start_supervisor(sys, sup::supervisor_flags{}.with_intensity(10, 5s), {spec},
                                   opts);
    REQUIRE_MESSAGE(r, why(r));
    root = *r;
    REQUIRE_FALSE(await_ready(pool()));
  }

  ~sessions_fixture() {
    if (root) {
      self->send_exit(root, caf::exit_reason::user_shutdown);
      self->monitor(root);
      self->receive([](caf::down_msg&) {}, caf::after(std::chrono::seconds(30)) >> [] {});
    }
    self->send_exit(reg(), caf::exit_reason::kill);
    self->send_exit(sink_hdl, caf::exit_reason::kill);
  }

  json ask(const caf::actor& a, caf::message m) {
    json out;
    self->request(a, 30s, std::move(m)).receive([&](json& j) { out = std::move(j); },
                                               [&](caf::error& e) { FAIL(describe(e)); });
    return out;
  }

  caf::expected<json> in(const std::string& sid, std::string cmd, json args = json::object()) {
    return exec(pool(), std::move(cmd), std::move(args), 0ms, sid);
  }

  void setup_session(const std::string& sid, json lm) {
    if (!lm.is_null())
      REQUIRE(in(sid, "configure_lm", std::move(lm)));
    auto r = in(sid, "create_program", json{{"id", "p"}, {"signature", "q -> a"}});
    REQUIRE_MESSAGE(r, why(r));
  }

  /// The LM that served an execute_program of session `sid`.
  std::string lm_of(const std::optional<std::string>& sid, const std::string& prog = "p") {
    auto r = exec(pool(), "execute_program", json{{"program_id", prog}, {"inputs", {{"q", "x"}}}},
                  0ms, sid);
    REQUIRE_MESSAGE(r, why(r));
    return (*r)["lm"].get<std::string>();
  }

  pid_t pid_of(const std::string& sid) {
    auto r = in(sid, "ping");
    REQUIRE(r);
    return (*r)["pid"].get<pid_t>();
  }

  std::vector<caf::actor> workers() {
    std::vector<caf::actor> out;
    self->request(pool(), 30s, workers_atom::value)
      .receive([&](std::vector<caf::actor>& w) { out = std::move(w); },
               [&](caf::error& e) { FAIL(describe(e)); });
    return out;
  }

  /// Asked of a worker directly (not through the pool's hook).
  json lm_info(const caf::actor& w, const std::string& sid) {
    auto r = exec(w, "lm_info", json::object(), 0ms, sid);
    REQUIRE(r);
    return *r;
  }

  caf::actor lease(const std::string& sid) {
    caf::actor out;
    self->request(pool(), 30s, checkout_atom::value, std::optional<std::string>{sid})
      .receive([&](caf::actor& w) { out = w; }, [&](caf::error& e) { FAIL(describe(e)); });
    return out;
  }
};

} // namespace

TEST_SUITE("sessions") {

TEST_CASE("default_lm: a pool key, validated without echoing its value") {
  auto tree = [](json lm) {
    auto j = default_config();
    for (auto& c : j["root"]["children"])
      if (c["type"] == "pool_sup" || c.contains("children"))
        for (auto& p : c["children"])
          if (p["type"] == "pool")
            p["default_lm"] = lm;
    for (auto& c : j["root"]["children"])
      if (c["type"] == "pool")
        c["default_lm"] = lm;
    return parse_config(j);
  };
  auto ok = tree(json{{"provider", "mock"}, {"model", "m"}, {"api_key", secret}});
  REQUIRE_MESSAGE(ok, why(ok));
  auto bad = tree(json{{"provider", 7}, {"api_key", secret}});
  REQUIRE_FALSE(bad);
  auto text = describe(bad.error());
  CHECK(text.find("default_lm") != std::string::npos);
  CHECK(text.find("sk-SECRET") == std::string::npos);
}

TEST_CASE_FIXTURE(sessions_fixture, "each session runs on its own LM on one worker; the default serves the rest") {
  start(config(1));
  setup_session("s-one", json{{"provider", "mock"}, {"model", "m-one"}});
  setup_session("s-two", json{{"provider", "mock"}, {"model", "m-two"}});
  setup_session("s-none", json());
  REQUIRE(exec(pool(), "create_program", json{{"id", "anon"}, {"signature", "q -> a"}}));
  for (int i = 0; i < 4; ++i) {
    CHECK(lm_of("s-one") == "mock/m-one");
    CHECK(lm_of("s-two") == "mock/m-two");
    CHECK(lm_of("s-none") == "mock/dflt");
    CHECK(lm_of(std::nullopt, "anon") == "mock/dflt");
  }
  CHECK(pid_of("s-one") == pid_of("s-two"));
  // A configure_lm without a session replaces the default, not a session's own LM.
  REQUIRE(exec(pool(), "configure_lm", json{{"provider", "mock"}, {"model", "d2"}}));
  CHECK(lm_of("s-none") == "mock/d2");
  CHECK(lm_of("s-one") == "mock/m-one");
}

TEST_CASE_FIXTURE(sessions_fixture, "each session runs on its own LM on different workers (strict affinity)") {
  start(config(2, affinity_mode::strict));
  // Bind the sessions to different workers: a lease binds its session too.
  auto w1 = lease("s-one");
  auto w2 = lease("s-two");
  REQUIRE(w1 != w2);
  self->send(pool(), checkin_atom::value, w1, true);
  self->send(pool(), checkin_atom::value, w2, true);
  setup_session("s-one", json{{"provider", "mock"}, {"model", "m-one"}});
  setup_session("s-two", json{{"provider", "mock"}, {"model", "m-two"}});
  CHECK(pid_of("s-one") != pid_of("s-two"));
  for (int i = 0; i < 4; ++i) {
    CHECK(lm_of("s-one") == "mock/m-one");
    CHECK(lm_of("s-two") == "mock/m-two");
  }
}

TEST_CASE_FIXTURE(sessions_fixture, "a session's program and LM survive the SIGKILL of its worker and a pool restart") {
  start(config(1));
  setup_session("s-one", json{{"provider", "mock"}, {"model", "m-one"}});
  CHECK(lm_of("s-one") == "mock/m-one");
  ::kill(pid_of("s-one"), SIGKILL);
  REQUIRE(wait_until([&] {
    json st = ask(pool(), caf::make_message(status_atom::value));
    return st["restarts"] == 1 && st["workers"] == 1;
  }));
  CHECK(lm_of("s-one") == "mock/m-one");  // the replacement got the replay
  auto ws = workers();
  REQUIRE(ws.size() == 1);
  CHECK(lm_info(ws[0], "s-one")["configured"] == 1);

  // The pool actor dies: rest_for_one restarts it and its workers; the
  // registry keeps the session.
  auto old_pool = pool();
  self->send_exit(old_pool, caf::exit_reason::kill);
  REQUIRE(wait_until([&] { return pool() != old_pool; }));
  REQUIRE_FALSE(await_ready(pool()));
  CHECK(lm_of("s-one") == "mock/m-one");
  CHECK(lm_of("s-one") == "mock/m-one");
  ws = workers();
  REQUIRE(ws.size() == 1);
  CHECK(lm_info(ws[0], "s-one")["configured"] == 1);
}

TEST_CASE_FIXTURE(sessions_fixture, "a restarted registry is reached and learns the pool again") {
  start(config(1));
  setup_session("s-one", json{{"provider", "mock"}, {"model", "m-one"}});
  CHECK(lm_of("s-one") == "mock/m-one");
  auto old_reg = reg();
  self->send_exit(old_reg, caf::exit_reason::kill);
  {
    std::lock_guard<std::mutex> g(mx);
    registry = spawn_session_registry(sys, session_registry_config{});
  }
  setup_session("s-two", json{{"provider", "mock"}, {"model", "m-two"}});
  CHECK(lm_of("s-two") == "mock/m-two");
  json listed = ask(reg(), caf::make_message(sess_list_atom::value));
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["id"] == "s-two");
  CHECK(listed[0]["lm"] == "mock/m-two");
  // The new registry knows the pool: ending the session reaches its worker.
  auto ws = workers();
  REQUIRE(ws.size() == 1);
  CHECK(lm_info(ws[0], "s-two")["configured"] == 1);
  self->request(reg(), 30s, sess_end_atom::value, std::string("s-two"))
    .receive([] {}, [&](caf::error& e) { FAIL(describe(e)); });
  CHECK(wait_until([&] { return lm_info(ws[0], "s-two")["configured"] == 0; }));
}

TEST_CASE_FIXTURE(sessions_fixture, "an api_key reaches each worker once per LM version and shows nowhere else") {
  start(config(2));
  setup_session("s-key", json{{"provider", "mock"}, {"model", "m-k"}, {"api_key", secret}});
  auto run_on_both = [&] {
    for (int i = 0; i < 3; ++i)
      CHECK(lm_of("s-key") == "mock/m-k");
    // Its worker leased away, the session is served by the other one (hint
    // affinity), which first gets the replay.
    auto held = lease("s-key");
    for (int i = 0; i < 3; ++i)
      CHECK(lm_of("s-key") == "mock/m-k");
    self->send(pool(), checkin_atom::value, held, true);
    for (int i = 0; i < 3; ++i)
      CHECK(lm_of("s-key") == "mock/m-k");
  };
  run_on_both();
  auto ws = workers();
  REQUIRE(ws.size() == 2);
  for (auto& w : ws) {
    auto info = lm_info(w, "s-key");
    CHECK(info["configured"] == 1);
    CHECK(info["default_configured"] == 1);
  }
  // A new LM version: once more per worker.
  REQUIRE(in("s-key", "configure_lm",
             json{{"provider", "mock"}, {"model", "m-k"}, {"api_key", std::string(secret) + "b"}}));
  run_on_both();
  for (auto& w : ws)
    CHECK(lm_info(w, "s-key")["configured"] == 2);

  // Nowhere else: status, session listing, registry stats, events, errors.
  auto bad = in("s-key", "configure_lm", json{{"provider", "bogus"}, {"api_key", secret}});
  REQUIRE_FALSE(bad);
  std::string shown = describe(bad.error());
  shown += ask(pool(), caf::make_message(status_atom::value)).dump();
  json listed = ask(reg(), caf::make_message(sess_list_atom::value));
  shown += listed.dump();
  shown += ask(reg(), caf::make_message(stats_atom::value)).dump();
  // Every textual field of every event.
  auto events = sink->snapshot();
  REQUIRE_FALSE(events.empty());
  for (auto& ev : events)
    shown += ev.path + " " + ev.child_id + " " + ev.reason + " " + caf::to_string(ev.exit_reason);
  CHECK(shown.find("sk-SECRET") == std::string::npos);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0]["lm"].is_string());
}

TEST_CASE_FIXTURE(sessions_fixture, "a change made through another path reaches a warm worker before its next request") {
  // A warm worker serves requests that change nothing without the prepare
  // round trip (the pool knows it has seen the registry's versions); a
  // change the registry records for anybody else must still be replayed
  // onto it before its next request.
  auto c = config(1);
  start(c);
  setup_session("s-w", json{{"provider", "mock"}, {"model", "m1"}});
  auto anon_lm = [&] {
    auto r = exec(pool(), "lm_info", json::object(), 0ms, std::nullopt);
    REQUIRE_MESSAGE(r, why(r));
    return (*r)["lm"].get<std::string>();
  };
  for (int i = 0; i < 3; ++i) {
    CHECK(lm_of("s-w") == "mock/m1");
    CHECK(anon_lm() == "mock/dflt");
  }
  // Another path: a client of the registry other than this pool (another
  // pool, say) records a new LM for the session and a new default for
  // this pool.
  auto record = [&](const std::string& pool_name, command_request req) {
    session_plan plan;
    self->request(reg(), 30s, prepare_atom::value, pool_name, std::move(req), seen_versions{})
      .receive([&](session_plan& p) { plan = std::move(p); },
               [&](caf::error& e) { FAIL(describe(e)); });
    REQUIRE(plan.change != 0);
    self->send(reg(), settle_atom::value, plan.change, true);
  };
  record("elsewhere", make_command("configure_lm", json{{"provider", "mock"}, {"model", "m2"}},
                                   std::string("s-w")));
  CHECK(lm_of("s-w") == "mock/m2");
  CHECK(anon_lm() == "mock/dflt");
  record(c.name, make_command("configure_lm", json{{"provider", "mock"}, {"model", "d2"}}));
  CHECK(anon_lm() == "mock/d2");
  CHECK(lm_of("s-w") == "mock/m2");
  // Warm again: each LM version reached the worker once.
  for (int i = 0; i < 3; ++i)
    CHECK(lm_of("s-w") == "mock/m2");
  auto ws = workers();
  REQUIRE(ws.size() == 1);
  auto info = lm_info(ws[0], "s-w");
  CHECK(info["configured"] == 2);
  CHECK(info["default_configured"] == 2);
}

} // TEST_SUITE
