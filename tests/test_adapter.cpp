// Adapters: the mock (every operation, its errors, determinism and parity
// with the Python worker), the registry (names, options, DSPEX_ADAPTER), the
// Python adapters on real nodes, and the fallback cascade.
#include <doctest/doctest.h>

#include <dspex/actors/adapters/adapter.hpp>
#include <dspex/actors/node/node.hpp>

#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <cstdlib>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

struct adapter_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  node_options opts;
  std::vector<std::shared_ptr<node>> nodes;

  adapter_fixture() { opts.python_path = DSPEX_TEST_PYTHON_DIR; }

  ~adapter_fixture() {
    for (auto& n : nodes)
      n->stop();
  }

  std::shared_ptr<node> start(const std::string& mode) {
    auto tc = parse_config(small_tree(mode, 2, false));
    REQUIRE_MESSAGE(tc, why(tc));
    auto n = node::start(sys, *tc, opts);
    REQUIRE_MESSAGE(n, why(n));
    nodes.push_back(*n);
    return *n;
  }
};

// Sets an environment variable for one scope.
struct scoped_env {
  std::string key;
  scoped_env(std::string k, const char* value) : key(std::move(k)) {
    ::setenv(key.c_str(), value, 1);
  }
  ~scoped_env() { ::unsetenv(key.c_str()); }
};

std::string py_type(const caf::expected<json>& r) {
  if (r)
    return "(success)";
  auto pe = python_error_of(r.error());
  return pe ? pe->type : describe(r.error());
}

std::string py_message(const caf::expected<json>& r) {
  if (r)
    return "(success)";
  auto pe = python_error_of(r.error());
  return pe ? pe->message : describe(r.error());
}

adapter_ptr must(caf::expected<adapter_ptr> a) {
  REQUIRE_MESSAGE(a, why(a));
  return *a;
}

// The same scripted conversation on any adapter; returns every reply with the
// fields that differ by nature (timestamps) removed.
json script(adapter& a) {
  json out = json::array();
  auto keep = [&](const caf::expected<json>& r) {
    if (!r) {
      auto pe = python_error_of(r.error());
      out.push_back({{"error", pe ? pe->type + ": " + pe->message : describe(r.error())}});
      return;
    }
    auto j = *r;
    if (j.contains("programs"))
      for (auto& p : j["programs"]) {
        p.erase("created_at");
        p.erase("last_executed_at");
      }
    out.push_back(j);
  };
  keep(a.execute_program("s", "missing", json::object()));
  keep(a.create_program("s", {{"id", "qa"}, {"signature", "question -> answer"}}));
  keep(a.execute_program("s", "qa", {{"question", "What is 2+2?"}}));  // no LM yet
  keep(a.configure_lm({{"provider", "mock"}}));
  keep(a.execute_program("s", "qa", {{"question", "What is 2+2?"}, {"extra", 1}}));
  keep(a.execute_program("s", "qa", {{"question", json{{"b", 2.5}, {"a", {1, "x", nullptr}}}}}));
  keep(a.execute_program("s", "qa", json::object()));
  keep(a.create_program("s", {{"id", "sum"}, {"signature", "a, b: int -> c, d"},
                              {"description", "adds"}}));
  keep(a.execute_program("s", "sum", {{"a", "é \"quoted\"\n"}, {"b", 3}}));
  json text_field = {{"name", "text"}, {"description", "t"}};
  json score_field = {{"name", "score"}, {"type", "float"}};
  json obj_sig = {{"inputs", json::array({text_field})},
                  {"outputs", json::array({json("label"), score_field})}};
  keep(a.create_program("s", {{"id", "obj"}, {"signature", obj_sig}}));
  keep(a.execute_program("s", "obj", {{"text", "hi"}}));
  keep(a.create_program("s", {{"id", "qa"}, {"signature", "q -> a"}}));
  keep(a.create_program("s", {{"signature", "q -> a, q"}}));
  keep(a.create_program("s", {{"signature", "no arrow"}}));
  keep(a.create_program("s", {{"signature", "a b -> c"}}));
  keep(a.create_program("s", {{"signature", "q ->"}}));
  keep(a.create_program("s", {{"signature", 42}}));
  keep(a.create_program("s", {{"signature", {{"inputs", {"q"}}}}}));
  keep(a.create_program("s", {{"signature", {{"outputs", {7}}}}}));
  keep(a.create_program("s", {{"id", ""}, {"signature", "q -> a"}}));
  keep(a.create_program("s", {{"description", "no signature"}}));
  keep(a.list_programs("s"));
  keep(a.list_programs("other"));
  keep(a.delete_program("s", "sum"));
  keep(a.delete_program("s", "sum"));
  keep(a.list_programs("s"));
  keep(a.configure_lm({{"provider", "mock"}, {"responses", {{"answer", "four"}}}}));
  keep(a.execute_program("s", "qa", {{"question", "What is 2+2?"}}));
  keep(a.configure_lm({{"provider", "nope"}}));
  return out;
}

