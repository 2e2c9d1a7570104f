// JSON depth on every path into a node (bridge/json_limits.hpp,
// docs/security.md "JSON depth and size"). First the pieces: the text
// scanner against nlohmann's parser and a recursive reference (fuzzed), the
// iterative value check, the writer's bound, the reply parser, the control
// request and remote protocol parsers, the config key. Then real processes:
// args nested 20,000 and 1,000 deep through the embedding API, the control
// socket of a real `dspex run` and its router port (`exec --node`); results
// nested too deep; and a victim client that keeps getting ok, with the
// breaker closed, while another sends request after request nested past
// what Python's json can parse.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/bridge/json_limits.hpp>
#include <dspex/bridge/json_writer.hpp>
#include <dspex/bridge/protocol.hpp>
#include <dspex/cli/control.hpp>

#include <dspex/cli/control_request.hpp>
#include "support/cli_process.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/loopback.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
using bridge::default_max_json_depth;

namespace {

// -- values and texts ----------------------------------------------------------

// The reference: the depth by plain recursion (small inputs only).
std::size_t reference_depth(const json& v) {
  if (!v.is_structured())
    return 0;
  std::size_t d = 0;
  for (const auto& x : v)
    d = std::max(d, reference_depth(x));
  return d + 1;
}

// [[...[]...]] `depth` deep, built without recursion (moves only).
json deep_array(std::size_t depth) {
  json v = json::array();
  for (std::size_t i = 1; i < depth; ++i) {
    json outer = json::array();
    outer.push_back(std::move(v));
    v = std::move(outer);
  }
  return v;
}

std::string brackets(std::size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

// {"payload": <array `inner` deep>}: args `inner` + 1 deep.
json deep_args(std::size_t inner) {
  json a = json::object();
  a["payload"] = deep_array(inner);
  return a;
}

std::string deep_args_text(std::size_t inner) {
  return R"({"payload":)" + brackets(inner) + "}";
}

// A random JSON value with strings that hold brackets, quotes and escapes.
json random_value(std::mt19937& rng, int depth_left) {
  // Short ones, and long ones whose escapes fall on either side of the
  // scanner's switch from a byte loop to memchr (32 bytes).
  static const std::vector<std::string> strings = [] {
    std::vector<std::string> v = {"", "[", "]", "{", "}", "\"", "\\", "\\\"", "[\"{", "a\\",
                                  "x\\\\", "\xC3\xA9[", "\n{"};
    for (std::size_t n = 28; n <= 36; ++n) {
      v.push_back(std::string(n, 'x') + "\"[");
      v.push_back(std::string(n, 'x') + "\\\"]" + std::string(40, 'y'));
      v.push_back(std::string(n, '\\') + "{");
    }
    return v;
  }();
  std::uniform_int_distribution<int> kind(0, depth_left > 0 ? 6 : 3);
  switch (kind(rng)) {
    case 0: return nullptr;
    case 1: return static_cast<int>(rng() % 100) - 50;
    case 2: return strings[rng() % strings.size()];
    case 3: return rng() % 2 == 0;
    case 4:
    case 5: {
      json a = json::array();
      for (int n = static_cast<int>(rng() % 4); n > 0; --n)
        a.push_back(random_value(rng, depth_left - 1));
      return a;
    }
    default: {
      json o = json::object();
      for (int n = static_cast<int>(rng() % 4); n > 0; --n)
        o[strings[rng() % strings.size()]] = random_value(rng, depth_left - 1);
      return o;
    }
  }
}

// Random text from JSON-ish tokens and stray bytes.
std::string random_text(std::mt19937& rng) {
  static const std::vector<std::string> tokens = {
    "[", "]", "{", "}", "\"", "\\", ",", ":", "1", "a", " ", "\"[\"", "\"\\\"\"", "\"\\\\\"",
    "null", "\"k\":", "\xFF", "\\u005b", "\"]", "[\"", "{\"a\":", "true"};
  std::string s;
  for (int n = static_cast<int>(rng() % 24); n > 0; --n)
    s += tokens[rng() % tokens.size()];
  return s;
}

// nlohmann's parser's own view of the text's nesting (its SAX events): a
// parsed value may be shallower, as a duplicate key keeps its last value.
struct sax_depth : nlohmann::json_sax<json> {
  std::size_t depth = 0, deepest = 0;
  bool open() {
    deepest = std::max(deepest, ++depth);
    return true;
  }
  bool close() {
    --depth;
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(json::number_integer_t) override { return true; }
  bool number_unsigned(json::number_unsigned_t) override { return true; }
  bool number_float(json::number_float_t, const std::string&) override { return true; }
  bool string(std::string&) override { return true; }
  bool binary(json::binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(); }
  bool key(std::string&) override { return true; }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

// Every property the scanner must have on `text`.
void check_scanner(const std::string& text) {
  const auto full = bridge::text_depth(text, 1u << 30);
  for (std::size_t stop : {0u, 1u, 2u, 3u, 5u, 8u})
    REQUIRE(bridge::text_depth(text, stop) == std::min<std::size_t>(full, stop + 1));
  if (!json::accept(text))
    return;
  INFO("text: " << text);
  sax_depth events;
  REQUIRE(json::sax_parse(text, &events));
  REQUIRE(full == events.deepest);
  auto v = json::parse(text);
  const auto ref = reference_depth(v);
  REQUIRE(ref <= full);
  REQUIRE(bridge::value_depth(v, 1u << 30) == ref);
  for (std::size_t limit = 0; limit <= full + 1; ++limit) {
    REQUIRE(bridge::text_depth_exceeds(text, limit) == (full > limit));
    REQUIRE(bridge::value_depth_exceeds(v, limit) == (ref > limit));
  }
}

// -- sockets and processes -----------------------------------------------------

// One raw request line to a control socket and its reply line, as a client
// that builds its text by hand would send it (no JSON value on this side).
// "" when the node closed the connection or nothing came within the limit.
std::string control_line(const std::string& path, const std::string& line) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return "";
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    auto text = line + "\n";
    std::size_t off = 0;
    while (off < text.size()) {
      auto n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
      if (n <= 0)
        break;
      off += static_cast<std::size_t>(n);
    }
    auto deadline = std::chrono::steady_clock::now() + eventually;
    while (out.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0)
        continue;
      char buf[4096];
      auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0)
        break;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

json control_json(const std::string& path, const std::string& line) {
  return json::parse(control_line(path, line), nullptr, false);
}

std::string exec_line(const std::string& command, const std::string& args_text) {
  return R"({"op":"exec","command":")" + command + R"(","args":)" + args_text + "}";
}

std::string error_class(const json& r) {
  if (!r.is_object() || !r.contains("error") || !r["error"].is_object())
    return "";
  return r["error"].value("class", "");
}

std::string error_message(const json& r) {
  return r.is_object() && r.contains("error") && r["error"].is_object()
           ? r["error"].value("message", "")
           : "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

json default_pool(const json& status) {
  auto p = status.is_object() && status.contains("pools") ? status["pools"]["default"] : json();
  return p.is_object() ? p : json::object();
}

// A real `dspex run` with a control socket (and a router port when asked).
struct run_fixture {
  bridge::io_loop loop;
  std::string dir, config, sock;
  int port = 0;
  std::unique_ptr<cli_process> node;

  run_fixture() {
    char tmpl[] = "/tmp/dspex-jl-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    config = dir + "/tree.json";
    sock = dir + "/c.sock";
  }
  ~run_fixture() {
    if (node)
      node->stop();
    std::system(("rm -rf " + dir).c_str());
  }

  json status() { return cli::control_call(sock, {{"op", "status"}}, 30s); }

  void start(json extra = json::object(), bool listen = false) {
    auto j = small_tree("pool", 2);
    j.update(extra);
    if (listen) {
      port = free_port();
      j["listen"] = "127.0.0.1:" + std::to_string(port);
    }
    std::ofstream(config) << j.dump(2);
    node = std::make_unique<cli_process>(loop, std::vector<std::string>{"run", config, "--control", sock});
    REQUIRE_MESSAGE(wait_until([&] { return default_pool(status()).value("workers", 0) == 2; }, 60s),
                    node->output());
  }

  bool alive() { return !node->exited.wait(0ms); }

  // What every test ends with: the node runs, another client is served, no
  // worker was lost and the breaker never opened.
  void check_unharmed() {
    REQUIRE_MESSAGE(alive(), node->output());
    auto ping = control_json(sock, exec_line("ping", "{}"));
    CHECK_MESSAGE(ping.value("ok", false), ping.dump());
    auto p = default_pool(status());
    CHECK(p["crashes"] == 0);
    CHECK(p["restarts"] == 0);
    CHECK(p["circuit"] == "closed");
    CHECK(p["circuit_opened"] == 0);
  }
};

} // namespace

TEST_SUITE("json_limits") {

// -- the pieces ----------------------------------------------------------------

TEST_CASE("text_depth counts brackets outside strings and honours escapes") {
  using bridge::text_depth;
  CHECK(text_depth("", 100) == 0);
  CHECK(text_depth("1", 100) == 0);
  CHECK(text_depth("[]", 100) == 1);
  CHECK(text_depth(R"({"a":[1,{"b":[]}]})", 100) == 4);
  CHECK(text_depth(R"(["[[[", "{{{"])", 100) == 1);
  CHECK(text_depth(R"(["\"[[[", "\\", [2]])", 100) == 2);     // \" inside, \\ closes
  CHECK(text_depth(R"(["\\\"[", [[3]]])", 100) == 3);          // \\ then \" : still inside
  CHECK(text_depth(R"("unterminated [[[)", 100) == 0);
  CHECK(text_depth("]]]}}}[", 100) == 1);                      // never below 0
  CHECK(text_depth(brackets(100000), 10) == 11);                // stops early
  CHECK_FALSE(bridge::text_depth_exceeds(brackets(512), 512));
  CHECK(bridge::text_depth_exceeds(brackets(513), 512));
  // Short text is not scanned: it cannot parse that deep.
  CHECK_FALSE(bridge::text_depth_exceeds(std::string(1024, '['), 512));
}

TEST_CASE("fuzz: the scanner agrees with nlohmann's parser and a recursive reference") {
  std::mt19937 rng(20290);  // fixed: a failure reproduces
  int accepted = 0;
  for (int i = 0; i < 40000; ++i) {
    auto text = random_text(rng);
    check_scanner(text);
    accepted += json::accept(text);
  }
  for (int i = 0; i < 4000; ++i) {
    auto text = random_value(rng, 6).dump();
    check_scanner(text);
    accepted += json::accept(text);
    // The same text with a byte changed, inserted or removed.
    for (int m = 0; m < 4; ++m) {
      auto mutated = text;
      auto at = mutated.empty() ? 0 : rng() % mutated.size();
      static const char bytes[] = "[]{}\"\\,: a1";
      auto b = bytes[rng() % (sizeof bytes - 1)];
      switch (rng() % 3) {
        case 0: if (!mutated.empty()) mutated[at] = b; break;
        case 1: mutated.insert(mutated.begin() + static_cast<long>(at), b); break;
        default: if (!mutated.empty()) mutated.erase(at, 1); break;
      }
      check_scanner(mutated);
      accepted += json::accept(mutated);
    }
  }
  CHECK(accepted > 6000);  // the comparison ran on many accepted texts
}

TEST_CASE("value_depth is iterative and stops past its limit") {
  CHECK(bridge::value_depth(json(1), 5) == 0);
  CHECK(bridge::value_depth(json::object(), 5) == 1);
  CHECK(bridge::value_depth(json{{"a", {1, 2}}, {"b", json::object()}}, 5) == 2);
  CHECK(bridge::value_depth(json{{"a", {1, {{"c", {json::array()}}}}}}, 100) == 5);
  auto deep = deep_array(100000);  // far past any recursion's reach
  CHECK(bridge::value_depth(deep, 512) == 513);
  CHECK(bridge::value_depth(deep, 1u << 30) == 100000);
  CHECK_FALSE(bridge::value_depth_exceeds(deep_args(511), 512));
  CHECK(bridge::value_depth_exceeds(deep_args(512), 512));
}

TEST_CASE("the writer refuses past its depth, whatever the depth") {
  for (std::size_t d : {513u, 20000u, 100000u}) {
    std::string out;
    CHECK(bridge::append_json(out, deep_array(d), 512).why == bridge::write_refusal::too_deep);
  }
  std::string out;
  auto at_limit = deep_array(512);
  REQUIRE(bridge::append_json(out, at_limit, 512));
  CHECK(out == at_limit.dump());
  // A request frame: its args are what the limit bounds; refused, it is untouched.
  std::string frame = "kept";
  auto r = bridge::append_request_frame(frame, bridge::request{1, "echo", deep_args(512), std::nullopt}, 512);
  CHECK(r.why == bridge::write_refusal::too_deep);
  CHECK(frame == "kept");
  REQUIRE(bridge::append_request_frame(frame, bridge::request{1, "echo", deep_args(511), std::nullopt}, 512));
  CHECK_THROWS_AS(bridge::encode_request(bridge::request{1, "echo", deep_args(20000), std::nullopt}),
                  std::invalid_argument);
}

TEST_CASE("a reply nested past the limit keeps its id and sets too_deep; a broken one is still a protocol error") {
  auto body = [](const std::string& result) {
    return R"({"id":7,"success":true,"result":)" + result + "}";
  };
  for (std::size_t d : {513u, 1000u, 100000u}) {
    auto r = bridge::parse_reply(body(brackets(d)), 512);
    REQUIRE(std::holds_alternative<bridge::reply>(r));
    auto& rep = std::get<bridge::reply>(r);
    CHECK(rep.id == 7);
    CHECK(rep.success);
    CHECK(rep.result.is_null());
    CHECK(contains(rep.too_deep, "max_json_depth (512"));
    CHECK(is(reply_error(rep), errc::result_too_deep));
    CHECK(std::string(reply_class(rep)) == "result_too_deep");
  }
  // At the limit: a result like any other.
  auto ok = bridge::parse_reply(body(brackets(512)), 512);
  REQUIRE(std::holds_alternative<bridge::reply>(ok));
  CHECK(std::get<bridge::reply>(ok).too_deep.empty());
  CHECK(std::get<bridge::reply>(ok).result == deep_array(512));
  // Another spelling (the full parse), a failed reply with a deep error.
  auto other = bridge::parse_reply(R"({"success":true,"id":9,"result":)" + brackets(2000) + "}", 512);
  REQUIRE(std::holds_alternative<bridge::reply>(other));
  CHECK(std::get<bridge::reply>(other).id == 9);
  CHECK_FALSE(std::get<bridge::reply>(other).too_deep.empty());
  auto failed = bridge::parse_reply(
    R"({"id":4,"success":false,"error":{"type":"E","message":)" + brackets(2000) + "}}", 512);
  REQUIRE(std::holds_alternative<bridge::reply>(failed));
  CHECK_FALSE(std::get<bridge::reply>(failed).too_deep.empty());
  // Deep and broken, or deep without an envelope: the stream is not sound.
  auto code = [](const std::string& b) {
    auto r = bridge::parse_reply(b, 512);
    REQUIRE(std::holds_alternative<bridge::protocol_error>(r));
    return std::get<bridge::protocol_error>(r).code;
  };
  CHECK(code(R"({"id":7,"success":true,"result":)" + std::string(5000, '[') + "}")
        == bridge::protocol_errc::invalid_json);
  CHECK(code(R"({"success":true,"result":)" + brackets(5000) + "}") == bridge::protocol_errc::bad_envelope);
  CHECK(code(R"({"id":7,"result":)" + brackets(5000) + "}") == bridge::protocol_errc::bad_envelope);
  CHECK(code(brackets(5000)) == bridge::protocol_errc::bad_envelope);
  CHECK(code("[\xFF" + brackets(5000) + "]") == bridge::protocol_errc::invalid_utf8);
}

TEST_CASE("a worker's invalid_request reply is the caller's invalid_request") {
  bridge::reply rep;
  rep.id = 3;
  rep.error = {"invalid_request", "request args nest deeper than ...", ""};
  CHECK(is(reply_error(rep), errc::invalid_request));
  CHECK(detail_of(reply_error(rep)) == "request args nest deeper than ...");
  CHECK(std::string(reply_class(rep)) == "invalid_request");
  rep.error.type = "ValueError";
  CHECK(is(reply_error(rep), errc::python_error));
  CHECK(std::string(reply_class(rep)) == "python_error");
}

TEST_CASE("control request lines nested too deep are invalid_request naming the limit, never a throw") {
  cli::control_request req;
  std::string error;
  for (std::size_t inner : {512u, 1000u, 20000u, 200000u}) {
    CHECK_NOTHROW(CHECK_FALSE(cli::parse_control_request(exec_line("echo", deep_args_text(inner)), req, error)));
    CHECK(contains(error, "max_json_depth"));
    CHECK(contains(error, "512"));
  }
  // Deep anywhere: the op, or no object at all (printed in the error otherwise).
  CHECK_FALSE(cli::parse_control_request(brackets(100000), req, error));
  CHECK(contains(error, "max_json_depth"));
  CHECK_FALSE(cli::parse_control_request(R"({"op":)" + brackets(100000) + "}", req, error));
  CHECK(contains(error, "max_json_depth"));
  // At the limit, and with the node's own limit.
  REQUIRE(cli::parse_control_request(exec_line("echo", deep_args_text(511)), req, error));
  CHECK(req.args == deep_args(511));
  REQUIRE(cli::parse_control_request(exec_line("echo", deep_args_text(1000)), req, error, 2000));
  CHECK(bridge::value_depth(req.args, 5000) == 1001);
}

TEST_CASE("remote texts nested too deep: refused before they are parsed") {
  command_request cmd = make_command("echo", deep_args(100));
  std::string pool;
  // A request text as a peer could write it: stamped, args deep.
  auto text = [](const std::string& args) {
    return R"({"app":"dspex","protocol":1,"op":"exec","command":"echo","args":)" + args + "}";
  };
  auto parsed = remote::parse_exec(text(deep_args_text(20000)), pool);
  REQUIRE_FALSE(parsed);
  CHECK(is(parsed.error(), errc::invalid_request));
  CHECK(contains(detail_of(parsed.error()), "max_json_depth (512"));
  REQUIRE(remote::parse_exec(text(deep_args_text(511)), pool));
  CHECK_FALSE(remote::parse_exec(text(deep_args_text(512)), pool));
  REQUIRE(remote::parse_exec(text(deep_args_text(1000)), pool, 2000));
  // A reply text with a deep result: result_too_deep, not a protocol error.
  auto reply = remote::parse_reply(R"({"app":"dspex","protocol":1,"ok":true,"result":)" + brackets(30000) + "}");
  REQUIRE_FALSE(reply);
  CHECK(is(reply.error(), errc::result_too_deep));
  // A hello (or status) text of any depth is answered, not followed down.
  CHECK_FALSE(remote::check_hello(R"({"app":)" + brackets(100000) + "}").empty());
  // The class survives the trip between nodes.
  CHECK(remote::errc_named("result_too_deep") == errc::result_too_deep);
  auto back = remote::parse_reply(remote::reply_text(make_error(errc::result_too_deep, "deep")));
  CHECK(is(back.error(), errc::result_too_deep));
}

TEST_CASE("config: max_json_depth is validated; a config nested too deep is refused") {
  auto j = default_config();
  auto c = parse_config(j);
  REQUIRE(c);
  CHECK(c->max_json_depth == default_max_json_depth);
  CHECK(j["max_json_depth"] == 512);
  for (auto bad : {json(0), json(-1), json(bridge::max_json_depth_limit + 1), json("512"), json(1.5)}) {
    j["max_json_depth"] = bad;
    auto r = parse_config(j);
    REQUIRE_FALSE(r);
    CHECK(contains(detail_of(r.error()), "config.max_json_depth: expected an integer in [1, 4096]"));
  }
  j["max_json_depth"] = 64;
  REQUIRE(parse_config(j));
  CHECK(parse_config(j)->max_json_depth == 64);
  j["root"]["children"][1]["default_lm"] = deep_array(100000);
  auto deep = parse_config(j);
  REQUIRE_FALSE(deep);
  CHECK(contains(detail_of(deep.error()), "config: nested deeper than max_json_depth"));
}

// -- real processes ------------------------------------------------------------

TEST_CASE("embedding API: args too deep are invalid_request before any pool; results too deep are result_too_deep") {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto n = start_test_node(sys, small_tree("pool", 2));
  auto pids = tree_os_pids(n->status()["tree"], "/workers/");
  for (std::size_t inner : {20000u, 1000u, 512u}) {
    auto r = n->execute("echo", deep_args(inner));
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_request));
    CHECK(contains(detail_of(r.error()), "args: nested deeper than max_json_depth (512"));
    CHECK_FALSE(n->execute_in_session("s1", "echo", deep_args(inner)));
  }
  auto at_limit = n->execute("echo", deep_args(511));
  REQUIRE_MESSAGE(at_limit, why(at_limit));
  CHECK(*at_limit == deep_args(511));

  // An actor's own request to the pool: refused there, before the registry
  // or a worker sees it.
  caf::scoped_actor self{sys};
  caf::error err;
  self->request(n->target(), caf::infinite, exec_atom::value, make_command("echo", deep_args(20000)))
    .receive([](json&) {}, [&](caf::error& e) { err = e; });
  CHECK(is(err, errc::invalid_request));

  // A result past the limit fails its request alone; past Python's reach it
  // is the worker's error reply.
  for (int i = 0; i < 8; ++i) {
    auto deep = n->execute("fault_nest", json{{"depth", 513 + i * 50}});
    REQUIRE_FALSE(deep);
    CHECK(is(deep.error(), errc::result_too_deep));
  }
  auto fits = n->execute("fault_nest", json{{"depth", 512}});
  REQUIRE(fits);
  CHECK(bridge::value_depth(*fits, 1000) == 512);
  auto unencodable = n->execute("fault_nest", json{{"depth", 100000}});
  REQUIRE_FALSE(unencodable);
  CHECK(describe(unencodable.error()).find("python_error: RecursionError") == 0);

  auto p = default_pool(n->status());
  CHECK(p["crashes"] == 0);
  CHECK(p["restarts"] == 0);
  CHECK(p["circuit"] == "closed");
  CHECK(p["requests"]["result_too_deep"] == 8);
  CHECK(p["requests"]["invalid_request"] == 1);  // the actor's; execute* never reached the pool
  CHECK(tree_os_pids(n->status()["tree"], "/workers/") == pids);
  n->stop();
}

TEST_CASE("embedding API, single mode: the worker actor refuses args too deep itself") {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto n = start_test_node(sys, small_tree("single", 1));
  auto r = n->execute("echo", deep_args(20000));
  CHECK(is(r.error(), errc::invalid_request));
  caf::scoped_actor self{sys};
  caf::error err;
  self->request(n->target(), caf::infinite, exec_atom::value, make_command("echo", deep_args(20000)))
    .receive([](json&) {}, [&](caf::error& e) { err = e; });
  CHECK(is(err, errc::invalid_request));
  CHECK(contains(detail_of(err), "max_json_depth"));
  auto ok = n->execute("echo", json{{"payload", 1}});
  REQUIRE(ok);
  n->stop();
}

TEST_CASE("past Python's reach (max_json_depth 2000): the worker answers invalid_request, the breaker stays closed, a victim is served") {
  system_config cfg;
  caf::actor_system sys{cfg};
  auto j = small_tree("pool", 2);
  j["max_json_depth"] = 2000;
  auto n = start_test_node(sys, j);
  auto pids = tree_os_pids(n->status()["tree"], "/workers/");
  std::atomic<bool> done{false};
  std::atomic<int> victim_ok{0}, victim_failed{0};
  std::string victim_error;
  std::thread victim([&] {
    while (!done) {
      auto r = n->execute("echo", json{{"payload", "victim"}});
      if (r && (*r)["payload"] == "victim") {
        ++victim_ok;
      } else {
        if (victim_failed++ == 0)
          victim_error = r ? r->dump() : describe(r.error());
      }
    }
  });
  // Before: each of these was a protocol error; after five the breaker
  // opened and every client got circuit_open.
  for (int i = 0; i < 30; ++i) {
    auto r = n->execute("echo", deep_args(1000));
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(is(r.error(), errc::invalid_request), describe(r.error()));
    CHECK(contains(detail_of(r.error()), "recursion limit"));
  }
  wait_until([&] { return victim_ok > 0; });
  done = true;
  victim.join();
  CHECK_MESSAGE(victim_failed == 0, victim_error);
  CHECK(victim_ok > 0);
  auto p = default_pool(n->status());
  CHECK(p["crashes"] == 0);
  CHECK(p["restarts"] == 0);
  CHECK(p["circuit"] == "closed");
  CHECK(p["circuit_opened"] == 0);
  CHECK(p["requests"]["invalid_request"] == 30);
  CHECK(tree_os_pids(n->status()["tree"], "/workers/") == pids);
  n->stop();
}

TEST_CASE_FIXTURE(run_fixture, "control socket of a real dspex run: 20,000 and 1,000 deep are invalid_request, the node serves on") {
  start();
  for (std::size_t inner : {20000u, 1000u, 100000u}) {
    auto r = control_json(sock, exec_line("echo", deep_args_text(inner)));
    CHECK_MESSAGE(error_class(r) == "invalid_request", r.dump());
    CHECK(contains(error_message(r), "max_json_depth"));
    REQUIRE_MESSAGE(alive(), node->output());
  }
  // The CLI client too: args deeper than any node takes (max_json_depth_limit)
  // are refused in its own process, before it copies them (which would
  // recurse that deep), with the class a node would answer.
  int code = 0;
  auto out = run_cli(loop, {"exec", "echo", deep_args_text(20000), "--control", sock}, &code);
  CHECK(code == 1);
  CHECK(contains(out, "invalid_request"));
  auto at_limit = control_json(sock, exec_line("echo", deep_args_text(511)));
  CHECK_MESSAGE(at_limit.value("ok", false), at_limit.dump().substr(0, 200));
  auto result = control_json(sock, exec_line("fault_nest", R"({"depth":600})"));
  CHECK(error_class(result) == "result_too_deep");
  check_unharmed();
}

TEST_CASE_FIXTURE(run_fixture, "control socket, max_json_depth 2000: many 1,000-deep requests, the breaker stays closed and a victim keeps getting ok") {
  start(json{{"max_json_depth", 2000}});
  std::atomic<bool> done{false};
  std::atomic<int> victim_ok{0}, victim_failed{0};
  std::string victim_error;
  std::thread victim([&] {
    while (!done) {
      auto r = control_json(sock, exec_line("echo", R"({"payload":"victim"})"));
      if (r.value("ok", false))
        ++victim_ok;
      else if (victim_failed++ == 0)
        victim_error = r.dump();
    }
  });
  for (int i = 0; i < 20; ++i) {
    auto r = control_json(sock, exec_line("echo", deep_args_text(1000)));
    CHECK_MESSAGE(error_class(r) == "invalid_request", r.dump());
  }
  wait_until([&] { return victim_ok > 0; });
  done = true;
  victim.join();
  CHECK_MESSAGE(victim_failed == 0, victim_error);
  CHECK(default_pool(status())["requests"]["invalid_request"] == 20);
  check_unharmed();
}

TEST_CASE_FIXTURE(run_fixture, "router port: exec --node with args 20,000 and 1,000 deep is invalid_request, the node serves on") {
  start(json::object(), true);
  auto endpoint = "127.0.0.1:" + std::to_string(port);
  for (std::size_t inner : {20000u, 1000u}) {
    int code = 0;
    auto out = run_cli(loop, {"exec", "echo", deep_args_text(inner), "--node", endpoint}, &code);
    CHECK(code == 1);
    auto r = json::parse(out, nullptr, false);
    CHECK_MESSAGE(error_class(r) == "invalid_request", out.substr(0, 300));
    CHECK(contains(error_message(r), "max_json_depth"));
    REQUIRE_MESSAGE(alive(), node->output());
  }
  int code = 0;
  auto out = run_cli(loop, {"exec", "fault_nest", R"({"depth":600})", "--node", endpoint}, &code);
  CHECK(error_class(json::parse(out, nullptr, false)) == "result_too_deep");
  out = run_cli(loop, {"exec", "ping", "--node", endpoint}, &code);
  CHECK_MESSAGE(code == 0, out);
  check_unharmed();
}

} // TEST_SUITE
