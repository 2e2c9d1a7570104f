// A node from a JSON config for an in-process test: the config must parse
// and the node must start (each failure says why), with the worker package
// of the source tree.
#pragma once

#include <dspex/actors/config.hpp>
#include <dspex/actors/error.hpp>
#include <dspex/actors/node.hpp>

#include "test_paths.hpp"

#include <doctest/doctest.h>

#include <memory>

namespace dspex::test {

inline std::shared_ptr<node> start_test_node(caf::actor_system& sys, const json& config,
                                             node_options opts = {}) {
  opts.python_path = DSPEX_TEST_PYTHON_DIR;
  auto tc = parse_config(config);
  REQUIRE_MESSAGE(tc, detail_of(tc.error()));
  auto n = node::start(sys, *tc, std::move(opts));
  REQUIRE_MESSAGE(n, describe(n.error()));
  return *n;
}

} // namespace dspex::test
