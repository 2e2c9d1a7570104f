// The outcomes of many requests from test clients, counted by class: "ok",
// an errc name, or "python_error:<exception type>" (keys a test can assert
// on); the first description of each failing class is kept for messages,
// and the pids of the workers that answered (replies carrying "pid").
#pragma once

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>

#include <caf/all.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace dspex::test {

class request_tally {
public:
  /// Answers recorded so far; callers poll it, hence atomic.
  std::atomic<int> total{0};

  void ok(const json& reply) {
    std::lock_guard<std::mutex> g(mx_);
    ++by_["ok"];
    if (reply.is_object() && reply.contains("pid"))
      pids_.insert(reply["pid"].get<int>());
    ++total;
  }

  void failed(const caf::error& e) {
    auto code = code_of(e);
    std::string key = code ? to_string(*code) : describe(e);
    if (code == errc::python_error)
      if (auto pe = python_error_of(e))
        key += ":" + pe->type;
    std::lock_guard<std::mutex> g(mx_);
    if (++by_[key] == 1)
      first_[key] = describe(e);
    ++total;
  }

  int get(const std::string& key) {
    std::lock_guard<std::mutex> g(mx_);
    auto it = by_.find(key);
    return it == by_.end() ? 0 : it->second;
  }

  std::set<int> pids() {
    std::lock_guard<std::mutex> g(mx_);
    return pids_;
  }

  std::string dump() {
    std::lock_guard<std::mutex> g(mx_);
    std::string out;
    for (auto& [k, n] : by_) {
      out += k + "=" + std::to_string(n);
      if (auto it = first_.find(k); it != first_.end() && it->second != k)
        out += " (first: " + it->second + ")";
      out += " ";
    }
    return out;
  }

private:
  std::mutex mx_;
  std::map<std::string, int> by_;
  std::map<std::string, std::string> first_;
  std::set<int> pids_;
};

/// For serial_client: the same request every time.
inline std::function<command_request(int)> always(command_request req) {
  return [req = std::move(req)](int) { return req; };
}

/// A client actor: sends make(i), ..., make(n - 1) to `pool`, each once the
/// previous one is answered, and records every outcome in `out`.
inline void serial_client(caf::event_based_actor* self, caf::actor pool,
                          std::function<command_request(int)> make, int n, request_tally* out,
                          int i = 0) {
  if (i >= n)
    return;
  self->request(pool, std::chrono::seconds(60), exec_atom::value, make(i))
    .then(
      [=](json& r) {
        out->ok(r);
        serial_client(self, pool, make, n, out, i + 1);
      },
      [=](caf::error& e) {
        out->failed(e);
        serial_client(self, pool, make, n, out, i + 1);
      });
}

} // namespace dspex::test
