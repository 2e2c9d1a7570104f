// A result's classified error for an assertion's message, or "" when it
// holds a value: CHECK_MESSAGE(r, why(r)). doctest builds the message of a
// passing assertion too when successes are reported (-s), where
// describe(r.error()) would read an error a value does not have.
#pragma once

#include <dspex/actors/node/error.hpp>

#include <caf/expected.hpp>

#include <string>

namespace dspex::test {

template <class T>
std::string why(const caf::expected<T>& r) {
  return r ? std::string{} : describe(r.error());
}

} // namespace dspex::test
