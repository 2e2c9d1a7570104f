#include <dspex/actors/remote/detail/remote_protocol.hpp>

#include <dspex/bridge/protocol.hpp>

#include <arpa/inet.h>

namespace dspex::remote {

namespace {

json stamped(json j) {
  j["app"] = app_id;
  j["protocol"] = protocol_version;
  return j;
}

json parse_object(const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  if (!j.is_object())
    return json();
  return j;  // (not `cond ? j : json()`: that copies the whole tree)
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

} // namespace

bool parse_endpoint(const std::string& text, std::string& host, std::uint16_t& port,
                    std::string& error) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    error = "expected HOST:PORT, found \"" + text + "\"";
    return false;
  }
  host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto digits = text.substr(colon + 1);
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 5
      || std::stol(digits) > 65535) {
    error = "expected a port in [0, 65535] after the colon, found \"" + digits + "\"";
    return false;
  }
  port = static_cast<std::uint16_t>(std::stol(digits));
  return true;
}

bool is_loopback(const std::string& host) {
  if (host == "localhost")
    return true;
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  return ::inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

std::string hello_text(bool wants_link) {
  return dump(stamped(wants_link ? json::object() : json{{"link", false}}));
}

namespace {

// The app and protocol of a parsed message: empty when ours, else why not.
std::string check_stamp(const json& j) {
  auto a = j.find("app");
  if (a == j.end() || !a->is_string() || a->get_ref<const std::string&>() != app_id)
    return "the peer is not a dspex node (app " + j.value("app", json()).dump() + ")";
  auto p = j.find("protocol");
  if (p == j.end() || !p->is_number_integer() || p->get<long long>() != protocol_version)
    return "the peer speaks protocol " + j.value("protocol", json()).dump() + ", this node "
           + std::to_string(protocol_version);
  return {};
}

// {"app":"dspex","protocol":1, : the start of every text this side writes.
const std::string& stamp_prefix() {
  static const std::string s = "{\"app\":" + json(app_id).dump()
                               + ",\"protocol\":" + std::to_string(protocol_version);
  return s;
}

} // namespace

namespace {

// check_hello, keeping the parsed object in `j`.
std::string read_stamped(const std::string& text, json& j) {
  // Any text a peer sends passes here (hello, status, exec): nothing deeper
  // than any node's limit is parsed, so the copies below cannot recurse far.
  if (bridge::text_depth_exceeds(text, bridge::envelope_depth(bridge::max_json_depth_limit)))
    return "the peer's message nests deeper than "
           + std::to_string(bridge::max_json_depth_limit + 1) + " levels of [ and {";
  j = parse_object(text);
  if (!j.is_object())
    return "the peer's hello is not a JSON object";
  return check_stamp(j);
}

} // namespace

std::string check_hello(const std::string& text, bool* wants_link) {
  json j;
  auto why = read_stamped(text, j);
  if (wants_link)
    *wants_link = why.empty() && j.value("link", json(true)) != json(false);
  return why;
}

std::string exec_text(const command_request& cmd, const std::string& pool, std::uint64_t id,
                      bool stream) {
  // Written as text, not built as an object and dumped: no copy of the args.
  std::string s = stamp_prefix();
  s += ",\"op\":\"exec\",\"command\":";
  s += dump(json(cmd.command));
  s += ",\"args\":";
  s += dump(cmd.args);
  s += ",\"timeout_ms\":";
  s += std::to_string(cmd.timeout.count());
  s += ",\"session_id\":";
  s += cmd.session_id ? dump(json(*cmd.session_id)) : std::string("null");
  if (!pool.empty()) {
    s += ",\"pool\":";
    s += dump(json(pool));
  }
  if (id != 0) {
    s += ",\"id\":";
    s += std::to_string(id);
  }
  if (stream)
    s += ",\"stream\":true";
  s += '}';
  return s;
}

std::string status_text() {
  return dump(stamped({{"op", "status"}}));
}

caf::expected<command_request> parse_exec(const std::string& text, std::string& pool,
                                          std::size_t max_depth, exec_ids* ids) {
  auto bad = [](const std::string& m) { return make_error(errc::invalid_request, m); };
  // The args sit one level inside the request object.
  if (bridge::text_depth_exceeds(text, bridge::envelope_depth(max_depth)))
    return bad(bridge::depth_message("the remote request (its args)", max_depth));
  auto j = parse_object(text);
  if (!j.is_object())
    return bad("the remote request is not a JSON object");
  if (auto why = check_stamp(j); !why.empty())
    return bad(why);
  command_request cmd;
  auto c = j.find("command");
  if (c == j.end() || !c->is_string() || c->get_ref<const std::string&>().empty())
    return bad("command: expected a non-empty string");
  cmd.command = c->get<std::string>();
  if (auto a = j.find("args"); a != j.end()) {
    if (!a->is_object())
      return bad("args: expected an object");
    cmd.args = std::move(*a);
  }
  if (auto s = j.find("session_id"); s != j.end() && !s->is_null()) {
    if (!s->is_string())
      return bad("session_id: expected a string or null");
    cmd.session_id = s->get<std::string>();
  }
  if (auto t = j.find("timeout_ms"); t != j.end()) {
    if (!t->is_number_integer() || t->get<long long>() < 0
        || t->get<long long>() > 24LL * 3600 * 1000)
      return bad("timeout_ms: expected an integer in [0, 86400000]");
    cmd.timeout = std::chrono::milliseconds(t->get<long long>());
  }
  pool.clear();
  if (auto p = j.find("pool"); p != j.end() && !p->is_null()) {
    if (!p->is_string() || p->get_ref<const std::string&>().empty())
      return bad("pool: expected a pool name (a non-empty string) or null");
    pool = p->get<std::string>();
  }
  exec_ids got;
  if (auto i = j.find("id"); i != j.end() && !i->is_null()) {
    if (!i->is_number_unsigned() || i->get<std::uint64_t>() == 0)
      return bad("id: expected a positive integer or null");
    got.id = i->get<std::uint64_t>();
  }
  if (auto s = j.find("stream"); s != j.end() && !s->is_null()) {
    if (!s->is_boolean())
      return bad("stream: expected true or false");
    got.stream = s->get<bool>();
    if (got.stream && got.id == 0)
      return bad("stream: a streaming request needs an id");
  }
  if (ids)
    *ids = got;
  return cmd;
}

std::string head_text(const stream_head& h) {
  return dump(stamped({{"id", h.id}, {"seq", h.seq}, {"ack", h.ack}}));
}

caf::expected<stream_head> parse_head(const std::string& text) {
  auto bad = [](const std::string& m) { return make_error(errc::protocol_error, m); };
  json j;
  if (auto why = read_stamped(text, j); !why.empty())
    return bad(why);
  stream_head h;
  auto i = j.find("id");
  if (i == j.end() || !i->is_number_unsigned() || i->get<std::uint64_t>() == 0)
    return bad("a stream message's id: expected a positive integer");
  h.id = i->get<std::uint64_t>();
  if (auto s = j.find("seq"); s != j.end()) {
    if (!s->is_number_unsigned())
      return bad("a stream message's seq: expected an integer >= 0");
    h.seq = s->get<std::uint64_t>();
  }
  if (auto a = j.find("ack"); a != j.end()) {
    if (!a->is_boolean())
      return bad("a stream message's ack: expected true or false");
    h.ack = a->get<bool>();
  }
  return h;
}

std::string batch_head_text(const std::vector<std::uint64_t>& ids, std::size_t reply_bytes) {
  std::string s = stamp_prefix();
  s += ",\"ids\":[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0)
      s += ',';
    s += std::to_string(ids[i]);
  }
  s += ']';
  if (reply_bytes > 0) {
    s += ",\"batch\":";
    s += std::to_string(reply_bytes);
  }
  s += '}';
  return s;
}

