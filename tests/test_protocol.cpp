// Request/reply envelopes: every malformed body is a classified error.
#include <doctest/doctest.h>

#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/json_writer.hpp>
#include <dspex/bridge/protocol.hpp>

#include <cmath>
#include <limits>

using namespace dspex::bridge;

namespace {

protocol_errc error_of(std::string_view body) {
  auto r = parse_reply(body);
  REQUIRE(std::holds_alternative<protocol_error>(r));
  return std::get<protocol_error>(r).code;
}

} // namespace

TEST_SUITE("protocol") {

TEST_CASE("a request round-trips with and without a session") {
  request req{7, "ping", json{{"x", 1}}, std::string{"s1"}};
  auto body = encode_request(req);
  auto j = json::parse(body);
  CHECK(j["id"] == 7);
  CHECK(j["command"] == "ping");
  CHECK(j["args"]["x"] == 1);
  CHECK(j["session_id"] == "s1");
  auto back = parse_request(body);
  REQUIRE(std::holds_alternative<request>(back));
  CHECK(std::get<request>(back).session_id == std::optional<std::string>{"s1"});

  req.session_id.reset();
  CHECK(json::parse(encode_request(req))["session_id"].is_null());
}

TEST_CASE("a successful reply") {
  auto r = parse_reply(R"({"id": 3, "success": true, "result": {"status": "ok"}})");
  REQUIRE(std::holds_alternative<reply>(r));
  auto& rep = std::get<reply>(r);
  CHECK(rep.id == 3);
  CHECK(rep.success);
  CHECK(rep.result["status"] == "ok");
}

TEST_CASE("the compact success reply's fast path gives the full parse's verdict and result") {
  // A space after the opening brace keeps the meaning and takes the full
  // parse: both spellings must agree, whatever the body.
  auto same = [](const std::string& body) {
    CAPTURE(body);
    auto fast = parse_reply(body);
    auto full = parse_reply("{ " + body.substr(1));
    REQUIRE(fast.index() == full.index());
    if (auto* e = std::get_if<protocol_error>(&fast)) {
      CHECK(e->code == std::get<protocol_error>(full).code);
      return;
    }
    auto& a = std::get<reply>(fast);
    auto& b = std::get<reply>(full);
    CHECK(a.id == b.id);
    CHECK(a.success == b.success);
    CHECK(a.result == b.result);
    CHECK(a.error.type == b.error.type);
  };
  const std::string head = R"({"id":7,"success":true,"result":)";
  for (std::string r : {"1", "-0", "1.5e300", "null", "true", "\"x\"", "\"a\\u00e9\\n\"", "[1,[2,{}]]",
                        "{\"a\":{\"b\":[null]}}", "{\"a\":1}}", "{\"a\":1", "", "}", "1,\"x\":2",
                        "1,\"result\":2", "\"\xff\"", "\"\xc3\xa9\"", "[1,]", "01", "NaN", "1 ", " 1"})
    same(head + r + "}");
  // Strings, which skip the parser when they hold no \u escape.
  for (std::string r : {"\"\"", "\"plain\"", "\"a\\nb\\t\\\"q\\\\\\/\\b\\f\\r\"", "\"\\x\"", "\"\\\"",
                        "\"a\\\"", "\"tab\there\"", "\"nul\0x\"", "\"\x7f\"", "\"\\u0041\\n\"", "\"\xed\xa0\x80\"",
                        "\"\xf0\x9f\x98\x80 \xe2\x82\xac\"", "\"\xc3\"", "\"x\" ", "\"a\"\"b\"", "\"a\",\"b\"", "\"", "\"\\"})
    same(head + r + "}");
  for (std::string id : {"0", "00", "01", "-1", "1.0", "1e3", "18446744073709551615", "18446744073709551616",
                         "\"1\"", "", "99999999999999999999999"})
    same(R"({"id":)" + id + R"(,"success":true,"result":1})");
  same(R"({"id":1,"success":false,"result":1})");
  same(R"({"id":1,"success":true,"result":1})" "\n");
  same(R"({"id":1,"success":true})");
  same(R"({"id":1,"success":true,"result":[1,2,3]})" "}");
  same("{" + std::string(300, '[') + std::string(300, ']') + "}");
  CHECK(std::get<reply>(parse_reply(head + "[1,2]}")).result == json::array({1, 2}));
}

TEST_CASE("a reply with an error object") {
  auto r = parse_reply(
    R"({"id": 4, "success": false, "error": {"type": "ValueError", "message": "bad", "traceback": "Traceback..."}})");
  REQUIRE(std::holds_alternative<reply>(r));
  auto& rep = std::get<reply>(r);
  CHECK_FALSE(rep.success);
  CHECK(rep.error.type == "ValueError");
  CHECK(rep.error.message == "bad");
  CHECK(rep.error.traceback == "Traceback...");
  // encode_reply and parse_reply agree.
  auto again = parse_reply(encode_reply(rep));
  CHECK(std::get<reply>(again).error.message == "bad");
}

TEST_CASE("a failed reply without an error object is a bad envelope") {
  CHECK(error_of(R"({"id": 4, "success": false})") == protocol_errc::bad_envelope);
}

TEST_CASE("missing or ill-typed id") {
  CHECK(error_of(R"({"success": true, "result": 1})") == protocol_errc::bad_envelope);
  CHECK(error_of(R"({"id": "1", "success": true})") == protocol_errc::bad_envelope);
  CHECK(error_of(R"({"id": -1, "success": true})") == protocol_errc::bad_envelope);
  CHECK(error_of(R"({"id": 1})") == protocol_errc::bad_envelope);
}

TEST_CASE("invalid UTF-8 is classified as such, inside a string or outside") {
  CHECK(error_of("{\"id\": 1, \"success\": true, \"result\": \"\xC3\x28\"}") == protocol_errc::invalid_utf8);
  // Well-formed JSON around ill-formed UTF-8: the parser must refuse each.
  for (const char* bad : {"\xED\xA0\x80", "\xC0\xAF", "\xF4\x90\x80\x80", "\xF8\x88\x80\x80\x80", "\x80", "\xE2\x82"})
    CHECK(error_of(std::string("{\"id\": 1, \"success\": true, \"result\": \"") + bad + "\"}")
          == protocol_errc::invalid_utf8);
  CHECK(error_of("\xFF\xFE") == protocol_errc::invalid_utf8);
  CHECK(error_of("\xED\xA0\x80") == protocol_errc::invalid_utf8);  // a surrogate
  CHECK(error_of("\xC0\xAF") == protocol_errc::invalid_utf8);      // an overlong '/'
  CHECK(is_valid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));
}

