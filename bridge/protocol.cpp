#include <dspex/bridge/protocol.hpp>

#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/json_limits.hpp>
#include <dspex/bridge/json_writer.hpp>

#include <charconv>
#include <stdexcept>

namespace dspex::bridge {

const char* to_string(protocol_errc code) noexcept {
  switch (code) {
    case protocol_errc::frame_too_large: return "frame_too_large";
    case protocol_errc::truncated_frame: return "truncated_frame";
    case protocol_errc::invalid_utf8: return "invalid_utf8";
    case protocol_errc::invalid_json: return "invalid_json";
    case protocol_errc::bad_envelope: return "bad_envelope";
    case protocol_errc::unknown_id: return "unknown_id";
  }
  return "unknown";
}

namespace {

// The id first (a worker that cannot parse the args still reads it from the
// frame's prefix and answers that request), the args last.
write_result append_request_body(std::string& out, std::uint64_t id, std::string_view command,
                                 const json& args, const std::optional<std::string>& session_id,
                                 std::size_t max_depth, request_extras extras = {}) {
  constexpr write_result not_utf8{write_refusal::not_utf8};
  out += "{\"id\":";
  out += std::to_string(id);
  out += ",\"command\":";
  if (!append_json_string(out, command))
    return not_utf8;
  out += ",\"session_id\":";
  if (!session_id)
    out += "null";
  else if (!append_json_string(out, *session_id))
    return not_utf8;
  out += ",\"args\":";
  if (auto r = append_json(out, args, max_depth); !r)
    return r;
  if (extras.timeout_ms > 0) {
    out += ",\"timeout_ms\":";
    out += std::to_string(extras.timeout_ms);
  }
  if (extras.stream > 0) {
    out += ",\"stream\":";
    out += std::to_string(extras.stream);
    if (extras.stream_bytes > 0) {
      out += ",\"stream_bytes\":";
      out += std::to_string(extras.stream_bytes);
    }
  }
  out += '}';
  return {};
}

template <class Body>
void append_framed(std::string& out, Body body) {
  const auto start = out.size();
  out.append(frame_header_bytes, '\0');
  body();
  write_frame_header(&out[start], static_cast<std::uint32_t>(out.size() - start - frame_header_bytes));
}

} // namespace

write_result append_request_frame(std::string& out, std::uint64_t id, std::string_view command,
                                  const json& args, const std::optional<std::string>& session_id,
                                  std::size_t max_depth, request_extras extras) {
  const auto start = out.size();
  out.append(frame_header_bytes, '\0');
  if (auto r = append_request_body(out, id, command, args, session_id, max_depth, extras); !r) {
    out.resize(start);
    return r;
  }
  write_frame_header(&out[start], static_cast<std::uint32_t>(out.size() - start - frame_header_bytes));
  return {};
}

write_result append_request_frame(std::string& out, const request& req, std::size_t max_depth) {
  return append_request_frame(out, req.id, req.command, req.args, req.session_id, max_depth);
}

void append_cancel_frame(std::string& out, std::uint64_t id) {
  append_framed(out, [&] {
    out += "{\"type\":\"cancel\",\"id\":";
    out += std::to_string(id);
    out += '}';
  });
}

void append_ack_frame(std::string& out, std::uint64_t id, std::uint64_t seq) {
  append_framed(out, [&] {
    out += "{\"type\":\"ack\",\"id\":";
    out += std::to_string(id);
    out += ",\"seq\":";
    out += std::to_string(seq);
    out += '}';
  });
}

write_result append_call_result_frame(std::string& out, std::uint64_t call, const json& result,
                                      std::size_t max_depth) {
  const auto start = out.size();
  write_result r;
  append_framed(out, [&] {
    out += "{\"type\":\"result\",\"call\":";
    out += std::to_string(call);
    out += ",\"success\":true,\"result\":";
    r = append_json(out, result, max_depth);
    out += '}';
  });
  if (!r)
    out.resize(start);
  return r;
}

void append_call_error_frame(std::string& out, std::uint64_t call, std::string_view error_class,
                             std::string_view message) {
  append_framed(out, [&] {
    out += "{\"type\":\"result\",\"call\":";
    out += std::to_string(call);
    out += ",\"success\":false,\"error\":{\"type\":";
    // Classes and messages the host makes are UTF-8; a message carrying a
    // callee's bytes is replaced rather than sent broken.
    append_json_string(out, is_valid_utf8(error_class) ? error_class : "internal");
    out += ",\"message\":";
    append_json_string(out, is_valid_utf8(message) ? message : "(a message that is not UTF-8)");
    out += "}}";
  });
}

std::string encode_request(const request& req) {
  std::string out;
  auto r = append_request_body(out, req.id, req.command, req.args, req.session_id,
                               default_max_json_depth);
  if (r.why == write_refusal::not_utf8)
    throw std::invalid_argument("request holds a string that is not UTF-8");
  if (!r)
    throw std::invalid_argument(depth_message("request args", default_max_json_depth));
  return out;
}

std::string encode_reply(const reply& rep) {
  if (rep.is_chunk())
    return json{{"id", rep.id}, {"type", "chunk"}, {"seq", rep.seq}, {"data", rep.result}}.dump();
  json j = {{"id", rep.id}, {"success", rep.success}};
  if (rep.success) {
    j["result"] = rep.result;
  } else {
    json e = {{"type", rep.error.type}, {"message", rep.error.message}};
    if (!rep.error.traceback.empty())
      e["traceback"] = rep.error.traceback;
    j["error"] = std::move(e);
  }
  return j.dump();
}

bool is_valid_utf8(std::string_view s) noexcept {
  auto p = reinterpret_cast<const unsigned char*>(s.data());
  auto end = p + s.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t len;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) < len)
      return false;
    for (std::size_t i = 1; i < len; ++i) {
      if ((p[i] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    static constexpr std::uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    p += len;
  }
  return true;
}

namespace {

// Parses and checks the encoding; on failure fills `err`. The parser itself
// refuses ill-formed UTF-8 (in strings; outside them any byte >= 0x80 is
// not JSON), so the separate pass only runs to classify a failure.
std::optional<json> parse_body(std::string_view body, protocol_error& err) {
  auto j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() && !is_valid_utf8(body)) {
    err = {protocol_errc::invalid_utf8, "frame body is not valid UTF-8"};
    return std::nullopt;
  }
  if (j.is_discarded()) {
    std::string head(body.substr(0, 80));
    err = {protocol_errc::invalid_json, "frame body is not JSON: '" + head + "'"};
    return std::nullopt;
  }
  if (!j.is_object()) {
    err = {protocol_errc::bad_envelope, "frame body is not a JSON object"};
    return std::nullopt;
  }
  return j;
}

bool read_id(const json& j, std::uint64_t& id, protocol_error& err) {
  auto it = j.find("id");
  if (it == j.end() || !it->is_number_unsigned()) {
    err = {protocol_errc::bad_envelope, "missing or non-integer \"id\""};
    return false;
  }
  id = it->get<std::uint64_t>();
  return true;
}

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    return {};
  return it->is_string() ? it->get<std::string>() : it->dump();
}

