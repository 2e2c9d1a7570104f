// What a supervisor needs to know about one child (OTP's child_spec()).
//
// The full manual of keys and defaults is at the top of supervisor.hpp; in
// short:
//
//   key          default                       meaning
//   id           (required, unique)            names the child in the API
//                                              and in event paths
//   start        (required)                    spawns the child, returns it
//   restart      permanent                     permanent | transient |
//                                              temporary
//   shutdown     timeout(5000) for a worker,   brutal_kill | timeout(ms) |
//                infinity for a supervisor     infinity
//   type         worker                        worker | supervisor
//   significant  false                         drives auto_shutdown
//   await_ready  none                          ask `ready` before counting
//                                              the child as started
//
// A start function whose child is backed by an OS process reports the pid
// with report_os_pid(); events then carry it (see below).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>
#include <caf/message.hpp>

namespace dspex::supervision {

// -- restart, shutdown and type ----------------------------------------------

/// When a terminated child is restarted.
enum class restart_type {
  /// Always restarted.
  permanent,
  /// Restarted only after an abnormal exit: not after normal, shutdown
  /// (exit_reason::user_shutdown, with or without context) or killed by the
  /// supervisor itself.
  transient,
  /// Never restarted; removed from the supervisor once it exits. Also
  /// dropped (not restarted) when one_for_all / rest_for_one stops it as a
  /// sibling.
  temporary,
};

enum class child_type { worker, supervisor };

/// How the supervisor stops a child (OTP's shutdown key).
class shutdown_spec {
public:
  enum class kind {
    /// Not set: resolves to timeout(5000) for a worker, infinity for a
    /// supervisor (OTP's defaults).
    by_type,
    /// Killed at once with exit_reason::kill (cannot be trapped).
    brutal_kill,
    /// Asked with exit_reason::user_shutdown; killed if still alive after
    /// the timeout.
    timeout,
    /// Asked with exit_reason::user_shutdown; waited for without limit. Meant
    /// for supervisors, whose own shutdown is bounded by their children's.
    infinity,
  };

  /// The OTP default for the child's type (see kind::by_type).
  shutdown_spec() = default;

  static shutdown_spec brutal_kill();
  static shutdown_spec timeout(std::chrono::milliseconds ms);
  static shutdown_spec infinity();

  kind how() const noexcept {
    return kind_;
  }

  /// The timeout; meaningful for kind::timeout only.
  std::chrono::milliseconds time() const noexcept {
    return time_;
  }

  /// Replaces by_type with the default for `type`.
  shutdown_spec resolve(child_type type) const;

  friend bool operator==(const shutdown_spec& x, const shutdown_spec& y) {
    return x.kind_ == y.kind_ && x.time_ == y.time_;
  }

  friend bool operator!=(const shutdown_spec& x, const shutdown_spec& y) {
    return !(x == y);
  }

private:
  shutdown_spec(kind k, std::chrono::milliseconds t) : kind_(k), time_(t) {
    // nop
  }

