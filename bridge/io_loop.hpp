// The one asio io_context that every python_process of a host shares: all
// pipe reads and writes, exit watches and stop timers run here, so no actor
// ever blocks on a pipe and host threads do not grow with workers.
//
// Two ways to run it. Threaded (the default): a thread of its own. Driven:
// no thread of its own; CAF's scheduler thread runs it whenever it has no
// actor to run (actors/node/detail/io_scheduler.hpp, what recommended_settings installs).
// Driven, a reply read from a pipe is answered on the thread that runs the
// caller's actor, so a round trip wakes one host thread, as the bare loop.
//
// Processes are spawned on the loop's thread. Linux delivers the
// parent-death signal when the *thread* that forked a child exits, so the
// forking thread must live as long as its children; both threads do.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

namespace dspex::bridge {

/// Blocks SIGPIPE on the calling thread (once per thread): a write to a pipe
/// whose reader died must fail with EPIPE, not kill the host. SIGPIPE is
/// thread-directed, so blocking it on the threads that write (the loop's,
/// and actor threads that write directly) leaves the embedding
/// application's signal setup alone.
void block_sigpipe();

class io_loop {
public:
  struct driven_t {};
  static constexpr driven_t driven{};

  io_loop();            ///< threaded
  explicit io_loop(driven_t);
  ~io_loop();           ///< threaded: stops the loop and joins the thread

  io_loop(const io_loop&) = delete;
  io_loop& operator=(const io_loop&) = delete;

  boost::asio::io_context& context() noexcept { return ctx_; }

  bool on_loop_thread() const noexcept { return std::this_thread::get_id() == loop_thread_.load(); }

  /// Runs `fn` on the loop thread: at once when called from one of the
  /// loop's handlers, else queued (a driven loop's thread, running an actor,
  /// runs it after that actor).
  void post(std::function<void()> fn);

  /// Runs `fn` on the loop thread and waits for its result (inline when on
  /// the loop thread).
  template <class F>
  auto run_sync(F&& fn) -> decltype(fn()) {
    if (on_loop_thread())
      return fn();
    std::packaged_task<decltype(fn())()> task(std::forward<F>(fn));
    auto result = task.get_future();
    post([&task] { task(); });
    return result.get();
  }

  /// cv.wait_for(g, timeout, pred) for a condition the loop's handlers make
  /// true. On a driven loop's own thread (an actor waiting for the fork
  /// server, say) nobody else would run them: it runs them itself.
  template <class Pred>
  bool wait_for(std::unique_lock<std::mutex>& g, std::condition_variable& cv,
                std::chrono::milliseconds timeout, Pred pred) {
    if (!is_driven() || !on_loop_thread())
      return cv.wait_for(g, timeout, pred);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline)
        return false;
      g.unlock();
      drive_for(deadline - now);
      g.lock();
    }
    return true;
  }

  // -- the driving thread's side (driven loops only) -------------------------

  bool is_driven() const noexcept { return !thread_.joinable(); }

  /// Claims the calling thread as the loop's (first call of the driver).
  void adopt_this_thread();
  /// Blocks until one handler ran, and runs it.
  void drive_one();
  /// Runs the handlers that are ready, without blocking; how many ran.
  std::size_t drive_ready();
  /// As drive_one, giving up after `limit`.
  void drive_for(std::chrono::steady_clock::duration limit);
  /// Makes a blocked drive_one return (from any thread).
  void interrupt();

private:
  template <class Run>
  void run_guarded(Run run);

  boost::asio::io_context ctx_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::atomic<std::thread::id> loop_thread_{};
  std::thread thread_;
};

} // namespace dspex::bridge
