// The monitor: watches a tree from the side. Every interval it asks each
// pool for its metrics (checkouts, checkout wait, queue, in flight, errors
// by class, restarts, circuit state, per-worker state) and keeps the last
// snapshot with a short history; it also triggers the pools' health pings.
// (status) answers with the snapshot of the whole tree, children included.
#pragma once

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace dspex {

struct monitor_config {
  std::chrono::milliseconds interval{std::chrono::seconds(1)};
  std::size_t history = 60;  ///< snapshots kept
};

/// Current handles of a running tree, updated as children restart: the
/// monitor and the node API look actors up here instead of holding handles
/// that a restart would make stale.
class directory {
public:
  void set(const std::string& name, caf::actor a) {
    std::lock_guard<std::mutex> g(mx_);
    actors_[name] = std::move(a);
  }
  caf::actor get(const std::string& name) const {
    std::lock_guard<std::mutex> g(mx_);
    auto it = actors_.find(name);
    return it == actors_.end() ? caf::actor{} : it->second;
  }
  /// name -> actor for every name with the prefix ("pool:" for pools).
  std::map<std::string, caf::actor> with_prefix(const std::string& prefix) const {
    std::lock_guard<std::mutex> g(mx_);
    std::map<std::string, caf::actor> out;
    for (auto& [k, v] : actors_)
      if (k.compare(0, prefix.size(), prefix) == 0)
        out.emplace(k.substr(prefix.size()), v);
    return out;
  }

private:
  mutable std::mutex mx_;
  std::map<std::string, caf::actor> actors_;
};

caf::actor spawn_monitor(caf::local_actor* ctx, monitor_config cfg, std::shared_ptr<directory> dir);

} // namespace dspex