bool skip(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix)
    return false;
  s.remove_prefix(prefix.size());
  return true;
}

// An unsigned JSON integer at the start of `s`, taken off it. No sign, no
// blank; out of range (above uint64) the full parse calls it not an id.
bool skip_uint(std::string_view& s, std::uint64_t& n) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  const auto digits = static_cast<std::size_t>(end - s.data());
  if (ec != std::errc{} || (digits > 1 && s[0] == '0'))  // JSON has no leading zeros
    return false;
  s.remove_prefix(digits);
  return true;
}

// `v` whole is a JSON string with no escape but \" \\ \/ \b \f \n \r \t and
// no control character: its value in `out`, as the parser would build it.
// False for anything else, valid or not, which the parser then judges (so
// the verdict is the parser's either way; a differential test in
// test_protocol.cpp). A stream's chunks are mostly such strings (tokens),
// and nlohmann's lexer, which copies them a byte at a time into two
// buffers, was the largest item of the io thread's profile per chunk.
bool parse_plain_string(std::string_view v, json& out) {
  if (v.size() < 2 || v.front() != '"' || v.back() != '"')
    return false;
  v = v.substr(1, v.size() - 2);
  bool ascii = true;
  std::size_t escapes = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c == '"' || c < 0x20)
      return false;
    if (c >= 0x80)
      ascii = false;
    if (c == '\\') {
      if (++i == v.size())
        return false;
      switch (v[i]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
        default: return false;  // \u (and anything invalid): the parser's
      }
      ++escapes;
    }
  }
  if (!ascii && !is_valid_utf8(v))
    return false;
  std::string text;
  if (escapes == 0) {
    text.assign(v.data(), v.size());
  } else {
    text.reserve(v.size() - escapes);
    for (std::size_t i = 0; i < v.size(); ++i) {
      char c = v[i];
      if (c == '\\') {
        switch (v[++i]) {
          case 'b': c = '\b'; break;
          case 'f': c = '\f'; break;
          case 'n': c = '\n'; break;
          case 'r': c = '\r'; break;
          case 't': c = '\t'; break;
          default: c = v[i]; break;  // " \ /
        }
      }
      text.push_back(c);
    }
  }
  out = std::move(text);
  return true;
}

