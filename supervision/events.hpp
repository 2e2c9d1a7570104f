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
#include <optional>
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

/// How the OS process behind a child ended: an exit code or a signal. The
/// supervision layer only carries it: the child attaches it to its exit
/// reason (with_os_exit) and the supervisor copies it into the exit event.
struct os_exit {
  /// Set when the process called exit (or returned from main).
  std::optional<int> exit_code;
  /// Set when a signal ended the process.
  std::optional<int> signal;
  /// The signal's name ("SIGKILL"), when signal is set.
  std::string signal_name;
  /// Plain text for people: "exit code 3", "signal 9 (SIGKILL)".
  std::string text;
};

/// `reason` with `x` appended to its context. Keeps the reason's class
/// (classify) and its rendering (render_reason): a stopped process child
/// still exits with shutdown, and a transient one is still not restarted.
caf::error with_os_exit(caf::error reason, os_exit x);

/// The os_exit attached by with_os_exit, if any.
std::optional<os_exit> os_exit_of(const caf::error& reason);

struct supervision_event {
  event_kind kind = event_kind::child_started;
  /// The supervisor's path for supervisor_stopped; the child's path
  /// (supervisor path + "/" + child id) for child events and for
  /// intensity_reached (the child that tipped it).
  std::string path;
  /// The child's id; for intensity_reached the child that tipped it; empty
  /// for supervisor_stopped.
  std::string child_id;
  /// normal for started / restarted; the class of `reason` otherwise
  /// (crash for child_start_failed).
  exit_class reason_class = exit_class::normal;
  /// Rendered reason, plain text: "normal", "shutdown", "killed", or the
  /// detail of the error (render_reason()).
  std::string reason;
  /// The exit reason itself (or the start failure), for subscribers that
  /// know its category; none for started / restarted.
  caf::error exit_reason;
  /// The child concerned (the new one for started / restarted); invalid for
  /// supervisor events.
  caf::actor_addr child;
  /// The OS process backing the child, when its start function reported one
  /// (report_os_pid, child_spec.hpp): on every event of that incarnation,
  /// its start, its exit and a failed start alike.
  std::optional<int> os_pid;
  /// child_exited (and child_start_failed): how that process ended, when
  /// the child's exit reason carries it (with_os_exit).
  std::optional<os_exit> exit;
  std::chrono::system_clock::time_point ts;
};

/// Maps a CAF exit reason to OTP's classes.
exit_class classify(const caf::error& reason);

/// Renders an exit reason as plain text: "normal", "shutdown", "killed" when
/// the error is exactly that; "shutdown: <term>" for OTP's {shutdown, Term};
/// the os_exit text for a shutdown or kill that carries one; for an error
/// whose context starts with a string (dspex's errors, ours), that string
/// (ours: describe()); otherwise CAF's rendering.
std::string render_reason(const caf::error& reason);

std::string to_string(event_kind);
std::string to_string(exit_class);

/// One line: "child_exited root/w1 crash system_error(runtime_error, ...)".
std::string to_string(const supervision_event&);

} // namespace dspex::supervision

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::supervision::supervision_event)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::supervision::os_exit)
