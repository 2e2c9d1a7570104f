#include <dspex/bridge/io_loop.hpp>

#include <boost/asio/post.hpp>

#include <csignal>
#include <iostream>
#include <pthread.h>

namespace dspex::bridge {

io_loop::io_loop() : guard_(boost::asio::make_work_guard(ctx_)) {
  thread_ = std::thread([this] {
    // A write to a pipe whose reader died must fail with EPIPE, not kill the
    // host. SIGPIPE is thread-directed, so blocking it here suffices and
    // leaves the embedding application's signal setup alone.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    for (;;) {
      try {
        ctx_.run();
        return;
      } catch (const std::exception& e) {
        // A throwing handler must not take every process down with the loop.
        std::cerr << "dspex: io loop handler threw: " << e.what() << '\n';
      }
    }
  });
}

io_loop::~io_loop() {
  guard_.reset();
  ctx_.stop();
  if (thread_.joinable())
    thread_.join();
}

void io_loop::post(std::function<void()> fn) {
  if (on_loop_thread())
    fn();
  else
    boost::asio::post(ctx_, std::move(fn));
}

} // namespace dspex::bridge