// The successful reply exactly as the Python worker spells it,
// {"id":N,"success":true,"result":R}: only R goes through the JSON parser,
// and no envelope object is built (three keys, three allocations and a map
// per reply, the largest user-space item of the host's profile). Anything
// else, valid or not, is left to the full parse, so verdicts and results
// are the same either way.
bool parse_plain_success(std::string_view s, reply& rep) {
  if (!skip(s, R"({"id":)") || !skip_uint(s, rep.id))
    return false;
  if (skip(s, R"(,"type":"chunk","seq":)")) {
    // A chunk as the worker spells it: {"id":N,"type":"chunk","seq":S,"data":X}.
    if (!skip_uint(s, rep.seq) || !skip(s, R"(,"data":)") || !parse_closing_value(s, rep.result))
      return false;
    rep.kind = frame_kind::chunk;
    rep.success = true;
    return true;
  }
  if (!skip(s, R"(,"success":true,"result":)") || !parse_closing_value(s, rep.result))
    return false;
  rep.success = true;
  return true;
}

// {"type": ...} of a worker frame: absent for a reply, "chunk" for a chunk.
// False (with `err`) for anything else.
// {"type":"cancel_call","call":K} names no request: it has no "id".
bool is_cancel_call(const json& j) {
  auto t = j.find("type");
  return t != j.end() && t->is_string() && *t == "cancel_call";
}

// A host call's fields (protocol 3): {"type":"call","id","call","target",
// "command","args"[,"timeout_ms"][,"session"]}.
bool read_call_fields(json& j, reply& rep, protocol_error& err) {
  auto bad = [&](const char* what) {
    err = {protocol_errc::bad_envelope, std::string("host call: ") + what};
    return false;
  };
  auto& c = rep.call;
  auto k = j.find("call");
  if (k == j.end() || !k->is_number_unsigned())
    return bad("missing or non-integer \"call\"");
  c.call = k->get<std::uint64_t>();
  auto target = j.find("target");
  auto command = j.find("command");
  if (target == j.end() || !target->is_string() || command == j.end() || !command->is_string())
    return bad("\"target\" and \"command\" must be strings");
  c.target = target->get<std::string>();
  c.command = command->get<std::string>();
  auto args = j.find("args");
  if (args != j.end() && !args->is_null() && !args->is_object())
    return bad("\"args\" must be an object");
  rep.result = args == j.end() || args->is_null() ? json::object() : std::move(*args);
  auto t = j.find("timeout_ms");
  if (t != j.end() && !t->is_number_unsigned())
    return bad("\"timeout_ms\" must be a non-negative integer");
  c.timeout_ms = t == j.end() ? 0 : t->get<std::uint64_t>();
  auto s = j.find("session");
  if (s == j.end()) {
    c.session = host_call_frame::session_rule::same;
  } else if (s->is_null()) {
    c.session = host_call_frame::session_rule::none;
  } else if (s->is_string()) {
    c.session = host_call_frame::session_rule::named;
    c.session_id = s->get<std::string>();
  } else {
    return bad("\"session\" must be a string or null");
  }
  rep.kind = frame_kind::call;
  rep.success = true;
  return true;
}

bool read_chunk_fields(json& j, reply& rep, protocol_error& err) {
  auto t = j.find("type");
  if (t == j.end())
    return true;
  if (t->is_string() && *t == "call")
    return read_call_fields(j, rep, err);
  if (t->is_string() && *t == "cancel_call") {
    auto k = j.find("call");
    if (k == j.end() || !k->is_number_unsigned()) {
      err = {protocol_errc::bad_envelope, "cancel_call: missing or non-integer \"call\""};
      return false;
    }
    rep.kind = frame_kind::cancel_call;
    rep.seq = k->get<std::uint64_t>();
    rep.success = true;
    return true;
  }
  if (!t->is_string() || *t != "chunk") {
    err = {protocol_errc::bad_envelope, "unknown frame type " + t->dump()};
    return false;
  }
  auto seq = j.find("seq");
  if (seq == j.end() || !seq->is_number_unsigned()) {
    err = {protocol_errc::bad_envelope, "chunk without an unsigned \"seq\""};
    return false;
  }
  rep.kind = frame_kind::chunk;
  rep.success = true;
  rep.seq = seq->get<std::uint64_t>();
  auto data = j.find("data");
  if (data != j.end())
    rep.result = std::move(*data);
  return true;
}