// A level that can be switched off: then it answers `unavailable`.
class switchable final : public adapter {
public:
  explicit switchable(adapter_ptr inner) : inner_(std::move(inner)) {}
  std::atomic<bool> on{true};
  std::atomic<int> calls{0};

  std::string name() const override { return "switchable"; }
  caf::expected<json> create_program(const std::string& s, json args) override {
    return gate([&] { return inner_->create_program(s, std::move(args)); });
  }
  caf::expected<json> execute_program(const std::string& s, const std::string& p,
                                      json inputs) override {
    return gate([&] { return inner_->execute_program(s, p, std::move(inputs)); });
  }
  caf::expected<json> list_programs(const std::string& s) override {
    return gate([&] { return inner_->list_programs(s); });
  }
  caf::expected<json> delete_program(const std::string& s, const std::string& p) override {
    return gate([&] { return inner_->delete_program(s, p); });
  }
  caf::expected<json> configure_lm(json args) override {
    return gate([&] { return inner_->configure_lm(std::move(args)); });
  }
  caf::expected<json> health() override {
    return gate([&] { return inner_->health(); });
  }

private:
  template <class F>
  caf::expected<json> gate(F f) {
    ++calls;
    if (!on)
      return make_error(errc::unavailable, "switched off");
    return f();
  }
  adapter_ptr inner_;
};

} // namespace

