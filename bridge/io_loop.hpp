// The one asio io_context thread that every python_process of a host shares:
// all pipe reads and writes, exit watches and stop timers run here, so no
// actor thread ever blocks on a pipe and host threads do not grow with workers.
//
// Processes are also spawned on this thread. Linux delivers the parent-death
// signal when the *thread* that forked a child exits, so the forking thread
// must live as long as its children; this one does.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/executor_work_guard.hpp>

#include <functional>
#include <future>
#include <thread>

namespace dspex::bridge {

class io_loop {
public:
  io_loop();
  ~io_loop();  ///< stops the loop and joins the thread

  io_loop(const io_loop&) = delete;
  io_loop& operator=(const io_loop&) = delete;

  boost::asio::io_context& context() noexcept { return ctx_; }

  bool on_loop_thread() const noexcept { return std::this_thread::get_id() == thread_.get_id(); }

  /// Runs `fn` on the loop thread (inline when already there).
  void post(std::function<void()> fn);

  /// Runs `fn` on the loop thread and waits for its result.
  template <class F>
  auto run_sync(F&& fn) -> decltype(fn()) {
    if (on_loop_thread())
      return fn();
    std::packaged_task<decltype(fn())()> task(std::forward<F>(fn));
    auto result = task.get_future();
    post([&task] { task(); });
    return result.get();
  }

private:
  boost::asio::io_context ctx_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_;
  std::thread thread_;
};

} // namespace dspex::bridge
