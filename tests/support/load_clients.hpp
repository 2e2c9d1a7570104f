// Client threads that loop requests on a node until told to stop, counting
// every answer by class (request_tally): the load under which live
// operations (restart, scale, reload) must lose nothing.
#pragma once

#include <dspex/actors/node/node.hpp>

#include "request_tally.hpp"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

namespace dspex::test {

class load_clients {
public:
  /// `threads` clients, each sending `command` with `args` to `pool` (empty:
  /// the node's target) one at a time, from now until stop().
  load_clients(node& n, int threads, std::string command, json args = json::object(),
               std::string pool = {}) {
    for (int i = 0; i < threads; ++i)
      threads_.emplace_back([this, &n, command, args, pool] {
        while (!stop_) {
          auto r = n.execute_on(pool, command, args);
          if (r)
            tally.ok(*r);
          else
            tally.failed(r.error());
        }
      });
  }
  ~load_clients() { stop(); }

  /// Waits until `n` more answers came in (bounded by `limit` polls of 2 ms).
  bool wait_answers(int n, int limit = 10000) {
    auto target = tally.total.load() + n;
    for (int i = 0; i < limit && tally.total.load() < target; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return tally.total.load() >= target;
  }

  /// Stops and joins every client; each finishes the request it has out.
  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable())
        t.join();
  }

  /// Every answer so far was ok (say tally.dump() when not).
  bool all_ok() { return tally.get("ok") == tally.total.load(); }

  request_tally tally;

private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

} // namespace dspex::test