TEST_SUITE("adapter") {

// -- mock --------------------------------------------------------------------------

TEST_CASE("mock: create, execute, list, delete; outputs are deterministic") {
  auto a = make_mock_adapter();
  CHECK(a->name() == "mock");
  auto created = a->create_program("s1", {{"signature", "question -> answer"}});
  REQUIRE(created);
  CHECK((*created)["status"] == "created");
  CHECK((*created)["program_id"] == "prog_1");
  CHECK((*created)["signature"]
        == json{{"inputs", {{{"name", "question"}, {"description", ""}}}},
                {"outputs", {{{"name", "answer"}, {"description", ""}}}}});

  // No LM yet: the worker's own error.
  auto no_lm = a->execute_program("s1", "prog_1", {{"question", "hi"}});
  REQUIRE_FALSE(no_lm);
  CHECK(is(no_lm.error(), errc::python_error));
  CHECK(py_type(no_lm) == "RuntimeError");
  CHECK(py_message(no_lm) == "No LM is loaded");

  auto lm = a->configure_lm({{"provider", "mock"}});
  REQUIRE(lm);
  CHECK(*lm == json{{"status", "configured"}, {"provider", "mock"}, {"model", "mock"},
                    {"backend", "builtin"}});
  auto r1 = a->execute_program("s1", "prog_1", {{"question", "hi"}, {"ignored", true}});
  REQUIRE(r1);
  CHECK((*r1)["outputs"] == json{{"answer", "mock answer for {\"question\": \"hi\"}"}});
  CHECK((*r1)["lm"] == "mock/mock");
  CHECK((*r1)["program_id"] == "prog_1");
  auto r2 = a->execute_program("s1", "prog_1", {{"question", "hi"}});
  CHECK(*r1 == *r2);
  auto r3 = a->execute_program("s1", "prog_1", {{"question", "ho"}});
  CHECK((*r3)["outputs"] != (*r1)["outputs"]);
  // A fresh mock gives the same answers: nothing depends on history.
  auto b = make_mock_adapter();
  REQUIRE(b->configure_lm({{"provider", "mock"}}));
  REQUIRE(b->create_program("elsewhere", {{"id", "p"}, {"signature", "question -> answer"}}));
  CHECK((*b->execute_program("elsewhere", "p", {{"question", "hi"}}))["outputs"]
        == (*r1)["outputs"]);

  // Several fields, the object form, configured responses.
  REQUIRE(a->create_program("s1", {{"id", "two"}, {"signature", "a, b -> c, d"}}));
  auto two = a->execute_program("s1", "two", {{"b", 2}, {"a", "x"}});
  REQUIRE(two);
  CHECK((*two)["outputs"] == json{{"c", "mock c for {\"a\": \"x\", \"b\": 2}"},
                                  {"d", "mock d for {\"a\": \"x\", \"b\": 2}"}});
  REQUIRE(a->create_program(
    "s1", {{"id", "obj"},
           {"signature", {{"inputs", {{{"name", "text"}}}}, {"outputs", {{{"name", "label"}}}}}}}));
  REQUIRE(a->configure_lm({{"provider", "mock"}, {"responses", {{"label", "positive"}}}}));
  auto obj = a->execute_program("s1", "obj", {{"text", "great"}});
  REQUIRE(obj);
  CHECK((*obj)["outputs"] == json{{"label", "positive"}});

  auto listed = a->list_programs("s1");
  REQUIRE(listed);
  CHECK((*listed)["total_count"] == 3);
  REQUIRE((*listed)["programs"].size() == 3);
  CHECK((*listed)["programs"][0]["program_id"] == "prog_1");
  CHECK((*listed)["programs"][0]["executions"] == 3);
  CHECK((*listed)["programs"][0]["session_id"] == "s1");
  CHECK((*listed)["programs"][2]["program_id"] == "obj");
  CHECK((*listed)["programs"][2]["last_executed_at"].is_number());
  // Sessions are separate namespaces; "" is the global one.
  CHECK((*a->list_programs("s2"))["total_count"] == 0);
  CHECK((*a->list_programs(""))["total_count"] == 0);
  REQUIRE(a->create_program("", {{"id", "g"}, {"signature", "q -> a"}}));
  CHECK((*a->list_programs(""))["programs"][0]["session_id"].is_null());

  auto del = a->delete_program("s1", "two");
  REQUIRE(del);
  CHECK(*del == json{{"deleted", true}, {"program_id", "two"}});
  CHECK((*a->list_programs("s1"))["total_count"] == 2);
  auto again = a->delete_program("s1", "two");
  CHECK(py_type(again) == "KeyError");
  CHECK(py_message(again) == "program 'two' not found in session 's1'");

  auto h = a->health();
  REQUIRE(h);
  CHECK((*h)["status"] == "ok");
  CHECK((*h)["programs"] == 3);
}

TEST_CASE("mock: errors are the worker's, as python_error with its exception type") {
  auto a = make_mock_adapter();
  REQUIRE(a->configure_lm({{"provider", "mock"}}));
  CHECK(py_message(a->execute_program("s", "nope", {}))
        == "program 'nope' not found in session 's'");
  CHECK(py_type(a->execute_program("", "nope", {})) == "KeyError");
  CHECK(py_message(a->execute_program("", "nope", {}))
        == "program 'nope' not found in the global namespace");
  CHECK(py_message(a->execute_program("s", "", {})) == "program_id must be a non-empty string");

  REQUIRE(a->create_program("s", {{"id", "p"}, {"signature", "a, b -> c"}}));
  auto missing = a->execute_program("s", "p", {{"a", 1}});
  CHECK(py_type(missing) == "ValueError");
  CHECK(py_message(missing) == "missing input field(s) for program 'p': b");
  CHECK(py_type(a->execute_program("s", "p", json::array())) == "TypeError");

  auto dup = a->create_program("s", {{"id", "p"}, {"signature", "q -> a"}});
  CHECK(py_message(dup) == "Program with ID 'p' already exists in session 's'");
  CHECK(py_message(a->create_program("s", {{"signature", "q"}}))
        == "signature 'q' must contain exactly one '->'");
  CHECK(py_message(a->create_program("s", {{"signature", "a -> b -> c"}}))
        == "signature 'a -> b -> c' must contain exactly one '->'");
  CHECK(py_message(a->create_program("s", {{"signature", "q ->"}}))
        == "signature needs at least one output field");
  CHECK(py_message(a->create_program("s", {{"signature", "q -> q"}}))
        == "signature field 'q' appears twice");
  CHECK(py_message(a->create_program("s", {{"signature", "1x -> a"}}))
        == "signature field name '1x' is not an identifier");
  CHECK(py_type(a->create_program("s", {{"signature", 3}})) == "TypeError");
  CHECK(py_message(a->create_program("s", {{"signature", {{"inputs", {"q"}}}}}))
        == "signature 'outputs' must be a list of fields");
  CHECK(py_message(a->create_program("s", {{"signature", {{"outputs", {{{"name", nullptr}}}}}}}))
        == "signature field name None is not an identifier");
  CHECK(py_message(a->create_program("s", {{"signature", "q -> a"}, {"description", 5}}))
        == "description must be a string");
  CHECK(py_message(a->create_program("s", {})) == "create_program needs a \"signature\"");
  CHECK(py_message(a->create_program("s", {{"id", 7}, {"signature", "q -> a"}}))
        == "program id must be a non-empty string");
  auto not_object = a->create_program("s", json::array());
  REQUIRE_FALSE(not_object);
  CHECK(is(not_object.error(), errc::invalid_request));
  CHECK(py_message(a->configure_lm({{"provider", "bard"}}))
        == "unknown LM provider 'bard' (expected 'mock' or 'openai')");
  CHECK(py_type(a->configure_lm({{"provider", "mock"}, {"responses", "x"}})) == "TypeError");
  // Nothing half-created along the way.
  CHECK((*a->list_programs("s"))["total_count"] == 1);
  // Program ids chosen by the mock skip ids a client took.
  REQUIRE(a->create_program("t", {{"id", "prog_1"}, {"signature", "q -> a"}}));
  CHECK((*a->create_program("t", {{"signature", "q -> a"}}))["program_id"] == "prog_2");
}

// -- registry ----------------------------------------------------------------------

TEST_CASE("registry: names, options from JSON, DSPEX_ADAPTER") {
  ::unsetenv(adapter_env_var);
  CHECK(adapter_names() == std::vector<std::string>{"python_pool", "python_port", "mock"});
  CHECK(must(make_adapter("mock", {}))->name() == "mock");
  auto unknown = make_adapter("pool", {});
  REQUIRE_FALSE(unknown);
  CHECK(is(unknown.error(), errc::invalid_config));
  CHECK(detail_of(unknown.error()).find("unknown adapter \"pool\"") != std::string::npos);
  auto no_node = make_adapter("python_pool", {});
  REQUIRE_FALSE(no_node);
  CHECK(is(no_node.error(), errc::invalid_config));
  CHECK(is(make_adapter("python_port", {}).error(), errc::invalid_config));

  auto opts = parse_adapter_options({{"name", "mock"}, {"fallback", true}, {"timeout_ms", 500}});
  REQUIRE(opts);
  CHECK(opts->name == "mock");
  CHECK(opts->fallback);
  CHECK(opts->timeout == 500ms);
  CHECK_FALSE(parse_adapter_options(json::object())->fallback);  // off by default
  auto bad = parse_adapter_options({{"name", "pool"}, {"fallback", "yes"}, {"typo", 1}});
  REQUIRE_FALSE(bad);
  CHECK(is(bad.error(), errc::invalid_config));
  auto d = detail_of(bad.error());
  CHECK(d.find("adapter.name: expected one of python_pool | python_port | mock, found string "
               "\"pool\"") != std::string::npos);
  CHECK(d.find("adapter.fallback: expected true or false") != std::string::npos);
  CHECK(d.find("adapter.typo: unknown key") != std::string::npos);

  // Without a node, a name or the variable: mock.
  CHECK(must(select_adapter({}))->name() == "mock");
  // By config.
  auto by_config = select_adapter({}, *parse_adapter_options({{"name", "python_pool"}}));
  REQUIRE_FALSE(by_config);  // no node for it
  CHECK(is(by_config.error(), errc::invalid_config));
  adapter_options bogus;
  bogus.name = "bogus";
  CHECK(is(select_adapter({}, bogus).error(), errc::invalid_config));
  // By environment, over the config.
  {
    scoped_env env(adapter_env_var, "mock");
    CHECK(must(select_adapter({}, *parse_adapter_options({{"name", "python_pool"}})))->name()
          == "mock");
  }
  {
    scoped_env env(adapter_env_var, "python_sock");
    auto r = select_adapter({});
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_config));
    CHECK(detail_of(r.error()).find("DSPEX_ADAPTER: unknown adapter \"python_sock\"")
          != std::string::npos);
  }
  {
    scoped_env env(adapter_env_var, "");  // empty counts as unset
    CHECK(must(select_adapter({}))->name() == "mock");
  }
}

