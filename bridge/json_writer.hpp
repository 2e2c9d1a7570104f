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
// throwing.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dspex::bridge {

/// Appends `s` as a JSON string literal. False when `s` is not UTF-8; `out`
/// then holds a partial literal (the caller discards it).
bool append_json_string(std::string& out, std::string_view s);

/// Appends the compact JSON text of `v` (as v.dump()). False when a string
/// in it (a key or a value) is not UTF-8; `out` then holds partial text.
bool append_json(std::string& out, const nlohmann::json& v);

} // namespace dspex::bridge