  kind kind_ = kind::by_type;
  std::chrono::milliseconds time_{0};
};

/// The default shutdown timeout of a worker (OTP: 5000 ms).
constexpr std::chrono::milliseconds default_worker_shutdown{5000};

// -- start functions -------------------------------------------------------------

/// Spawns the child and returns its handle. Called on the supervisor's own
/// thread with the supervisor as `self`, so the child can be spawned with
/// `self->spawn(...)`. Must not block. Must not link the child to the
/// supervisor (the supervisor monitors it).
///
/// Returns:
/// - a valid actor: the child (started, or awaiting ready: see await_ready);
/// - an error: the start failed;
/// - an invalid (default-constructed) actor: OTP's `ignore`; the child is
///   not started, its spec is kept with status undefined (temporary: removed).
///
/// An exception thrown by a start function is caught and is a failed start.
using start_fn = std::function<caf::expected<caf::actor>(caf::local_actor*)>;

/// Tells the supervisor which OS process backs the child being started.
/// Call it from inside a start function, with the `self` the function was
/// given, once the process exists; the supervisor then puts the pid on
/// every event of this incarnation of the child (its start, its exit, a
/// failed start) and in which_children. Outside a supervisor's start
/// function it does nothing, so a spawn helper may call it unconditionally.
///
/// Why a call and not a return value: every start function keeps the
/// start_fn signature (tests, wrappers such as a registry decorator pass
/// ctx through unchanged), and a child without an OS process needs nothing.
/// Why from the start function: a CAF 0.17 actor's init runs after spawn
/// returned, so a child that spawned its process in its own init could only
/// tell the pid later, by message, and the started event would have to wait
/// for it (or go without). dspex's process-backed children (workers and
/// `process` nodes) therefore spawn the OS process in the start function,
/// synchronously on the supervisor's thread, hand it to the actor they
/// spawn, and report the pid here (actors/process/detail/process_link.hpp).
void report_os_pid(caf::local_actor* self, int pid);

/// simple_one_for_one: like start_fn, with the arguments given to
/// start_child(args) (OTP appends them to the MFA's arguments).
using start_args_fn = std::function<caf::expected<caf::actor>(
  caf::local_actor*, const caf::message& args)>;

/// The request a supervisor sends a child whose spec sets await_ready; see
/// child_spec::await_ready.
using ready_atom = caf::atom_constant<caf::atom("ready")>;

/// Passed as await_ready: wait for the ready answer without a deadline.
constexpr std::chrono::milliseconds no_ready_timeout
  = std::chrono::milliseconds::max();

// -- the spec ------------------------------------------------------------------

struct child_spec {
  /// Unique among the supervisor's children; used in the API (terminate_child,
  /// restart_child, delete_child, which_children) and in event paths.
  std::string id{};

  /// Spawns the child. Required (simple_one_for_one: this or start_with_args).
  start_fn start{};

  restart_type restart = restart_type::permanent;

  shutdown_spec shutdown{};

  child_type type = child_type::worker;

  /// Whether the child's own termination (without restart) may shut the
  /// supervisor down; see supervisor_flags::autoshut. Only for transient or
  /// temporary children, and only with auto_shutdown other than never.
  bool significant = false;

  /// When set, after spawning the supervisor sends
  /// `request(child, await_ready, ready_atom)` and counts the child as
  /// started only when it answers with an empty message (void / caf::unit)
  /// or caf::ok_atom. An error answer, the timeout, or the child exiting
  /// first is a failed start with that reason (the child is then killed).
  /// This is how an actor with an asynchronous init (a Python worker doing
  /// its init ping) fails its start, as OTP's start_link does.
  /// no_ready_timeout waits without a deadline (supervisor_child uses it).
  std::optional<std::chrono::milliseconds> await_ready{};

  /// simple_one_for_one only: preferred over `start`, called with the
  /// arguments of start_child(args).
  start_args_fn start_with_args{};

  // -- fluent setters (each returns a modified copy) --------------------------

  child_spec with_restart(restart_type r) const {
    auto x = *this;
    x.restart = r;
    return x;
  }

  child_spec with_shutdown(shutdown_spec s) const {
    auto x = *this;
    x.shutdown = s;
    return x;
  }

  child_spec with_type(child_type t) const {
    auto x = *this;
    x.type = t;
    return x;
  }

  child_spec with_significant(bool b = true) const {
    auto x = *this;
    x.significant = b;
    return x;
  }

  child_spec with_ready(std::chrono::milliseconds timeout) const {
    auto x = *this;
    x.await_ready = timeout;
    return x;
  }
};

/// Checks one spec on its own (id, start, significant vs restart); returns
/// none when valid, else invalid_spec with the reason.
caf::error validate(const child_spec& spec);

std::string to_string(restart_type);
std::string to_string(child_type);
std::string to_string(const shutdown_spec&);

} // namespace dspex::supervision

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::supervision::child_spec)