// -- Python adapters on real nodes ---------------------------------------------------

TEST_CASE_FIXTURE(adapter_fixture, "python_pool over a pool node; registry follows the node's mode") {
  ::unsetenv(adapter_env_var);
  auto n = start("pool");
  auto a = must(select_adapter(adapter_sources::of(n)));
  CHECK(a->name() == "python_pool");
  auto h = a->health();
  REQUIRE_MESSAGE(h, why(h));
  CHECK((*h)["status"] == "ok");
  CHECK((*h)["mode"] == "pool");
  REQUIRE(a->configure_lm({{"provider", "mock"}}));
  auto c = a->create_program("s1", {{"signature", "question -> answer"}});
  REQUIRE_MESSAGE(c, why(c));
  auto pid = (*c)["program_id"].get<std::string>();
  auto r = a->execute_program("s1", pid, {{"question", "hi"}});
  REQUIRE_MESSAGE(r, why(r));
  CHECK((*r)["outputs"] == json{{"answer", "mock answer for {\"question\": \"hi\"}"}});
  auto l = a->list_programs("s1");
  REQUIRE(l);
  CHECK((*l)["total_count"] == 1);
  REQUIRE(a->delete_program("s1", pid));
  CHECK(py_type(a->delete_program("s1", pid)) == "KeyError");
  // A single-mode node is not a pool.
  CHECK(is(make_python_pool_adapter(start("single")).error(), errc::invalid_config));
  CHECK(is(make_python_port_adapter(n).error(), errc::invalid_config));
}