TEST_CASE("invalid JSON and non-objects") {
  CHECK(error_of("{\"id\": 1,") == protocol_errc::invalid_json);
  CHECK(error_of("") == protocol_errc::invalid_json);
  CHECK(error_of("[1, 2]") == protocol_errc::bad_envelope);
  CHECK(error_of("42") == protocol_errc::bad_envelope);
}

TEST_CASE("the JSON writer writes what dump() writes") {
  std::string every_byte;  // every ASCII byte at every offset from an 8-byte boundary
  for (int c = 1; c < 0x80; ++c)
    every_byte += std::string(static_cast<std::size_t>(c % 9), 'a') + static_cast<char>(c);
  std::vector<json> values = {
    nullptr, true, false, 0, -1, std::numeric_limits<std::int64_t>::min(),
    std::numeric_limits<std::uint64_t>::max(), "", "plain", every_byte,
    "h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80 \x7F", std::string(1000, 'x') + "\"\\\n",
    json::array(), json::object(), json{{"b", {1, 2, {{"c", nullptr}}}}, {"a", "x"}, {"\n", "k"}},
  };
  for (const auto& v : values) {
    std::string out = "prefix";
    REQUIRE(append_json(out, v));
    CHECK(out == "prefix" + v.dump());
  }
}

TEST_CASE("the JSON writer keeps floats floats and values exact") {
  for (double d : {1.0, -0.0, 0.1, 1e-4, 1e20, 123456.789, 5e-324, 1.7976931348623157e308}) {
    std::string out;
    REQUIRE(append_json(out, json(d)));
    auto back = json::parse(out);
    CHECK(back.is_number_float());
    CHECK(back.get<double>() == d);
  }
  std::string out;
  REQUIRE(append_json(out, json{std::nan(""), INFINITY}));
  CHECK(out == "[null,null]");
}

TEST_CASE("a string that is not UTF-8 is reported, not thrown") {
  for (const char* bad : {"\xC3\x28", "\xFF", "\xED\xA0\x80", "\xC0\xAF", "abcdefgh\xE2\x82"}) {
    std::string out;
    CHECK_FALSE(append_json_string(out, bad));
    CHECK_FALSE(append_json(out, json{{"k", bad}}));
    CHECK_FALSE(append_json(out, json{{bad, 1}}));
    std::string frame = "kept";
    CHECK_FALSE(append_request_frame(frame, request{1, "echo", json{{"x", {bad}}}, std::nullopt}));
    CHECK_FALSE(append_request_frame(frame, request{1, bad, json::object(), std::nullopt}));
    CHECK_FALSE(append_request_frame(frame, request{1, "echo", json::object(), std::string(bad)}));
    CHECK(frame == "kept");
    CHECK_THROWS_AS(encode_request(request{1, bad, json::object(), std::nullopt}), std::invalid_argument);
  }
}

