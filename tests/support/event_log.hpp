// Every supervision event of a tree, as a subscriber of its root sees it:
// the one event log of the tests (supervisor suites, pools, process
// children, sessions). Subscribe `event_sink` to a supervisor and read or
// wait on the log from the test's thread.
//
// Waits are deadlines for "eventually", never assertions on elapsed time.
#pragma once

#include <dspex/supervision/events.hpp>

#include <caf/all.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dspex::test {

class event_log {
public:
  using event = supervision::supervision_event;
  using events = std::vector<event>;

  void add(event e) {
    {
      std::lock_guard<std::mutex> g(mx_);
      events_.push_back(std::move(e));
    }
    cv_.notify_all();
  }

  /// Every event so far, in arrival order.
  events snapshot() const {
    std::lock_guard<std::mutex> g(mx_);
    return events_;
  }

  /// Waits until pred(events) holds or `limit` passes; returns whether it held.
  bool wait(const std::function<bool(const events&)>& pred,
            std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    std::unique_lock<std::mutex> g(mx_);
    return cv_.wait_for(g, limit, [&] { return pred(events_); });
  }

  /// Events of `kind` at `path` in `xs`.
  static std::size_t count(const events& xs, supervision::event_kind kind,
                           const std::string& path) {
    std::size_t n = 0;
    for (auto& x : xs)
      n += x.kind == kind && x.path == path;
    return n;
  }
  std::size_t count(supervision::event_kind kind, const std::string& path) const {
    return count(snapshot(), kind, path);
  }
  /// Events of `kind` anywhere in the tree.
  int count(supervision::event_kind kind) const {
    int n = 0;
    for (auto& e : snapshot())
      n += e.kind == kind;
    return n;
  }
  /// Child exits of class `c` anywhere in the tree.
  int exits(supervision::exit_class c) const {
    int n = 0;
    for (auto& e : snapshot())
      n += e.kind == supervision::event_kind::child_exited && e.reason_class == c;
    return n;
  }

  /// The events of `kind` at `path`, in order.
  events of(supervision::event_kind kind, const std::string& path) const {
    events out;
    for (auto& e : snapshot())
      if (e.kind == kind && e.path == path)
        out.push_back(e);
    return out;
  }

  /// Waits until at least n events of `kind` at `path` arrived.
  bool wait_for(supervision::event_kind kind, const std::string& path, std::size_t n = 1) {
    return wait([&](const events& xs) { return count(xs, kind, path) >= n; });
  }

  /// Every event but starts, one line each (for failure messages).
  std::string dump() const {
    std::string out;
    for (auto& e : snapshot())
      if (e.kind != supervision::event_kind::child_started)
        out += to_string(e) + "\n";
    return out;
  }

  /// The events of the supervisor at `path` and of its direct children, in
  /// arrival order, as "start a", "exit b crash", "restart a", "fail a",
  /// "intensity a", "stop shutdown"; joined by ", ".
  std::string trace(const std::string& path) const {
    using supervision::event_kind;
    std::string out;
    for (auto& x : snapshot()) {
      bool own = x.path == path && x.child_id.empty();
      bool child = !x.child_id.empty() && x.path == path + "/" + x.child_id;
      if (x.kind == event_kind::intensity_reached)
        child = x.path == path + "/" + x.child_id;
      if (!own && !child)
        continue;
      if (!out.empty())
        out += ", ";
      switch (x.kind) {
        case event_kind::child_started:
          out += "start " + x.child_id;
          break;
        case event_kind::child_restarted:
          out += "restart " + x.child_id;
          break;
        case event_kind::child_exited:
          out += "exit " + x.child_id + " " + to_string(x.reason_class);
          break;
        case event_kind::child_start_failed:
          out += "fail " + x.child_id;
          break;
        case event_kind::intensity_reached:
          out += "intensity " + x.child_id;
          break;
        case event_kind::supervisor_stopped:
          out += "stop " + to_string(x.reason_class);
          break;
      }
    }
    return out;
  }

private:
  mutable std::mutex mx_;
  std::condition_variable cv_;
  events events_;
};

// The subscriber. The log is shared: the sink may still be handling the
// last events of a stopping tree when the test's fixture is gone.
inline caf::behavior event_sink(caf::event_based_actor*, std::shared_ptr<event_log> log) {
  return {[log](supervision::supervision_event& e) { log->add(std::move(e)); }};
}

} // namespace dspex::test
