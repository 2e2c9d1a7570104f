// Bounded waiting for tests: "eventually" with a generous deadline, never a
// timed assertion. The deadline only keeps a broken build from hanging CI.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <csignal>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace dspex::test {

inline constexpr std::chrono::seconds eventually{20};

/// Polls `pred` until it holds or `limit` passes; returns its last value.
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds limit = eventually) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

/// A value set once from another thread (a callback) and awaited by the test.
template <class T>
class promise_box {
public:
  void set(T v) {
    std::lock_guard<std::mutex> g(mx_);
    if (!has_) {
      value_ = std::move(v);
      has_ = true;
      ++count_;
    } else {
      ++count_;
    }
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit = eventually) {
    std::unique_lock<std::mutex> g(mx_);
    return cv_.wait_for(g, limit, [&] { return has_; });
  }
  T get() {
    std::lock_guard<std::mutex> g(mx_);
    return value_;
  }
  int count() {
    std::lock_guard<std::mutex> g(mx_);
    return count_;
  }

private:
  std::mutex mx_;
  std::condition_variable cv_;
  T value_{};
  bool has_ = false;
  int count_ = 0;
};

/// True when `pid` no longer runs: gone, or a zombie waiting for a reaper
/// that is not us (orphans are reparented to init).
inline bool process_gone(int pid) {
  if (::kill(pid, 0) != 0)
    return true;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line))
    return true;
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

inline bool all_gone(const std::vector<int>& pids) {
  for (auto p : pids)
    if (!process_gone(p))
      return false;
  return true;
}

} // namespace dspex::test
