// Supervision events: what a supervisor tells its subscribers.
//
// A subscriber is any actor with a handler for `supervision_event`; it is
// added with supervisor_options::subscribers or the subscribe message (see
// supervisor.hpp). A nested supervisor started with supervisor_child forwards
// its events (and those of its own nested supervisors) to its parent, so a
// subscriber of the root sees the whole tree; `path` tells where an event
// happened ("root/pool_sup/w2").
//
// Per supervisor, events arrive in the order things happened. Across levels
// of a tree, an event of a nested supervisor reaches the root's subscribers
// one mailbox hop later per level.
#pragma once

#include <chrono>
#include <string>

#include <caf/actor_addr.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/error.hpp>

namespace dspex::supervision {

enum class event_kind {
  /// A child was started by the supervisor's init or by start_child /
  /// restart_child (after answering ready, when await_ready is set).
  child_started,
  /// A child terminated: on its own, or stopped by the supervisor (then the
  /// reason is normally shutdown or killed).
  child_exited,
  /// A child was started again by the restart strategy: the child that
  /// exited, and under one_for_all / rest_for_one its stopped siblings.
  child_restarted,
  /// A start or restart failed (reason: the error). A failed restart is
  /// retried and counts towards the intensity.
  child_start_failed,
  /// More than `intensity` restarts within `period`: the supervisor stops
  /// all children and exits with reason shutdown. child_id names the child
  /// whose exit tipped it over.
  intensity_reached,
  /// The supervisor itself terminates (the last event it sends). reason is
  /// its exit reason.
  supervisor_stopped,
};

/// OTP's view of an exit reason.
enum class exit_class {
  /// exit_reason::normal (or no error).
  normal,
  /// exit_reason::user_shutdown, with or without context (OTP: shutdown and
  /// {shutdown, Term}).
  shutdown,
  /// exit_reason::kill (OTP: killed).
  killed,
  /// Anything else: an error, an unhandled exception, ...
  crash,
};

struct supervision_event {
  event_kind kind = event_kind::child_started;
  /// The supervisor's path for supervisor events; the child's path
  /// (supervisor path + "/" + child id) for child events.
  std::string path;
  /// The child's id; for intensity_reached the child that tipped it; empty
  /// for supervisor_stopped.
  std::string child_id;
  /// normal for started / restarted; the class of `reason` otherwise
  /// (crash for child_start_failed).
  exit_class reason_class = exit_class::normal;
  /// Rendered reason: "normal", "shutdown", "killed" or the detail of the
  /// error (describe()).
  std::string reason;
  /// The child concerned (the new one for started / restarted); invalid for
  /// supervisor events.
  caf::actor_addr child;
  std::chrono::system_clock::time_point ts;
};

/// Maps a CAF exit reason to OTP's classes.
exit_class classify(const caf::error& reason);

/// Renders an exit reason: "normal", "shutdown", "killed" when the error is
/// exactly that; otherwise describe(reason) (which keeps any context).
std::string render_reason(const caf::error& reason);

std::string to_string(event_kind);
std::string to_string(exit_class);

/// One line: "child_exited root/w1 crash system_error(runtime_error, ...)".
std::string to_string(const supervision_event&);

} // namespace dspex::supervision

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::supervision::supervision_event)
