// How a CAF actor is wired to the OS process it owns (a worker's Python, a
// `process` node's program), when the process is spawned *before* the actor.
//
// Why before: the supervisor should know the child's OS pid when it emits
// child_started, with no second round trip (supervision/child_spec.hpp,
// report_os_pid). A CAF 0.17 actor's init runs after spawn returned, so the
// start function spawns the process itself (synchronously, on the
// supervisor's thread; the fork still happens on the io thread), spawns the
// actor with the process in hand, binds the process's inbox to it, and
// reports the pid.
//
// - process_inbox: the process's callbacks run on the io thread and can fire
//   (output, even its exit) before the actor exists. They post messages into
//   the inbox, which holds them until bind() and then forwards them, in
//   order, to the actor. It holds the actor weakly: a dead owner is not kept
//   alive by its process's callbacks, and messages for it are dropped.
// - with_exit_status: the actor's exit reason carries how the process ended
//   (supervision::with_os_exit), so exit events show exit_code or signal.
#pragma once

#include <dspex/bridge/exit_status.hpp>
#include <dspex/supervision/events.hpp>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/error.hpp>
#include <caf/message.hpp>

#include <mutex>
#include <vector>

namespace dspex {

class process_inbox {
public:
  /// Any thread. Forwards `msg` to the bound actor, or keeps it until bind().
  void post(caf::message msg);

  /// Binds the owner (weakly) and forwards what was posted so far, in order.
  void bind(const caf::actor& owner);

private:
  std::mutex mx_;
  bool bound_ = false;
  caf::actor_addr owner_;
  std::vector<caf::message> pending_;
};

/// The generic form of an exit status, for supervision events.
supervision::os_exit os_exit_from(bridge::exit_status s);

/// `reason` with the process's exit status attached (its class is kept).
/// `cause`, when given, is appended to the status text (the exit event's
/// detail): "signal 9 (SIGKILL): out_of_memory: ...".
caf::error with_exit_status(caf::error reason, bridge::exit_status s, const std::string& cause = {});

} // namespace dspex
