#include <dspex/bridge/io_loop.hpp>

#include <boost/asio/post.hpp>

#include <csignal>
#include <iostream>
#include <pthread.h>

namespace dspex::bridge {

namespace {

// Set while this thread runs the loop's handlers: a post from a handler runs
// inline, as it always did on the loop's own thread.
thread_local const io_loop* running_handlers = nullptr;

} // namespace

void block_sigpipe() {
  thread_local bool blocked = false;
  if (blocked)
    return;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  blocked = true;
}

template <class Run>
void io_loop::run_guarded(Run run) {
  auto outer = running_handlers;
  running_handlers = this;
  try {
    run();
  } catch (const std::exception& e) {
    // A throwing handler must not take every process down with the loop.
    std::cerr << "dspex: io loop handler threw: " << e.what() << '\n';
  }
  running_handlers = outer;
}

io_loop::io_loop() : guard_(boost::asio::make_work_guard(ctx_)) {
  thread_ = std::thread([this] {
    adopt_this_thread();
    // run() returns normally only once stopped (the work guard holds it
    // until then); after a throwing handler it goes on.
    while (!ctx_.stopped())
      run_guarded([this] { ctx_.run(); });
  });
  // Posts before the thread ran are queued; run_sync from here must not run
  // inline, so wait until the id is known.
  while (loop_thread_.load() == std::thread::id{})
    std::this_thread::yield();
}

io_loop::io_loop(driven_t) : guard_(boost::asio::make_work_guard(ctx_)) {}

io_loop::~io_loop() {
  guard_.reset();
  ctx_.stop();
  if (thread_.joinable())
    thread_.join();
}

void io_loop::post(std::function<void()> fn) {
  if (running_handlers == this)
    fn();
  else
    boost::asio::post(ctx_, std::move(fn));
}

void io_loop::adopt_this_thread() {
  block_sigpipe();
  loop_thread_ = std::this_thread::get_id();
}

void io_loop::drive_one() {
  run_guarded([this] { ctx_.run_one(); });
}

std::size_t io_loop::drive_ready() {
  std::size_t ran = 0;
  run_guarded([this, &ran] { ran = ctx_.poll(); });
  return ran;
}

void io_loop::drive_for(std::chrono::steady_clock::duration limit) {
  run_guarded([this, limit] { ctx_.run_one_for(limit); });
}

void io_loop::interrupt() {
  boost::asio::post(ctx_, [] {});
}

} // namespace dspex::bridge
