#include <dspex/bridge/json_writer.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>

#include <dspex/bridge/protocol.hpp>

namespace dspex::bridge {

namespace {

constexpr std::uint64_t ones = ~std::uint64_t{0} / 255;  // 0x0101...01
constexpr std::uint64_t highs = ones * 0x80;

constexpr std::uint64_t has_zero_byte(std::uint64_t x) {
  return (x - ones) & ~x & highs;
}

// True when none of the eight bytes needs escaping or UTF-8 checking:
// all in 0x20..0x7F and none is '"' or '\\'.
bool plain8(const char* p) {
  std::uint64_t x;
  std::memcpy(&x, p, sizeof x);
  std::uint64_t below_space = (x - ones * 0x20) & ~x & highs;
  std::uint64_t quote = has_zero_byte(x ^ (ones * '"'));
  std::uint64_t backslash = has_zero_byte(x ^ (ones * '\\'));
  return ((x & highs) | below_space | quote | backslash) == 0;
}

// The length of the well-formed UTF-8 sequence starting at p (a byte >= 0x80), else 0.
std::size_t utf8_sequence(const unsigned char* p, const unsigned char* end) {
  // The same checks as is_valid_utf8, on one sequence.
  auto n = static_cast<std::size_t>(end - p);
  std::size_t len = 0;
  if ((p[0] & 0xE0) == 0xC0)
    len = 2;
  else if ((p[0] & 0xF0) == 0xE0)
    len = 3;
  else if ((p[0] & 0xF8) == 0xF0)
    len = 4;
  if (len == 0 || n < len)
    return 0;
  return is_valid_utf8(std::string_view(reinterpret_cast<const char*>(p), len)) ? len : 0;
}

void append_escape(std::string& out, unsigned char c) {
  switch (c) {
    case '"': out += "\\\""; return;
    case '\\': out += "\\\\"; return;
    case '\b': out += "\\b"; return;
    case '\f': out += "\\f"; return;
    case '\n': out += "\\n"; return;
    case '\r': out += "\\r"; return;
    case '\t': out += "\\t"; return;
    default: break;
  }
  static constexpr char hex[] = "0123456789abcdef";
  char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
  out.append(u, sizeof u);
}

template <class Int>
void append_integer(std::string& out, Int v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_float(std::string& out, double v) {
  if (!std::isfinite(v)) {
    out += "null";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string_view text(buf, static_cast<std::size_t>(r.ptr - buf));
  out += text;
  // 1.0 must stay a float on the other side, as dump() writes it.
  if (text.find_first_of(".eE") == std::string_view::npos)
    out += ".0";
}

} // namespace

bool append_json_string(std::string& out, std::string_view s) {
  out.reserve(out.size() + s.size() + 2);
  out += '"';
  const char* p = s.data();
  const char* end = p + s.size();
  const char* run = p;  // plain bytes not yet copied start here
  while (p < end) {
    if (end - p >= 8 && plain8(p)) {
      p += 8;
      continue;
    }
    auto c = static_cast<unsigned char>(*p);
    if (c >= 0x80) {
      auto len = utf8_sequence(reinterpret_cast<const unsigned char*>(p),
                               reinterpret_cast<const unsigned char*>(end));
      if (len == 0)
        return false;
      p += len;
    } else if (c < 0x20 || c == '"' || c == '\\') {
      out.append(run, p);
      append_escape(out, c);
      run = ++p;
    } else {
      ++p;
    }
  }
  out.append(run, end);
  out += '"';
  return true;
}

namespace {

// `depth_left`: the levels of [ and { still allowed at `v`.
write_refusal append_value(std::string& out, const nlohmann::json& v, std::size_t depth_left) {
  using t = nlohmann::json::value_t;
  constexpr auto ok = write_refusal::none;
  switch (v.type()) {
    case t::null:
    case t::discarded: out += "null"; return ok;
    case t::boolean: out += v.get<bool>() ? "true" : "false"; return ok;
    case t::number_integer: append_integer(out, v.get<std::int64_t>()); return ok;
    case t::number_unsigned: append_integer(out, v.get<std::uint64_t>()); return ok;
    case t::number_float: append_float(out, v.get<double>()); return ok;
    case t::string:
      return append_json_string(out, v.get_ref<const std::string&>()) ? ok : write_refusal::not_utf8;
    case t::array: {
      if (depth_left == 0)
        return write_refusal::too_deep;
      out += '[';
      bool first = true;
      for (const auto& x : v) {
        if (!first)
          out += ',';
        first = false;
        if (auto why = append_value(out, x, depth_left - 1); why != ok)
          return why;
      }
      out += ']';
      return ok;
    }
    case t::object: {
      if (depth_left == 0)
        return write_refusal::too_deep;
      out += '{';
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first)
          out += ',';
        first = false;
        if (!append_json_string(out, it.key()))
          return write_refusal::not_utf8;
        out += ':';
        if (auto why = append_value(out, it.value(), depth_left - 1); why != ok)
          return why;
      }
      out += '}';
      return ok;
    }
    case t::binary: out += v.dump(); return ok;  // never from JSON text; dump() as is
  }
  return ok;
}

} // namespace

write_result append_json(std::string& out, const nlohmann::json& v, std::size_t max_depth) {
  return {append_value(out, v, max_depth)};
}

} // namespace dspex::bridge
