// Builds the root supervisor's child specs from a config's node specs
// (node::start): pools, workers, remote pools, OS processes, the session
// registry and the monitor, each registered in the directory under its key
// whenever it (re)starts; notes the names of what it builds for the node.
#pragma once

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/monitor.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/bridge/io_loop.hpp>
#include <dspex/bridge/json_limits.hpp>
#include <dspex/supervision/child_spec.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace dspex {

struct tree_builder {
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<directory> dir;
  const node_options& opts;
  bridge_mode mode;
  std::vector<std::string>& pools;
  std::string& single_worker;
  std::vector<std::pair<std::string, std::string>>& named;
  std::vector<std::string>& remotes;
  std::vector<std::string>& groups;
  std::size_t max_json_depth = bridge::default_max_json_depth;  ///< the tree's
  std::shared_ptr<host_call_router> host_calls;  ///< every worker's

  /// `w` with the node's python_path, the tree's max_json_depth and the
  /// node's host-call router.
  worker_config adjust(worker_config w) const;

  /// Wraps a start function so the directory always holds the current handle.
  supervision::start_fn registered(std::string key, supervision::start_fn f) const;

  /// The spec of `n`; nothing for Python children when the bridge is disabled.
  std::optional<supervision::child_spec> build(const node_spec& n);

  /// One supervised worker (a worker node, or a pool in single mode).
  supervision::child_spec build_worker(const node_spec& n, worker_config w);
};

} // namespace dspex
