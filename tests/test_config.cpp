// Config validation: each kind of mistake gets a precise message.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>

#include "support/why.hpp"

#include <algorithm>

using namespace dspex;

namespace {

std::string problems(const json& j) {
  auto r = parse_config(j);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::invalid_config));
  return detail_of(r.error());
}

json with_pool(json pool) {
  auto j = default_config();
  j["root"]["children"][1] = std::move(pool);
  return j;
}

} // namespace

TEST_SUITE("config") {

TEST_CASE("the default config is valid and describes the tree of docs/architecture.md") {
  auto r = parse_config(default_config());
  REQUIRE(r);
  REQUIRE(r->root.children.size() == 3);
  CHECK(r->root.children[0].type == "session_registry");
  CHECK(r->root.children[1].type == "pool");
  CHECK(r->root.children[2].type == "monitor");
  CHECK(r->mode == bridge_mode::pool);
}

TEST_CASE("a wrong type names the place, the expectation and what was found") {
  auto j = default_config();
  j["root"]["children"][1]["size"] = -3;
  auto p = problems(j);
  CHECK(p.find("root.children[1].size") != std::string::npos);
  CHECK(p.find("expected an integer") != std::string::npos);
  CHECK(p.find("-3") != std::string::npos);
}

TEST_CASE("worker.sched_batch: on by default, a boolean, reaches the pool's worker config") {
  auto j = default_config();
  auto& w = j["root"]["children"][1]["worker"];
  w.erase("sched_batch");
  auto pool_of = [](const tree_config& cfg) -> const pool_config* {
    for (auto& c : cfg.root.children)
      if (auto* pool = std::get_if<pool_config>(&c.body))
        return pool;
    return nullptr;
  };
  auto cfg = parse_config(j);
  REQUIRE(cfg);
  REQUIRE(pool_of(*cfg));
  CHECK(pool_of(*cfg)->worker.sched_batch);
  for (auto bad : {json(1), json("yes"), json(nullptr)}) {
    w["sched_batch"] = bad;
    auto p = problems(j);
    CHECK_MESSAGE(p.find("root.children[1].worker.sched_batch") != std::string::npos, p);
  }
  w["sched_batch"] = false;
  cfg = parse_config(j);
  REQUIRE(cfg);
  REQUIRE(pool_of(*cfg));
  CHECK_FALSE(pool_of(*cfg)->worker.sched_batch);
}

TEST_CASE("worker.stream_window_bytes: 1 MiB by default, an integer in [1024, 2^31], reaches the pool") {
  auto j = default_config();
  auto& w = j["root"]["children"][1]["worker"];
  CHECK(w["stream_window_bytes"] == 1024 * 1024);
  CHECK(w["stream_window"] == 1024);
  for (auto bad : {json(0), json(1023), json(-1), json((1LL << 31) + 1), json(4096.5), json("65536"),
                   json(nullptr)}) {
    w["stream_window_bytes"] = bad;
    auto p = problems(j);  // invalid_config
    CHECK_MESSAGE(p.find("root.children[1].worker.stream_window_bytes") != std::string::npos, p);
  }
  w["stream_window_bytes"] = 4096;
  auto cfg = parse_config(j);
  REQUIRE(cfg);
  bool found = false;
  for (auto& c : cfg->root.children)
    if (auto* pool = std::get_if<pool_config>(&c.body)) {
      CHECK(pool->worker.stream_window_bytes == 4096);
      found = true;
    }
  CHECK(found);
}

TEST_CASE("worker.max_concurrency: 1 by default, 1..10000, reaches the pool's worker config") {
  auto j = default_config();
  auto& w = j["root"]["children"][1]["worker"];
  for (auto bad : {json(0), json(10001), json(-1), json(2.5), json("4")}) {
    w["max_concurrency"] = bad;
    auto p = problems(j);
    CHECK_MESSAGE(p.find("root.children[1].worker.max_concurrency") != std::string::npos, p);
  }
  w["max_concurrency"] = 16;
  auto cfg = parse_config(j);
  REQUIRE(cfg);
  bool found = false;
  for (auto& c : cfg->root.children)
    if (auto* pool = std::get_if<pool_config>(&c.body)) {
      CHECK(pool->worker.max_concurrency == 16);
      CHECK(std::find(pool->worker.extra_args.begin(), pool->worker.extra_args.end(), "--max-concurrency")
            == pool->worker.extra_args.end());
      auto line = worker_command_line(pool->worker);
      auto at = std::find(line.begin(), line.end(), "--max-concurrency");
      REQUIRE(at != line.end());
      CHECK(*(at + 1) == "16");
      found = true;
    }
  CHECK(found);
}

TEST_CASE("worker.limits: 0 (off) by default; too small, negative or unknown keys refused; reach the command line") {
  auto j = default_config();
  auto& l = j["root"]["children"][1]["worker"]["limits"];
  for (auto [key, bad] : std::vector<std::pair<std::string, json>>{
         {"memory_mb", 10}, {"memory_mb", -1}, {"memory_mb", "1G"}, {"cpu_seconds", 1.5},
         {"open_files", 3}, {"processes", -2}, {"stack_mb", 8}}) {
    auto copy = j;
    copy["root"]["children"][1]["worker"]["limits"][key] = bad;
    auto p = problems(copy);
    CHECK_MESSAGE(p.find("root.children[1].worker.limits." + key) != std::string::npos, p);
  }
  l = {{"memory_mb", 256}, {"cpu_seconds", 5}, {"open_files", 64}, {"processes", 100}};
  auto cfg = parse_config(j);
  REQUIRE(cfg);
  auto* pool = std::get_if<pool_config>(&cfg->root.children[1].body);
  REQUIRE(pool);
  CHECK(pool->worker.limits.memory_mb == 256);
  CHECK(pool->worker.limits.processes == 100);
  auto line = worker_command_line(pool->worker);
  auto at = std::find(line.begin(), line.end(), "--limits");
  REQUIRE(at != line.end());
  CHECK(*(at + 1) == "memory_mb=256,cpu_seconds=5,open_files=64,processes=100");
  // Unset: no option at all (the host's own limits stay).
  pool_config plain;
  auto none = worker_command_line(plain.worker);
  CHECK(std::find(none.begin(), none.end(), "--limits") == none.end());
}

TEST_CASE("unknown keys are refused, so typos do not pass silently") {
  auto j = default_config();
  j["root"]["children"][1]["sise"] = 4;
  CHECK(problems(j).find("root.children[1].sise: unknown key") != std::string::npos);
  j = default_config();
  j["root"]["children"][1]["worker"]["init_timeout"] = 5;
  CHECK(problems(j).find("root.children[1].worker.init_timeout: unknown key") != std::string::npos);
}

TEST_CASE("bad enumerations list the choices") {
  auto j = default_config();
  j["root"]["strategy"] = "one_for_some";
  auto p = problems(j);
  CHECK(p.find("root.strategy") != std::string::npos);
  CHECK(p.find("one_for_one | one_for_all | rest_for_one | simple_one_for_one") != std::string::npos);
  j = default_config();
  j["mode"] = "turbo";
  CHECK(problems(j).find("config.mode") != std::string::npos);
  j = default_config();
  j["root"]["children"][0]["restart"] = "sometimes";
  CHECK(problems(j).find("root.children[0].restart") != std::string::npos);
}

TEST_CASE("missing ids, duplicate ids, unknown node types, bad shutdown") {
  auto j = default_config();
  j["root"]["children"][0].erase("id");
  CHECK(problems(j).find("root.children[0].id: is required") != std::string::npos);
  j = default_config();
  j["root"]["children"][2]["id"] = "sessions";
  CHECK(problems(j).find("duplicate id \"sessions\"") != std::string::npos);
  j = default_config();
  j["root"]["children"][2]["type"] = "database";
  CHECK(problems(j).find("root.children[2].type") != std::string::npos);
  j = default_config();
  j["root"]["children"][2]["shutdown"] = "gently";
  CHECK(problems(j).find("\"brutal_kill\", \"infinity\" or a timeout in ms") != std::string::npos);
}

TEST_CASE("a missing root, a non-object, and every error at once") {
  CHECK(problems(json::object()).find("config.root: is required") != std::string::npos);
  CHECK(problems(json::array()).find("config: expected an object") != std::string::npos);
  auto j = default_config();
  j["root"]["children"][1]["size"] = "four";
  j["root"]["children"][1]["worker"]["python"] = 3;
  auto p = problems(j);
  CHECK(p.find("root.children[1].size") != std::string::npos);
  CHECK(p.find("root.children[1].worker.python") != std::string::npos);
}

TEST_CASE("nested supervisors, workers and processes parse") {
  json j = {{"mode", "pool"},
            {"root",
             {{"strategy", "one_for_all"},
              {"children",
               json::array({{{"id", "inner"},
                             {"type", "supervisor"},
                             {"strategy", "rest_for_one"},
                             {"children", json::array({{{"id", "w"}, {"type", "worker"}, {"shutdown", 500}}})}},
                            {{"id", "sleeper"},
                             {"type", "process"},
                             {"command", {"sleep", "60"}},
                             {"restart", "transient"},
                             {"shutdown", "brutal_kill"}}})}}}};
  auto r = parse_config(j);
  REQUIRE_MESSAGE(r, test::why(r));
  CHECK(r->root.flags.strat == supervision::strategy::one_for_all);
  CHECK(r->root.children[1].restart == supervision::restart_type::transient);
  auto p = problems(with_pool({{"id", "p"}, {"type", "process"}}));
  CHECK(p.find("root.children[1].command") != std::string::npos);
}

TEST_CASE("worker recycling: limits parse into the pool, bad values name the field") {
  auto j = default_config();
  auto& w = j["root"]["children"][1]["worker"];
  w["max_requests"] = 500;
  w["max_rss_mb"] = 256;
  w["max_age_ms"] = 3600000;
  w["recycle_jitter"] = 0.25;
  auto r = parse_config(j);
  REQUIRE_MESSAGE(r, test::why(r));
  auto& pool = std::get<pool_config>(r->root.children[1].body);
  CHECK(pool.recycle.max_requests == 500);
  CHECK(pool.recycle.max_rss_mb == 256);
  CHECK(pool.recycle.max_age == std::chrono::milliseconds(3600000));
  CHECK(pool.recycle.jitter == doctest::Approx(0.25));
  // The default: all off, jitter 0.1.
  auto d = parse_config(default_config());
  REQUIRE(d);
  auto& dp = std::get<pool_config>(d->root.children[1].body);
  CHECK_FALSE(dp.recycle.enabled());
  CHECK(dp.recycle.jitter == doctest::Approx(0.1));

  w["max_requests"] = -1;
  w["max_rss_mb"] = "big";
  w["max_age_ms"] = 1.5;
  w["recycle_jitter"] = 1;
  auto p = problems(j);
  CHECK(p.find("root.children[1].worker.max_requests: expected an integer") != std::string::npos);
  CHECK(p.find("root.children[1].worker.max_rss_mb: expected an integer") != std::string::npos);
  CHECK(p.find("root.children[1].worker.max_age_ms: expected an integer") != std::string::npos);
  CHECK(p.find("root.children[1].worker.recycle_jitter: expected a number in [0.0, 1.0)")
        != std::string::npos);
  // A worker on its own has nobody to replace it: no recycling keys there.
  json single = {{"root",
                  {{"children",
                    json::array({{{"id", "w"}, {"type", "worker"}, {"max_requests", 10}}})}}}};
  CHECK(problems(single).find("root.children[0].max_requests: unknown key") != std::string::npos);
}

TEST_CASE("a config file with a syntax error names the file") {
  auto r = load_config("/nonexistent/dspex.json");
  REQUIRE_FALSE(r);
  CHECK(detail_of(r.error()).find("cannot open") != std::string::npos);
}

} // TEST_SUITE
