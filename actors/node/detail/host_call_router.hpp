// Where a worker's host calls go (docs/architecture.md "Host calls"): the
// node's pools by name, and the functions registered on it. Shared by the
// node and every worker it builds (worker_config::host_calls), so it
// outlives neither's use; it holds no node and no actor strongly but the
// directory's.
#pragma once

#include <dspex/actors/node/host_functions.hpp>

#include <caf/actor.hpp>
#include <caf/error.hpp>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dspex {

class host_call_router {
public:
  struct function_entry {
    host_function async;          ///< set: runs on the calling worker's thread
    blocking_host_function sync;  ///< set: runs on a host-function thread
  };

  explicit host_call_router(std::size_t max_depth = 8) : max_depth_(max_depth) {}
  ~host_call_router();

  /// How the node finds a pool (or remote_pool) by name; invalid: none.
  void set_pool_lookup(std::function<caf::actor(const std::string&)> f);
  caf::actor pool(const std::string& name) const;

  /// invalid_request for an empty or taken name.
  caf::error add(const std::string& name, function_entry e);
  void remove(const std::string& name);
  std::shared_ptr<const function_entry> function(const std::string& name) const;

  /// Nested calls allowed (a client's request calls at depth 1).
  std::size_t max_depth() const { return max_depth_; }

  /// Runs `job` on a host-function thread (started on first use).
  void run_blocking(std::function<void()> job);

  /// Accounting for status: a call to `target` began, or ended.
  void started(const std::string& target);
  void ended(const std::string& target);
  /// {"in_flight": N, "total": M, "by_target": {"pool:search": n, ...}}
  json status() const;

  /// Stops the host-function threads (after the tree stopped).
  void stop();

private:
  static constexpr std::size_t threads_ = 4;

  std::size_t max_depth_;
  mutable std::mutex mx_;
  std::function<caf::actor(const std::string&)> lookup_;
  std::map<std::string, std::shared_ptr<const function_entry>> functions_;
  std::map<std::string, std::uint64_t> in_flight_;
  std::uint64_t total_ = 0;

  std::mutex jobs_mx_;
  std::condition_variable jobs_cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
};

} // namespace dspex
