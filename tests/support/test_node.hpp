// A node from a JSON config for an in-process test: the config must parse
// and the node must start (each failure says why), with the worker package
// of the source tree.
#pragma once

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/node.hpp>

#include "test_paths.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <string>

namespace dspex::test {

/// The default tree in `mode` with its pool at `size` workers.
inline json small_tree(const std::string& mode = "pool", int size = 2, bool fault_injection = true) {
  auto j = default_config();
  j["mode"] = mode;
  j["root"]["children"][1]["size"] = size;
  j["root"]["children"][1]["worker"]["fault_injection"] = fault_injection;
  return j;
}

inline std::shared_ptr<node> start_test_node(caf::actor_system& sys, const json& config,
                                             node_options opts = {}) {
  opts.python_path = DSPEX_TEST_PYTHON_DIR;
  auto tc = parse_config(config);
  // The messages are built only on failure: doctest's -s evaluates them
  // for passing checks too, and error() of a value is undefined.
  REQUIRE_MESSAGE(tc, (tc ? std::string() : detail_of(tc.error())));
  auto n = node::start(sys, *tc, std::move(opts));
  REQUIRE_MESSAGE(n, (n ? std::string() : describe(n.error())));
  return *n;
}

} // namespace dspex::test
