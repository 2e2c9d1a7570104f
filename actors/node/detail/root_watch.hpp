// The node's watch on its root supervisor (node.hpp: on_failure, failure,
// wait_failure; status()'s restart counts). A watcher actor subscribes to
// the tree's supervision events, counts restarts per child path, remembers
// where restart intensities were reached and monitors the root, so that a
// root that stops by itself is reported with the path that escalated.
#pragma once

#include <dspex/actors/node/node.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/atom.hpp>

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace dspex {

/// (restarts) -> json: {"children": path -> restarts, "supervisors": path ->
/// {"restarts", "intensity_stops"}}.
using restarts_atom = caf::atom_constant<caf::atom("restarts")>;
/// (watch, root): the watcher monitors `root` from now on.
using watch_atom = caf::atom_constant<caf::atom("watch")>;

// What the watcher tells the node's threads about the root's end.
struct root_watch {
  mutable std::mutex mx;
  mutable std::condition_variable cv;
  /// stop() asked the root to stop: its end is no failure.
  bool stopping = false;
  std::optional<root_failure> failure;
  std::vector<std::function<void(const root_failure&)>> callbacks;
};

/// The node's own subscriber of the tree's supervision events; send it
/// (watch, root) once the root runs. It records a root failure in `watch`
/// and calls its callbacks.
caf::actor spawn_root_watcher(caf::actor_system& sys, std::shared_ptr<root_watch> watch);

} // namespace dspex