// A reply nested deeper than the limit: only the envelope's own members are
// built (the parser, iterative, still checks the whole text), so the
// request can be failed by its id while the stream stays in step.
std::variant<reply, protocol_error> parse_too_deep(std::string_view body, std::size_t max_depth) {
  using event = json::parse_event_t;
  json::parser_callback_t envelope_only = [](int depth, event ev, json&) {
    return depth == 0 || (ev != event::object_start && ev != event::array_start);
  };
  auto j = json::parse(body.begin(), body.end(), envelope_only, false);
  if (j.is_discarded())
    return is_valid_utf8(body)
             ? protocol_error{protocol_errc::invalid_json,
                              "frame body is not JSON: '" + std::string(body.substr(0, 80)) + "'"}
             : protocol_error{protocol_errc::invalid_utf8, "frame body is not valid UTF-8"};
  if (!j.is_object())
    return protocol_error{protocol_errc::bad_envelope, "frame body is not a JSON object"};
  reply rep;
  protocol_error err{protocol_errc::bad_envelope, {}};
  if (!read_id(j, rep.id, err) && !is_cancel_call(j))
    return err;
  if (!read_chunk_fields(j, rep, err))
    return err;
  if (rep.kind == frame_kind::call) {
    // A host call whose args nest too deep: answered with an error by its
    // call number, the worker serves on.
    rep.result = json::object();
    rep.too_deep = depth_message("a host call's args", max_depth);
    return rep;
  }
  if (rep.kind == frame_kind::cancel_call)
    return rep;
  if (rep.is_chunk()) {
    rep.result = nullptr;
    rep.too_deep = depth_message("a chunk of the command's stream", max_depth);
    return rep;
  }
  auto ok = j.find("success");
  if (ok == j.end() || !ok->is_boolean())
    return protocol_error{protocol_errc::bad_envelope, "missing or non-boolean \"success\""};
  rep.success = ok->get<bool>();
  rep.too_deep = depth_message("the command's reply", max_depth);
  return rep;
}

} // namespace

namespace {

std::variant<reply, protocol_error> parse_reply_body(std::string_view body, std::size_t max_depth) {
  if (text_depth_exceeds(body, envelope_depth(max_depth)))
    return parse_too_deep(body, max_depth);
  {
    reply rep;
    if (parse_plain_success(body, rep))
      return rep;
  }
  protocol_error err{protocol_errc::bad_envelope, {}};
  auto j = parse_body(body, err);
  if (!j)
    return err;
  reply rep;
  if (!read_id(*j, rep.id, err) && !is_cancel_call(*j))
    return err;
  if (!read_chunk_fields(*j, rep, err))
    return err;
  if (rep.kind != frame_kind::reply)
    return rep;
  auto ok = j->find("success");
  if (ok == j->end() || !ok->is_boolean())
    return protocol_error{protocol_errc::bad_envelope, "missing or non-boolean \"success\""};
  rep.success = ok->get<bool>();
  if (rep.success) {
    auto res = j->find("result");
    rep.result = res == j->end() ? json(nullptr) : std::move(*res);
    return rep;
  }
  auto e = j->find("error");
  if (e == j->end() || !e->is_object())
    return protocol_error{protocol_errc::bad_envelope, "failed reply without an \"error\" object"};
  rep.error.type = string_field(*e, "type");
  rep.error.message = string_field(*e, "message");
  rep.error.traceback = string_field(*e, "traceback");
  if (rep.error.type.empty())
    rep.error.type = "Error";
  return rep;
}

} // namespace

std::variant<reply, protocol_error> parse_reply(std::string_view body, std::size_t max_depth) {
  auto r = parse_reply_body(body, max_depth);
  if (auto* rep = std::get_if<reply>(&r))
    rep->bytes = body.size();
  return r;
}

std::variant<request, protocol_error> parse_request(std::string_view body) {
  protocol_error err{protocol_errc::bad_envelope, {}};
  auto j = parse_body(body, err);
  if (!j)
    return err;
  request req;
  if (!read_id(*j, req.id, err))
    return err;
  auto cmd = j->find("command");
  if (cmd == j->end() || !cmd->is_string())
    return protocol_error{protocol_errc::bad_envelope, "missing or non-string \"command\""};
  req.command = cmd->get<std::string>();
  auto args = j->find("args");
  if (args != j->end() && !args->is_null())
    req.args = std::move(*args);
  auto sid = j->find("session_id");
  if (sid != j->end() && sid->is_string())
    req.session_id = sid->get<std::string>();
  return req;
}

bool parse_closing_value(std::string_view s, json& out) {
  if (s.size() < 2 || s.back() != '}')
    return false;
  s.remove_suffix(1);
  if (parse_plain_string(s, out))
    return true;
  auto v = json::parse(s.begin(), s.end(), nullptr, false);
  if (v.is_discarded())
    return false;
  out = std::move(v);
  return true;
}

} // namespace dspex::bridge
