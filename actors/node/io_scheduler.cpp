#include <dspex/actors/node/detail/io_scheduler.hpp>

#include <dspex/actors/node/detail/spare_cpu.hpp>

#include <caf/policy/unprofiled.hpp>
#include <caf/policy/work_sharing.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/coordinator.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>

namespace dspex {

namespace {

class io_sharing : public caf::policy::unprofiled {
public:
  // Ready io handlers run at least once every this many jobs.
  static constexpr int poll_every = 16;

  struct coordinator_data {
    explicit coordinator_data(caf::scheduler::abstract_coordinator*) {}

    std::shared_ptr<bridge::io_loop> loop = std::make_shared<bridge::io_loop>(bridge::io_loop::driven);
    std::mutex lock;
    std::deque<caf::resumable*> queue;
    bool in_io = false;       // the thread sleeps (or may) in the loop
    bool interrupted = false; // an interrupt is on its way
    int since_poll = 0;
    loop_guest* guest = nullptr;  // read and written on the loop thread only
    spare_cpu spare;              // asked on the loop thread only
  };

  struct worker_data {
    explicit worker_data(caf::scheduler::abstract_coordinator*) {}
  };

  template <class Coordinator>
  void enqueue(Coordinator* self, caf::resumable* job) {
    auto& d = self->data();
    bool wake = false;
    {
      std::lock_guard<std::mutex> g(d.lock);
      d.queue.push_back(job);
      // From the loop's own thread (an io handler answering a reply) the
      // job is seen as soon as the handler returns: no interrupt.
      if (d.in_io && !d.interrupted && !d.loop->on_loop_thread()) {
        d.interrupted = true;
        wake = true;
      }
    }
    if (wake)
      d.loop->interrupt();
  }

  template <class Coordinator>
  void central_enqueue(Coordinator* self, caf::resumable* job) {
    enqueue(self, job);
  }

  template <class Worker>
  void external_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  void internal_enqueue(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  void resume_job_later(Worker* self, caf::resumable* job) {
    enqueue(self->parent(), job);
  }

  template <class Worker>
  caf::resumable* dequeue(Worker* self) {
    auto& d = self->parent()->data();
    if (!d.loop->on_loop_thread())
      d.loop->adopt_this_thread();
    std::unique_lock<std::mutex> g(d.lock);
    for (;;) {
      if (!d.queue.empty()) {
        if (++d.since_poll >= poll_every) {
          d.since_poll = 0;
          g.unlock();
          d.loop->drive_ready();
          poll_guest(d);
          g.lock();
        }
        auto job = d.queue.front();
        d.queue.pop_front();
        return job;
      }
      d.since_poll = 0;
      // The guest's own readiness wakes the loop only on a change (an edge):
      // what it has ready now is run before the thread may sleep.
      if (d.guest) {
        g.unlock();
        bool ran = poll_guest(d);
        g.lock();
        // (A job queued while the lock was down saw in_io false and sent
        // no interrupt: it is seen here or never.)
        if (ran || !d.queue.empty())
          continue;
      }
      if (spin_window().count() > 0 && spin(d, g))
        continue;
      d.in_io = true;
      d.interrupted = false;
      g.unlock();
      d.loop->drive_one();
      g.lock();
      d.in_io = false;
    }
  }

  template <class Worker, class UnaryFunction>
  void foreach_resumable(Worker*, UnaryFunction) {}

  static std::chrono::microseconds spin_window() {
    static const auto window = io_spin_window(std::getenv("DSPEX_IO_SPIN_US"));
    return window;
  }

  // Before sleeping in epoll: polls the loop and the queue for up to the
  // spin window; true when work came. A reply due within it is then read
  // without the thread going to sleep and being woken, which on a VM costs
  // more than the Python worker's whole turn (see the header). Only with a
  // CPU to spare: else the spin holds the CPU the reply waits for
  // (detail/spare_cpu.hpp).
  template <class Data>
  static bool spin(Data& d, std::unique_lock<std::mutex>& g) {
    g.unlock();
    if (!d.spare.now()) {
      g.lock();
      return !d.queue.empty();  // queued meanwhile: no interrupt came for it
    }
    const auto until = std::chrono::steady_clock::now() + spin_window();
    for (;;) {
      auto ran = d.loop->drive_ready();
      bool guest_ran = poll_guest(d);
      g.lock();
      if (ran > 0 || guest_ran || !d.queue.empty())
        return true;
      if (std::chrono::steady_clock::now() >= until)
        return false;
      g.unlock();
    }
  }

  template <class Data>
  static bool poll_guest(Data& d) {
    return d.guest && d.guest->poll();
  }

  template <class Coordinator, class UnaryFunction>
  void foreach_central_resumable(Coordinator* self, UnaryFunction f) {
    auto& d = self->data();
    std::unique_lock<std::mutex> g(d.lock);
    while (!d.queue.empty()) {
      auto job = d.queue.front();
      d.queue.pop_front();
      f(job);
    }
  }
};

class io_coordinator : public caf::scheduler::coordinator<io_sharing> {
public:
  using super = caf::scheduler::coordinator<io_sharing>;
  using super::super;

  void init(caf::actor_system_config& cfg) override {
    super::init(cfg);
    num_workers_ = 1;  // the loop has one thread (see the header)
  }
};

} // namespace

std::chrono::microseconds io_spin_window(const char* env) {
  constexpr unsigned long fallback = 30, most = 1000;
  if (!env)
    return std::chrono::microseconds(fallback);
  // from_chars takes no blank, sign or suffix: "-1", " 10" and "10us" fail.
  const char* last = env + std::strlen(env);
  unsigned long v = 0;
  auto [end, ec] = std::from_chars(env, last, v);
  if (ec != std::errc{} || end != last)
    return std::chrono::microseconds(fallback);
  return std::chrono::microseconds(std::min(v, most));
}

void use_io_scheduler(caf::actor_system_config& cfg) {
  // Installed twice (recommended_settings called twice), the second
  // coordinator replaces the first before either started: harmless.
  cfg.module_factories.push_back([](caf::actor_system& sys) -> caf::actor_system::module* {
    // More threads asked for (by the embedder, after recommended_settings):
    // CAF's work sharing with that many, and the node's loop its own thread.
    if (caf::get_or(sys.config(), "scheduler.max-threads", size_t{1}) > 1)
      return new caf::scheduler::coordinator<caf::policy::work_sharing>(sys);
    return new io_coordinator(sys);
  });
}

std::shared_ptr<bridge::io_loop> driven_io_loop(caf::actor_system& sys) {
  auto* c = dynamic_cast<io_coordinator*>(&sys.scheduler());
  return c ? c->data().loop : nullptr;
}

bool set_loop_guest(caf::actor_system& sys, loop_guest* guest) {
  auto* c = dynamic_cast<io_coordinator*>(&sys.scheduler());
  if (!c)
    return false;
  c->data().guest = guest;
  return true;
}

std::shared_ptr<bridge::io_loop> io_loop_for(caf::actor_system& sys) {
  auto loop = driven_io_loop(sys);
  return loop ? loop : std::make_shared<bridge::io_loop>();
}

} // namespace dspex
