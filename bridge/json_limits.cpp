#include <dspex/bridge/json_limits.hpp>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

namespace dspex::bridge {

namespace {

// `p` is just past a string's opening quote: returns just past its closing
// quote, or `end` for an unterminated string. A quote closes the string
// when an even number of backslashes precedes it (within the string).
// Short strings (most keys and values) are walked byte by byte; a long one
// is searched with memchr.
const char* skip_string(const char* p, const char* end) {
  const char* start = p;
  for (const char* stop = p + std::min<std::ptrdiff_t>(end - p, 32); p < stop;) {
    char c = *p++;
    if (c == '"')
      return p;
    if (c == '\\')
      ++p;  // the escaped byte (a \uXXXX's digits are plain)
  }
  if (p >= end)
    return end;
  while (p < end) {
    auto q = static_cast<const char*>(std::memchr(p, '"', static_cast<std::size_t>(end - p)));
    if (!q)
      return end;
    std::size_t slashes = 0;
    for (const char* b = q; b > start && b[-1] == '\\'; --b)
      ++slashes;
    p = q + 1;
    if (slashes % 2 == 0)
      return p;
  }
  return end;
}

enum : unsigned char { plain, opening, closing, quote };

struct byte_classes {
  unsigned char of[256] = {};
  constexpr byte_classes() {
    of[static_cast<unsigned char>('[')] = opening;
    of[static_cast<unsigned char>('{')] = opening;
    of[static_cast<unsigned char>(']')] = closing;
    of[static_cast<unsigned char>('}')] = closing;
    of[static_cast<unsigned char>('"')] = quote;
  }
};

constexpr byte_classes classes;

} // namespace

std::size_t text_depth(std::string_view text, std::size_t stop_above) {
  const char* p = text.data();
  const char* end = p + text.size();
  std::size_t depth = 0, deepest = 0;
  while (p < end) {
    switch (classes.of[static_cast<unsigned char>(*p++)]) {
      case plain:
        break;
      case opening:
        if (++depth > deepest) {
          deepest = depth;
          if (deepest > stop_above)
            return stop_above + 1;
        }
        break;
      case closing:
        if (depth > 0)
          --depth;
        break;
      default:
        p = skip_string(p, end);
        break;
    }
  }
  return deepest;
}

bool text_depth_exceeds(std::string_view text, std::size_t max_depth) {
  // Depth d takes d opening and d closing bytes.
  if (text.size() / 2 <= max_depth)
    return false;
  return text_depth(text, max_depth) > max_depth;
}

namespace {

using json = nlohmann::json;

// The depth of `v` (structured, its own level counted as `base` + 1) with an
// explicit stack of iterators: the stack's size is the current depth.
std::size_t deep_depth(const json& v, std::size_t base, std::size_t stop_above) {
  using it = json::const_iterator;
  std::vector<std::pair<it, it>> stack;
  stack.emplace_back(v.cbegin(), v.cend());
  std::size_t deepest = base + 1;
  while (!stack.empty()) {
    auto& top = stack.back();
    if (top.first == top.second) {
      stack.pop_back();
      continue;
    }
    const json& x = *top.first;
    ++top.first;  // `top` is not used again: the push below may move it
    if (!x.is_structured())
      continue;
    auto depth = base + stack.size() + 1;
    if (depth > stop_above)
      return stop_above + 1;
    deepest = std::max(deepest, depth);
    stack.emplace_back(x.cbegin(), x.cend());
  }
  return deepest;
}

} // namespace

std::size_t value_depth(const json& v, std::size_t stop_above) {
  if (!v.is_structured())
    return 0;
  if (stop_above == 0)
    return 1;
  // The usual argument object holds scalars, or containers of scalars: no
  // stack (and no allocation) until the third level.
  std::size_t deepest = 1;
  for (const auto& x : v) {
    if (!x.is_structured())
      continue;
    if (stop_above < 2)
      return stop_above + 1;
    deepest = std::max<std::size_t>(deepest, 2);
    for (const auto& y : x)
      if (y.is_structured()) {
        deepest = std::max(deepest, deep_depth(y, 2, stop_above));
        if (deepest > stop_above)
          return stop_above + 1;
      }
  }
  return deepest;
}

bool value_depth_exceeds(const json& v, std::size_t max_depth) {
  return value_depth(v, max_depth) > max_depth;
}

std::string depth_message(std::string_view what, std::size_t max_depth) {
  std::string m(what);
  m += ": nested deeper than max_json_depth (";
  m += std::to_string(max_depth);
  m += " levels of [ and {)";
  return m;
}

} // namespace dspex::bridge
