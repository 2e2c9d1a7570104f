// The node's watcher actor (detail/root_watch.hpp).
#include <dspex/actors/node/detail/root_watch.hpp>

#include <dspex/supervision/events.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <map>

namespace dspex {

namespace sup = supervision;

namespace {

// The node's own subscriber: counts restarts per child path for `status`,
// remembers where restart intensities were reached, and monitors the root,
// so that a root that stops by itself is reported with the path that
// escalated.
struct watcher_state {
  std::map<std::string, int> restarts;
  /// Supervisor path -> restarts of its children, and how often it reached
  /// its restart intensity (metrics; it outlives the children it counts).
  std::map<std::string, std::pair<std::uint64_t, std::uint64_t>> supervisors;
  /// Supervisor path -> the child that tipped its last intensity_reached,
  /// while that supervisor has not been started again since.
  std::map<std::string, std::string> gave_up;
  std::shared_ptr<root_watch> watch;
  caf::actor_addr root;
  static inline const char* name = "dspex.node_watch";
};

using watcher_actor = caf::stateful_actor<watcher_state>;

// Follows the chain of escalations down from the root: the root gave up
// because child X exited; X is a supervisor that gave up because of its
// child Y; and so on, to the deepest one.
root_failure explain(const watcher_state& st, const caf::error& reason) {
  root_failure f;
  f.reason = sup::render_reason(reason);
  std::string at = "root";
  for (auto i = st.gave_up.find(at); i != st.gave_up.end(); i = st.gave_up.find(at)) {
    f.path = at;
    f.child = i->second;
    at += "/" + f.child;
  }
  if (f.path.empty())
    f.message = "the root supervisor stopped by itself (reason " + f.reason + ")";
  else if (f.path == "root")
    f.message = "root reached its restart intensity (child " + f.child + ")";
  else
    f.message = f.path + " reached its restart intensity (child " + f.child
                + "), escalated to root";
  return f;
}

// A child event's path is its supervisor's path + "/" + child id.
std::string supervisor_of(const sup::supervision_event& ev) {
  return ev.path.substr(0, ev.path.size() - std::min(ev.path.size(), ev.child_id.size() + 1));
}

caf::behavior watcher(watcher_actor* self, std::shared_ptr<root_watch> watch) {
  self->state.watch = std::move(watch);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (msg.source != st.root)
      return;
    auto f = explain(st, msg.reason);
    std::vector<std::function<void(const root_failure&)>> cbs;
    {
      std::lock_guard<std::mutex> g(st.watch->mx);
      if (st.watch->stopping)
        return;  // stop() did it
      st.watch->failure = f;
      cbs = std::move(st.watch->callbacks);
      st.watch->callbacks.clear();
    }
    st.watch->cv.notify_all();
    for (auto& cb : cbs)
      try {
        cb(f);
      } catch (...) {
        // An embedder's callback must not take the watcher down with it.
      }
  });
  return {
    [self](sup::supervision_event& ev) {
      auto& st = self->state;
      switch (ev.kind) {
        case sup::event_kind::child_restarted:
          ++st.restarts[ev.path];
          ++st.supervisors[supervisor_of(ev)].first;
          [[fallthrough]];
        case sup::event_kind::child_started: {
          // A supervisor started again has recovered from what it gave up on.
          auto prefix = ev.path + "/";
          for (auto i = st.gave_up.begin(); i != st.gave_up.end();)
            if (i->first == ev.path || i->first.rfind(prefix, 0) == 0)
              i = st.gave_up.erase(i);
            else
              ++i;
          break;
        }
        case sup::event_kind::intensity_reached: {
          st.gave_up[supervisor_of(ev)] = ev.child_id;
          ++st.supervisors[supervisor_of(ev)].second;
          break;
        }
        default:
          break;
      }
    },
    [self](restarts_atom) -> json {
      json sups = json::object();
      for (auto& [path, n] : self->state.supervisors)
        sups[path] = {{"restarts", n.first}, {"intensity_stops", n.second}};
      return {{"children", self->state.restarts}, {"supervisors", std::move(sups)}};
    },
    [self](watch_atom, caf::actor& root) {
      self->state.root = root.address();
      self->monitor(root);
    },
  };
}

} // namespace

caf::actor spawn_root_watcher(caf::actor_system& sys, std::shared_ptr<root_watch> watch) {
  return sys.spawn(watcher, std::move(watch));
}

} // namespace dspex
