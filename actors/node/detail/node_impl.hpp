// What a node holds (node.hpp keeps it behind node::impl): the tree's
// handles, the names it was built with, its watch on the root, its blocking
// callers and, when it listens, the router and its guard.
#pragma once

#include <atomic>

#include <dspex/actors/node/detail/caller_pool.hpp>
#include <dspex/actors/node/detail/host_call_router.hpp>
#include <dspex/actors/node/detail/root_watch.hpp>
#include <dspex/actors/node/monitor.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/remote/detail/request_link.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>
#include <dspex/bridge/io_loop.hpp>
#include <dspex/bridge/json_limits.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dspex {

struct node::impl {
  explicit impl(caf::actor_system& s) : sys(s), callers(std::make_shared<caller_pool>(s)) {}

  caf::actor_system& sys;
  std::shared_ptr<root_watch> watch;
  std::shared_ptr<caller_pool> callers;
  caf::actor root;
  caf::actor events;  ///< the watcher (detail/root_watch.hpp)
  bridge_mode mode = bridge_mode::pool;
  std::string mode_message;
  std::shared_ptr<directory> dir;
  std::shared_ptr<bridge::io_loop> loop;
  std::vector<std::string> pool_names;
  std::vector<std::string> remote_names;
  std::vector<std::string> group_names;
  /// Every name pool() knows, with its directory key, in config order.
  std::vector<std::pair<std::string, std::string>> named;
  std::string single_worker;
  caf::actor router;  ///< published when the config listens
  std::uint16_t listen_port = 0;
  std::string listen_host;
  bool listen_tls = false;
  std::size_t max_json_depth = bridge::default_max_json_depth;
  std::unique_ptr<router_guard> guard;
  std::shared_ptr<remote::link_listener> link_listener;  ///< the request link port  ///< bounds on the router port
  /// Where the workers' host calls go: the pools, the registered functions.
  std::shared_ptr<host_call_router> host_calls;
  std::atomic<bool> stopped{false};  // read by control and SIGHUP threads
};

} // namespace dspex