TEST_CASE_FIXTURE(adapter_fixture, "python_port over a single node speaks exactly as the mock") {
  ::unsetenv(adapter_env_var);
  auto n = start("single");
  auto port = must(select_adapter(adapter_sources::of(n)));
  CHECK(port->name() == "python_port");
  auto h = port->health();
  REQUIRE_MESSAGE(h, why(h));
  CHECK((*h)["worker"]["mode"] == "single");
  // The same conversation on the Python worker and on the mock: same
  // results, same errors (types and messages), same deterministic outputs.
  auto mock = make_mock_adapter();
  auto on_python = script(*port);
  auto on_mock = script(*mock);
  REQUIRE(on_python.size() == on_mock.size());
  CHECK(on_mock[0]["error"] == "KeyError: program 'missing' not found in session 's'");
  CHECK(on_mock[2]["error"] == "RuntimeError: No LM is loaded");
  CHECK(on_mock[5]["outputs"]["answer"]
        == "mock answer for {\"question\": {\"a\": [1, \"x\", null], \"b\": 2.5}}");
  CHECK(on_mock[21]["total_count"] == 3);
  for (std::size_t i = 0; i < on_python.size(); ++i) {
    INFO("step " << i);
    CHECK(on_python[i].dump() == on_mock[i].dump());
  }
}

