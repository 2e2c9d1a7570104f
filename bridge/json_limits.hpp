// How deep a JSON text or value may nest (docs/security.md "JSON depth and
// size"). No CAF: the bridge, the actors and the control socket share it.
//
// Why: nlohmann's parser is iterative, but copying a value, dump() and the
// frame writer recurse once per level, and Python's json gives up near
// 1,000 levels. A 40 KB argument nested 20,000 deep crashed the host on the
// io thread. Every way JSON enters a node is checked against
// `max_json_depth` before anything recurses over it: text with
// `text_depth_exceeds` (one pass over the bytes, before the parse), a value
// built by an embedder with `value_depth_exceeds` (an explicit stack); the
// writer refuses past the limit on its own (json_writer.hpp), so a missed
// check costs a refusal, not the process.
//
// Depth counts brackets: a scalar is 0, {} and [] are 1, {"a":[1]} is 2. The
// limit bounds a request's args and a reply's result; an envelope around
// them ({"op":"exec","args":...}, {"id":1,"result":...}) adds its own level,
// which the checks of the whole text allow for (`envelope_depth`).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dspex::bridge {

/// The default `max_json_depth` (config key of the tree).
inline constexpr std::size_t default_max_json_depth = 512;
/// The largest `max_json_depth` the config accepts: far below the depth at
/// which a recursion over a value (nlohmann's copy and dump, the writer)
/// would run out of a thread's stack.
inline constexpr std::size_t max_json_depth_limit = 4096;

/// What an envelope around the limited value adds: text holding a value of
/// depth d in one object nests d + 1 deep.
inline constexpr std::size_t envelope_depth(std::size_t max_depth) { return max_depth + 1; }

/// The nesting depth of JSON text: the deepest count of '[' and '{' not yet
/// closed, outside string literals (escapes honoured). Stops scanning once
/// the count passes `stop_above` and returns stop_above + 1. Any bytes are
/// safe; for text a JSON parser accepts, the result (below the stop) is
/// the depth of the parsed value. A stray ']' or '}' never counts below 0.
std::size_t text_depth(std::string_view text, std::size_t stop_above);

/// True when `text`, should it parse, nests deeper than `max_depth`. Text
/// shorter than 2 * (max_depth + 1) bytes cannot (each level needs an
/// opening and a closing byte) and is not scanned.
bool text_depth_exceeds(std::string_view text, std::size_t max_depth);

/// The depth of a value, without recursion; stops once it passes
/// `stop_above` and returns stop_above + 1.
std::size_t value_depth(const nlohmann::json& v, std::size_t stop_above);

/// True when `v` nests deeper than `max_depth`.
bool value_depth_exceeds(const nlohmann::json& v, std::size_t max_depth);

/// The message of a refusal: "<what>: nested deeper than max_json_depth
/// (512 levels of [ and {)".
std::string depth_message(std::string_view what, std::size_t max_depth);

} // namespace dspex::bridge