TEST_CASE("a request frame is byte for byte the framed dump of its envelope, the id first") {
  for (auto sid : {std::optional<std::string>{}, std::optional<std::string>{"s\"1"}}) {
    request req{18446744073709551615ull, "run \t it", json{{"payload", std::string(70, 'x')}, {"n", {1, -2, true}}}, sid};
    // The id first (a worker that cannot parse the args answers by it), the args last.
    auto envelope = R"({"id":18446744073709551615,"command":)" + json(req.command).dump()
                    + R"(,"session_id":)" + (sid ? json(*sid) : json(nullptr)).dump()
                    + R"(,"args":)" + req.args.dump() + "}";
    std::string frame = "head";
    REQUIRE(append_request_frame(frame, req));
    CHECK(frame == "head" + encode_frame(envelope));
    CHECK(encode_request(req) == envelope);
    CHECK(json::parse(envelope) == json::parse(encode_request(req)));
  }
}

TEST_CASE("every error code has a name") {
  for (auto c : {protocol_errc::frame_too_large, protocol_errc::truncated_frame,
                 protocol_errc::invalid_utf8, protocol_errc::invalid_json,
                 protocol_errc::bad_envelope, protocol_errc::unknown_id})
    CHECK(std::string(to_string(c)) != "unknown");
}

TEST_CASE("chunk frames (protocol 2): the fast path and the full parse agree") {
  for (std::string body : {R"({"id":7,"type":"chunk","seq":3,"data":{"t":"x"}})",
                           R"({"type":"chunk","id":7,"data":{"t":"x"},"seq":3})"}) {
    auto r = parse_reply(body);
    REQUIRE(std::holds_alternative<reply>(r));
    auto& c = std::get<reply>(r);
    CHECK(c.is_chunk());
    CHECK(c.kind == frame_kind::chunk);
    CHECK(c.id == 7);
    CHECK(c.seq == 3);
    CHECK(c.result == json{{"t", "x"}});
  }
  // String data as the worker spells it (the parser skipped) and the same
  // frame for the full parse: the same verdict and value.
  for (std::string data : {"\"tok\"", "\"a\\n\\\"b\\\\\"", "\"\xc3\xa9\"", "\"\xc3\"", "\"a\tb\"", "\"\\u00e9\"", "\"\\q\""}) {
    CAPTURE(data);
    auto fast = parse_reply(R"({"id":7,"type":"chunk","seq":3,"data":)" + data + "}");
    auto full = parse_reply(R"({"type":"chunk","id":7,"seq":3,"data":)" + data + "}");
    REQUIRE(fast.index() == full.index());
    if (auto* e = std::get_if<protocol_error>(&fast)) {
      CHECK(e->code == std::get<protocol_error>(full).code);
      continue;
    }
    CHECK(std::get<reply>(fast).is_chunk());
    CHECK(std::get<reply>(fast).result == std::get<reply>(full).result);
  }
  CHECK(std::get<reply>(parse_reply(R"({"id":7,"type":"chunk","seq":0,"data":"a\n\"b\\"})")).result == "a\n\"b\\");
  CHECK(error_of(R"({"id":7,"type":"chunk","data":1})") == protocol_errc::bad_envelope);       // no seq
  CHECK(error_of(R"({"id":7,"type":"chunk","seq":-1,"data":1})") == protocol_errc::bad_envelope);
  CHECK(error_of(R"({"id":7,"type":"bogus"})") == protocol_errc::bad_envelope);
  CHECK(error_of(R"({"id":7,"type":5,"success":true})") == protocol_errc::bad_envelope);
}

