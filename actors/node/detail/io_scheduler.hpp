// A CAF scheduler whose one thread also drives the host's io loop.
//
// Why: with CAF's own scheduler a reply read on the io thread is handed to
// the caller's actor on a scheduler thread, so every round trip wakes two
// host threads where the bare loop wakes one, and on a VM a wake-up of a
// sleeping thread costs tens of microseconds (docs/architecture.md, The
// request path). Here the thread runs actors while it has any and otherwise
// sleeps in the io loop's epoll: a reply is read, answered and the caller's
// next request written on the same thread, without a wake-up in between.
//
// Before it sleeps in epoll the thread polls the loop for a short window
// (DSPEX_IO_SPIN_US, default 30 us; 0: sleep at once): a reply due within it
// is read without a sleep and a wake-up, which on a VM cost tens of
// microseconds, more than a Python worker's turn on a small request. The
// window opens only when the thread runs out of work, so an idle host
// sleeps after one window, and only when the machine has a CPU to spare
// (spare_cpu.hpp): with more runnable tasks than CPUs the spin would hold
// the CPU a worker waits for.
//
// Work sharing with exactly one thread: dspex's actors only route, and the
// loop must have one thread (it forks every child, see io_loop.hpp). The
// queue is FIFO; io handlers that are ready run every few jobs, so a busy
// mailbox never starves the pipes. Detached and blocking actors run on
// threads of their own, as with any CAF scheduler.
#pragma once

#include <dspex/bridge/io_loop.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <chrono>
#include <memory>

namespace dspex {

/// The spin window for the value of DSPEX_IO_SPIN_US (nullptr: unset):
/// microseconds, at most 1000; unset, empty, negative or not a number: 30.
std::chrono::microseconds io_spin_window(const char* env);

/// Installs the scheduler into `cfg` (recommended_settings does).
void use_io_scheduler(caf::actor_system_config& cfg);

/// The io loop driven by `sys`'s scheduler; nullptr when `sys` runs
/// another scheduler (the node then starts a threaded loop of its own).
std::shared_ptr<bridge::io_loop> driven_io_loop(caf::actor_system& sys);

/// The loop a node (or a test's workers) on `sys` runs on: the driven one,
/// else a new threaded loop.
std::shared_ptr<bridge::io_loop> io_loop_for(caf::actor_system& sys);

/// Something else the scheduler's thread runs beside the loop: CAF's network
/// multiplexer (actors/remote/detail/driven_middleman.hpp). poll() runs what
/// is ready without blocking and says whether it ran anything; whatever can
/// make it ready later must also wake the loop (a descriptor in it).
class loop_guest {
public:
  virtual ~loop_guest() = default;
  virtual bool poll() = 0;
};

/// The thread polls `guest` before it sleeps, while it spins and every few
/// jobs; nullptr removes it. Call on the loop's thread (io_loop::run_sync).
/// False when `sys` runs another scheduler.
bool set_loop_guest(caf::actor_system& sys, loop_guest* guest);

} // namespace dspex