// -- fallback cascade ----------------------------------------------------------------

TEST_CASE_FIXTURE(adapter_fixture, "cascade on: a disabled node's requests are served degraded by the mock") {
  ::unsetenv(adapter_env_var);
  auto n = start("disabled");
  CHECK(degrades(make_error(errc::unavailable)));
  CHECK(degrades(make_error(errc::circuit_open)));
  CHECK_FALSE(degrades(make_error(errc::python_error)));
  CHECK_FALSE(degrades(make_error(errc::command_timeout)));
  CHECK_FALSE(degrades(make_error(errc::pool_saturated)));

  // Off (the default): the error comes back as it is.
  auto plain = must(select_adapter(adapter_sources::of(n)));
  CHECK(plain->name() == "python_pool");
  auto off = plain->create_program("s", {{"signature", "q -> a"}});
  REQUIRE_FALSE(off);
  CHECK(is(off.error(), errc::unavailable));
  CHECK(is(plain->health().error(), errc::unavailable));

  // On: python_pool -> mock, every reply marked.
  auto a = must(select_adapter(adapter_sources::of(n), *parse_adapter_options({{"fallback", true}})));
  CHECK(a->name() == "python_pool>mock");
  auto lm = a->configure_lm({{"provider", "mock"}});
  REQUIRE(lm);
  CHECK((*lm)["degraded"] == true);
  CHECK((*lm)["adapter"] == "mock");
  CHECK((*lm)["degraded_reason"].get<std::string>().rfind("unavailable", 0) == 0);
  auto c = a->create_program("s", {{"signature", "q -> a"}});
  REQUIRE(c);
  CHECK((*c)["degraded"] == true);
  auto pid = (*c)["program_id"].get<std::string>();
  auto r = a->execute_program("s", pid, {{"q", "x"}});
  REQUIRE(r);
  CHECK((*r)["degraded"] == true);
  CHECK((*r)["adapter"] == "mock");
  CHECK((*r)["outputs"] == json{{"a", "mock a for {\"q\": \"x\"}"}});
  auto l = a->list_programs("s");
  REQUIRE(l);
  CHECK((*l)["total_count"] == 1);
  CHECK((*l)["degraded"] == true);
  // The program's own errors are not "cannot serve": no marking, no masking.
  auto missing = a->execute_program("s", pid, json::object());
  CHECK(py_type(missing) == "ValueError");
  auto h = a->health();
  REQUIRE(h);
  CHECK((*h)["status"] == "degraded");
  CHECK((*h)["adapter"] == "mock");
  CHECK((*h)["levels"][0]["healthy"] == false);
  // A cascade with no node at all for the chosen level behaves the same.
  scoped_env env(adapter_env_var, "python_pool");
  auto nodeless = must(select_adapter({}, *parse_adapter_options({{"fallback", true}})));
  REQUIRE(nodeless->configure_lm({{"provider", "mock"}}));
  auto nc = nodeless->create_program("s", {{"signature", "q -> a"}});
  REQUIRE(nc);
  CHECK((*nc)["adapter"] == "mock");
}

