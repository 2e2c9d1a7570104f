// Strict built-in commands, seen from the host: an argument key a built-in
// does not take (the worker's error type invalid_args) is the caller's
// invalid_request, never a worker fault; configure_lm with api_base is
// refused through a session and leaves no LM to replay; the mock adapter
// refuses the same keys with the worker's message. Real workers.
#include <doctest/doctest.h>

#include <dspex/actors/adapters/adapter.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/node.hpp>

#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/why.hpp"

#include <caf/all.hpp>

#include <string>

using namespace dspex;
using namespace dspex::test;

namespace {

const std::string secret = "sk-SECRET-strict-args";

json api_base_args() {
  return json{{"provider", "openai"}, {"model", "m"}, {"api_key", secret},
              {"api_base", "http://127.0.0.1:9/v1"}};
}

const std::string api_base_message =
  "configure_lm: unknown argument 'api_base' (use 'base_url' instead of 'api_base'); "
  "accepted: api_key, base_url, latency_ms, max_tokens, model, provider, responses, script, "
  "temperature, timeout, timeout_s";

} // namespace

TEST_SUITE("strict_args") {

TEST_CASE("a built-in's unknown argument key is invalid_request naming it; the worker serves on") {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto n = start_test_node(sys, small_tree("pool", 1));
  auto ping = n->execute("ping");
  REQUIRE_MESSAGE(ping, why(ping));
  auto pid = (*ping)["pid"];

  auto anon = n->execute("configure_lm", api_base_args());
  REQUIRE_FALSE(anon);
  CHECK(is(anon.error(), errc::invalid_request));
  CHECK(detail_of(anon.error()) == api_base_message);
  CHECK(describe(anon.error()).find(secret) == std::string::npos);

  // In a session: refused, and the registry keeps no LM to replay.
  auto in_session = n->execute_in_session("s1", "configure_lm", api_base_args());
  REQUIRE_FALSE(in_session);
  CHECK(is(in_session.error(), errc::invalid_request));
  auto info = n->execute_in_session("s1", "lm_info");
  REQUIRE_MESSAGE(info, why(info));
  CHECK((*info)["lm"].is_null());

  for (auto [command, args] : {std::pair<std::string, json>{"ping", {{"x", 1}}},
                               {"list_programs", {{"session", "s1"}}},
                               {"fault_exit", {{"code", 1}, {"now", true}}}}) {
    CAPTURE(command);
    auto r = n->execute(command, args);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_request));
    CHECK(detail_of(r.error()).rfind(command + ": unknown argument", 0) == 0);
  }
  // echo takes any keys and answers them all.
  auto echo = n->execute("echo", json{{"payload", 1}, {"other", "x"}});
  REQUIRE(echo);
  CHECK(*echo == json{{"payload", 1}, {"other", "x"}});

  // None of it was a fault: the same process, no crash, counted as the
  // caller's invalid_request.
  auto again = n->execute("ping");
  REQUIRE(again);
  CHECK((*again)["pid"] == pid);
  auto pool = n->status()["pools"]["default"];
  CHECK(pool["crashes"] == 0);
  CHECK(pool["replaced"]["failures"] == 0);
  CHECK(pool["requests"]["invalid_request"].get<int>() >= 5);
  n->stop();
}

TEST_CASE("the mock adapter refuses the keys the worker refuses, with its message") {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto n = start_test_node(sys, small_tree("single", 1));
  auto port = make_python_port_adapter(n);
  REQUIRE_MESSAGE(port, why(port));
  auto mock = make_mock_adapter();
  for (auto* a : {port->get(), mock.get()}) {
    CAPTURE(a->name());
    auto lm = a->configure_lm(api_base_args());
    REQUIRE_FALSE(lm);
    CHECK(is(lm.error(), errc::invalid_request));
    CHECK(detail_of(lm.error()) == api_base_message);
    auto prog = a->create_program("s", json{{"signature", "q -> a"}, {"name", "x"}, {"inputs", 1}});
    REQUIRE_FALSE(prog);
    CHECK(is(prog.error(), errc::invalid_request));
    CHECK(detail_of(prog.error())
          == "create_program: unknown arguments 'inputs', 'name'; accepted: description, id, "
             "program_id, replace, signature");
    // The accepted keys still work.
    CHECK(a->configure_lm(json{{"provider", "mock"}, {"model", "m"}, {"api_key", "k"}}));
    CHECK(a->create_program("s", json{{"signature", "q -> a"}, {"id", "p"}}));
  }
  n->stop();
}

}
