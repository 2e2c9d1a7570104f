// JSON text for request frames, written straight into the frame buffer.
//
// nlohmann's dump() escapes a string one byte at a time through a UTF-8
// state machine and throws on a string that is not UTF-8; the profile of
// the request path (README "Request path") put it among the host's top
// costs, and a request with such a string escaped the worker actor as an
// exception. This writer produces the text of dump() (object keys in their
// map order, UTF-8 kept as is, control characters as \uXXXX or their short
// escapes, NaN and infinities as null) except that a float may be spelled
// differently (std::to_chars' shortest round trip, "1e-04" for "0.0001"; a
// float without a fraction keeps its ".0"), copies runs of plain bytes at
// once, eight bytes per test, and reports a non-UTF-8 string instead of
// throwing. Its recursion is bounded: a value nested deeper than the depth
// it is given is refused (json_limits.hpp), so no input can exhaust the
// stack of the thread that writes it.
#pragma once

#include <dspex/bridge/json_limits.hpp>

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dspex::bridge {

/// Why a value could not be written.
enum class write_refusal {
  none,
  not_utf8,  ///< a string in it (a key or a value) is not UTF-8
  too_deep,  ///< it nests deeper than the depth allowed
};

/// True when written; else why not.
struct write_result {
  write_refusal why = write_refusal::none;
  explicit operator bool() const noexcept { return why == write_refusal::none; }
};

/// Appends `s` as a JSON string literal. False when `s` is not UTF-8; `out`
/// then holds a partial literal (the caller discards it).
bool append_json_string(std::string& out, std::string_view s);

/// Appends the compact JSON text of `v` (as v.dump()). Refused when a
/// string in it (a key or a value) is not UTF-8, or when it nests deeper
/// than `max_depth` (json_limits.hpp: {} is 1); `out` then holds partial
/// text.
write_result append_json(std::string& out, const nlohmann::json& v,
                         std::size_t max_depth = default_max_json_depth);

} // namespace dspex::bridge
