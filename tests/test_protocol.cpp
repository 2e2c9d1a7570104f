// Request/reply envelopes: every malformed body is a classified error.
#include <doctest/doctest.h>

#include <dspex/bridge/protocol.hpp>

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

TEST_CASE("invalid UTF-8 is classified before JSON parsing") {
  CHECK(error_of("{\"id\": 1, \"success\": true, \"result\": \"\xC3\x28\"}") == protocol_errc::invalid_utf8);
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

TEST_CASE("every error code has a name") {
  for (auto c : {protocol_errc::frame_too_large, protocol_errc::truncated_frame,
                 protocol_errc::invalid_utf8, protocol_errc::invalid_json,
                 protocol_errc::bad_envelope, protocol_errc::unknown_id})
    CHECK(std::string(to_string(c)) != "unknown");
}

} // TEST_SUITE
