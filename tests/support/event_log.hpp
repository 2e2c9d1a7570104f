// Every supervision event of a tree, as a subscriber of its root sees it.
#pragma once

#include <dspex/supervision/events.hpp>

#include <caf/all.hpp>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dspex::test {

struct event_log {
  std::mutex mx;
  std::vector<supervision::supervision_event> events;

  void add(supervision::supervision_event e) {
    std::lock_guard<std::mutex> g(mx);
    events.push_back(std::move(e));
  }
  int count(supervision::event_kind k) {
    std::lock_guard<std::mutex> g(mx);
    int n = 0;
    for (auto& e : events)
      n += e.kind == k;
    return n;
  }
  int exits(supervision::exit_class c) {
    std::lock_guard<std::mutex> g(mx);
    int n = 0;
    for (auto& e : events)
      n += e.kind == supervision::event_kind::child_exited && e.reason_class == c;
    return n;
  }
  std::string dump() {
    std::lock_guard<std::mutex> g(mx);
    std::string out;
    for (auto& e : events)
      if (e.kind != supervision::event_kind::child_started)
        out += to_string(e) + "\n";
    return out;
  }
};

// The log is shared: the sink may still be handling the last events of a
// stopping tree when the test's fixture is gone.
inline caf::behavior event_sink(caf::event_based_actor*, std::shared_ptr<event_log> log) {
  return {[log](supervision::supervision_event& e) { log->add(std::move(e)); }};
}

} // namespace dspex::test