TEST_CASE_FIXTURE(adapter_fixture, "cascade: pool -> single -> mock, with programs and LM replayed on the way down") {
  ::unsetenv(adapter_env_var);
  auto pool = start("pool");
  auto single = start("single");
  adapter_sources src{pool, single};
  auto a = must(select_adapter(src, *parse_adapter_options({{"fallback", true}})));
  CHECK(a->name() == "python_pool>python_port>mock");

  // Healthy: the pool serves, replies are untouched.
  REQUIRE(a->configure_lm({{"provider", "mock"}}));
  auto c = a->create_program("s", {{"signature", "question -> answer"}});
  REQUIRE_MESSAGE(c, why(c));
  CHECK_FALSE(c->contains("degraded"));
  auto pid = (*c)["program_id"].get<std::string>();
  auto healthy = a->execute_program("s", pid, {{"question", "q1"}});
  REQUIRE(healthy);
  CHECK_FALSE(healthy->contains("degraded"));

  // The pool stops (shutting_down): the single worker serves, and it gets
  // the LM and the session's program first.
  pool->stop();
  auto on_single = a->execute_program("s", pid, {{"question", "q1"}});
  REQUIRE_MESSAGE(on_single, why(on_single));
  CHECK((*on_single)["adapter"] == "python_port");
  CHECK((*on_single)["degraded"] == true);
  CHECK((*on_single)["degraded_reason"].get<std::string>().rfind("shutting_down", 0) == 0);
  CHECK((*on_single)["outputs"] == (*healthy)["outputs"]);

  // Created while degraded: remembered for the levels below.
  auto c2 = a->create_program("s", {{"signature", "x -> y"}});
  REQUIRE(c2);
  CHECK((*c2)["adapter"] == "python_port");

  // The single node stops too: the mock serves, with both programs.
  single->stop();
  auto on_mock = a->execute_program("s", pid, {{"question", "q1"}});
  REQUIRE_MESSAGE(on_mock, why(on_mock));
  CHECK((*on_mock)["adapter"] == "mock");
  CHECK((*on_mock)["outputs"] == (*healthy)["outputs"]);
  auto listed = a->list_programs("s");
  REQUIRE(listed);
  CHECK((*listed)["total_count"] == 2);
  REQUIRE(a->delete_program("s", pid));
  CHECK((*a->list_programs("s"))["total_count"] == 1);
}

TEST_CASE("cascade: a level that comes back gets what changed while it was away") {
  auto top = std::make_shared<switchable>(make_mock_adapter());
  auto a = make_fallback_adapter({top, make_mock_adapter()});
  CHECK(a->name() == "switchable>mock");
  REQUIRE(a->configure_lm({{"provider", "mock"}}));
  REQUIRE(a->create_program("s", {{"id", "p1"}, {"signature", "q -> a"}}));
  auto healthy = a->execute_program("s", "p1", {{"q", "x"}});
  REQUIRE(healthy);
  CHECK_FALSE(healthy->contains("degraded"));

  top->on = false;
  auto degraded = a->execute_program("s", "p1", {{"q", "x"}});
  REQUIRE(degraded);
  CHECK((*degraded)["degraded"] == true);
  CHECK((*degraded)["adapter"] == "mock");
  CHECK((*degraded)["degraded_reason"] == "unavailable: switched off");
  CHECK((*degraded)["outputs"] == (*healthy)["outputs"]);
  // While away: a new program (the cascade picks its id), a deletion, a new LM.
  auto p2 = a->create_program("s", {{"signature", "q -> a"}});
  REQUIRE(p2);
  auto p2_id = (*p2)["program_id"].get<std::string>();
  REQUIRE(a->delete_program("s", "p1"));
  REQUIRE(a->configure_lm({{"provider", "mock"}, {"responses", {{"a", "fresh"}}}}));
  auto hl = a->health();
  REQUIRE(hl);
  CHECK((*hl)["status"] == "degraded");

  top->on = true;
  auto listed = a->list_programs("s");
  REQUIRE(listed);
  CHECK_FALSE(listed->contains("degraded"));
  REQUIRE((*listed)["total_count"] == 1);
  CHECK((*listed)["programs"][0]["program_id"] == p2_id);
  auto back = a->execute_program("s", p2_id, {{"q", "x"}});
  REQUIRE(back);
  CHECK_FALSE(back->contains("degraded"));
  CHECK((*back)["outputs"] == json{{"a", "fresh"}});
  CHECK((*a->health())["status"] == "ok");

  // A program's own error is never degraded past.
  top->calls = 0;
  auto err = a->execute_program("s", "nope", {});
  CHECK(py_type(err) == "KeyError");
  CHECK(top->calls == 1);
}

} // TEST_SUITE