TEST_CASE("a stream's windows in its request frame; a chunk's weight is its frame body") {
  std::string frame;
  REQUIRE(append_request_frame(frame, 5, "count", json::object(), std::nullopt, default_max_json_depth,
                               {250, 1024, 65536}));
  CHECK(frame.substr(frame_header_bytes)
        == R"({"id":5,"command":"count","session_id":null,"args":{},"timeout_ms":250,"stream":1024,"stream_bytes":65536})");
  frame.clear();  // no byte window, or no stream: no stream_bytes
  REQUIRE(append_request_frame(frame, 5, "count", json::object(), std::nullopt, default_max_json_depth,
                               {0, 8, 0}));
  CHECK(frame.substr(frame_header_bytes) == R"({"id":5,"command":"count","session_id":null,"args":{},"stream":8})");
  frame.clear();
  REQUIRE(append_request_frame(frame, 5, "count", json::object(), std::nullopt, default_max_json_depth,
                               {0, 0, 65536}));
  CHECK(frame.find("stream") == std::string::npos);
  // Both parse paths (fast: the worker's own spelling) weigh the body.
  for (std::string body : {R"({"id":7,"type":"chunk","seq":3,"data":"tok"})",
                           R"({"type":"chunk","id":7,"seq":3,"data":{"t":"x"}})",
                           R"({"id":7,"success":true,"result":1})"}) {
    auto r = parse_reply(body);
    REQUIRE(std::holds_alternative<reply>(r));
    CHECK(std::get<reply>(r).bytes == body.size());
  }
}

TEST_CASE("host call frames (protocol 3) and their cancel") {
  auto r = parse_reply(
    R"({"type":"call","id":4,"call":9,"target":"pool:tools","command":"lookup","args":{"q":1},"timeout_ms":250,"session":"s1"})");
  REQUIRE(std::holds_alternative<reply>(r));
  auto& c = std::get<reply>(r);
  CHECK(c.kind == frame_kind::call);
  CHECK(c.id == 4);
  CHECK(c.call.call == 9);
  CHECK(c.call.target == "pool:tools");
  CHECK(c.call.command == "lookup");
  CHECK(c.result == json{{"q", 1}});
  CHECK(c.call.timeout_ms == 250);
  CHECK(c.call.session == host_call_frame::session_rule::named);
  CHECK(c.call.session_id == "s1");
  auto same = std::get<reply>(parse_reply(R"({"type":"call","id":4,"call":1,"target":"fn:f","command":"f"})"));
  CHECK(same.call.session == host_call_frame::session_rule::same);
  CHECK(same.result == json::object());
  auto none = std::get<reply>(
    parse_reply(R"({"type":"call","id":4,"call":1,"target":"fn:f","command":"f","session":null})"));
  CHECK(none.call.session == host_call_frame::session_rule::none);
  // A cancel names no request.
  auto cancel = parse_reply(R"({"type":"cancel_call","call":9})");
  REQUIRE(std::holds_alternative<reply>(cancel));
  CHECK(std::get<reply>(cancel).kind == frame_kind::cancel_call);
  CHECK(std::get<reply>(cancel).seq == 9);
  // Ill-typed fields: classified, never thrown.
  for (auto bad : {R"({"type":"call","id":4,"target":"fn:f","command":"f"})",
                   R"({"type":"call","id":4,"call":1,"target":5,"command":"f"})",
                   R"({"type":"call","id":4,"call":1,"target":"fn:f","command":"f","args":[1]})",
                   R"({"type":"call","id":4,"call":1,"target":"fn:f","command":"f","timeout_ms":-3})",
                   R"({"type":"call","id":4,"call":1,"target":"fn:f","command":"f","session":7})",
                   R"({"type":"cancel_call","call":"9"})", R"({"type":"cancel_call"})"})
    CHECK_MESSAGE(error_of(bad) == protocol_errc::bad_envelope, bad);
}

TEST_CASE("host call results, and the cancel and ack frames, are well-formed JSON") {
  std::string out;
  REQUIRE(append_call_result_frame(out, 5, json{{"a", {1, 2}}}));
  auto body = json::parse(out.substr(frame_header_bytes));
  CHECK(body == json{{"type", "result"}, {"call", 5}, {"success", true}, {"result", {{"a", {1, 2}}}}});
  out.clear();
  append_call_error_frame(out, 6, "worker_crashed", std::string("bad \xff byte"));
  body = json::parse(out.substr(frame_header_bytes));
  CHECK(body["error"]["type"] == "worker_crashed");
  CHECK(body["error"]["message"] == "(a message that is not UTF-8)");
  out.clear();
  json deep = json::array();
  for (int i = 0; i < 20; ++i)
    deep = json::array({deep});
  CHECK_FALSE(append_call_result_frame(out, 7, deep, 10));
  CHECK(out.empty());
  append_cancel_frame(out, 11);
  CHECK(json::parse(out.substr(frame_header_bytes)) == json{{"type", "cancel"}, {"id", 11}});
  out.clear();
  append_ack_frame(out, 11, 4);
  CHECK(json::parse(out.substr(frame_header_bytes)) == json{{"type", "ack"}, {"id", 11}, {"seq", 4}});
}

} // TEST_SUITE