caf::expected<batch_head> parse_batch_head(const std::string& text, std::size_t count) {
  auto bad = [](const std::string& m) { return make_error(errc::protocol_error, m); };
  json j;
  if (auto why = read_stamped(text, j); !why.empty())
    return bad(why);
  auto ids = j.find("ids");
  if (ids == j.end() || !ids->is_array() || ids->size() != count || count == 0)
    return bad("a batch's ids: expected one positive integer per text (" + std::to_string(count)
               + ")");
  batch_head h;
  h.ids.reserve(count);
  for (auto& i : *ids) {
    if (!i.is_number_unsigned() || i.get<std::uint64_t>() == 0)
      return bad("a batch's ids: expected positive integers");
    h.ids.push_back(i.get<std::uint64_t>());
  }
  if (auto b = j.find("batch"); b != j.end()) {
    if (!b->is_number_unsigned())
      return bad("a batch's batch: expected an integer >= 0");
    h.reply_bytes = b->get<std::size_t>();
  }
  return h;
}

std::string data_text(const json& data) {
  return dump(data);
}

caf::expected<json> parse_data(const std::string& text, std::size_t max_depth) {
  if (bridge::text_depth_exceeds(text, max_depth))
    return make_error(errc::result_too_deep, bridge::depth_message("a remote chunk", max_depth));
  auto j = json::parse(text, nullptr, false);
  if (j.is_discarded())
    return make_error(errc::protocol_error, "a remote chunk's data is not JSON");
  return j;
}

