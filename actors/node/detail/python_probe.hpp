// auto mode (node.hpp): whether python3 starts the worker package and
// answers a ping, in a throwaway actor_system on the node's io loop.
#pragma once

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/bridge/io_loop.hpp>

#include <string>

namespace dspex {

/// Empty when a worker as the last pool among the root's children runs it
/// (a default worker when there is none) started and answered; else why not
/// (describe() of its error).
std::string probe_python(const tree_config& cfg, const node_options& opts, bridge::io_loop& loop);

} // namespace dspex