std::string reply_text(const caf::expected<json>& r) {
  if (r) {
    // Written as text: no copy of the result.
    std::string s = stamp_prefix();
    s += ",\"ok\":true,\"result\":";
    s += dump(*r);
    s += '}';
    return s;
  }
  auto code = code_of(r.error());
  json e = {{"class", code ? to_string(*code) : "error"}, {"message", describe(r.error())},
            {"detail", code ? detail_of(r.error()) : describe(r.error())}};
  return dump(stamped({{"ok", false}, {"error", std::move(e)}}));
}

caf::expected<json> parse_reply(const std::string& text, std::size_t max_depth) {
  // The result sits one level inside the reply object.
  if (bridge::text_depth_exceeds(text, bridge::envelope_depth(max_depth)))
    return make_error(errc::result_too_deep,
                      bridge::depth_message("the remote node's reply", max_depth));
  // A success exactly as reply_text writes it: only the result is parsed,
  // no envelope object is built (its map was most of a remote_pool's
  // parse). Anything else takes the full parse below, with the same verdict.
  static const std::string ok_head = stamp_prefix() + ",\"ok\":true,\"result\":";
  if (text.size() > ok_head.size() && text.compare(0, ok_head.size(), ok_head) == 0) {
    json result;
    if (bridge::parse_closing_value(std::string_view(text).substr(ok_head.size()), result))
      return result;
  }
  auto j = parse_object(text);
  if (!j.is_object())
    return make_error(errc::protocol_error, "the remote node's reply is not a JSON object");
  if (auto why = check_stamp(j); !why.empty())
    return make_error(errc::protocol_error, why);
  if (j.value("ok", false) == true && j.contains("result"))
    return std::move(j["result"]);
  auto e = j.value("error", json::object());
  if (!e.is_object())
    return make_error(errc::protocol_error, "the remote node's error is not an object");
  auto cls = e.value("class", json()).is_string() ? e["class"].get<std::string>() : "";
  auto detail = e.value("detail", json()).is_string() ? e["detail"].get<std::string>() : "";
  if (auto code = errc_named(cls))
    return make_error(*code, detail);
  return make_error(errc::protocol_error, "the remote node answered an error of unknown class \""
                                            + cls + "\": " + detail);
}

std::optional<errc> errc_named(const std::string& name) {
  for (int i = 1; i <= static_cast<int>(errc_last); ++i)
    if (name == to_string(static_cast<errc>(i)))
      return static_cast<errc>(i);
  return std::nullopt;
}

} // namespace dspex::remote
