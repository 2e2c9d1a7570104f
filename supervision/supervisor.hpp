// dspex::supervision — an Erlang/OTP supervisor for CAF actors.
//
// A supervisor is an actor that starts child actors, watches them (monitor +
// down_msg) and restarts them when they terminate, as its restart strategy
// and their restart types say. It knows nothing of what the children do.
// Many supervisors (and whole trees) live side by side in one actor_system:
// nothing here is global or named.
//
// -- Starting -----------------------------------------------------------------
//
// start_supervisor(sys, flags, specs, options) spawns a supervisor that
// starts the children one after another in the order of `specs`, awaiting
// each child's ready answer when its spec asks for one, and returns the
// handle only when all of them started. If one fails, the children already
// started are stopped in reverse order, the supervisor exits with reason
// shutdown (with the failure as context) and start_supervisor returns
// start_failed: "child 'w2' failed to start: <reason>". Nothing is left
// running. A nested supervisor (supervisor_child) fails its parent's start
// in the same way, so the failure climbs to the caller.
//
// -- Strategies (supervisor_flags::strat) -------------------------------------
//
//   one_for_one          only the terminated child is restarted (default).
//   one_for_all          the other children are stopped in reverse start
//                        order, then all are started again in start order.
//   rest_for_one         the children started after the terminated one are
//                        stopped in reverse order, then it and they are
//                        started again in order.
//   simple_one_for_one   exactly one spec, a template: no child at init;
//                        start_child(args) adds children of that spec, all
//                        alike, restarted one for one. On shutdown they are
//                        stopped concurrently (no order among them).
//
// Temporary siblings stopped by one_for_all / rest_for_one are dropped, not
// restarted. A child whose exit does not call for a restart (temporary;
// transient after a normal or shutdown exit) does not touch its siblings.
//
// -- Restart types (child_spec::restart) --------------------------------------
//
//                 normal exit   shutdown exit   killed / crash
//   permanent     restart       restart         restart
//   transient     keep spec     keep spec       restart
//   temporary     remove        remove          remove
//
// normal = exit_reason::normal (or no error); shutdown =
// exit_reason::user_shutdown with or without context (OTP's shutdown and
// {shutdown, Term}); killed = exit_reason::kill. A child supervisor that gives
// up exits with shutdown: as a permanent child it is restarted (and counts
// towards its parent's intensity), as a transient one it is not.
// "keep spec": the child stays listed with status undefined; restart_child
// starts it again.
//
// -- Restart intensity (intensity, period) ------------------------------------
//
// More than `intensity` restarts within any `period` and the supervisor
// gives up: it emits intensity_reached, stops all children in reverse order
// and exits with reason shutdown, which its parent sees as a child exit
// (escalation). Defaults: 1 restart in 5000 ms, as OTP. intensity 0: the first
// restart already gives up. A restart whose start fails counts too, and is
// retried through the supervisor's mailbox (so a shutdown request or an API
// call can come in between), until it succeeds or the intensity is reached;
// meanwhile the child's status is restarting. Time comes from
// supervisor_options::clk (clock.hpp), which tests replace by a manual_clock.
//
// -- Shutdown (child_spec::shutdown) ------------------------------------------
//
//   brutal_kill      exit_reason::kill at once.
//   timeout(ms)      exit_reason::user_shutdown, then exit_reason::kill if the
//                    child is still alive after ms. Default for workers: 5000.
//   infinity         exit_reason::user_shutdown, then wait. Default for
//                    supervisors.
//
// A child that ignores the request (traps exit messages) is killed when its
// timeout expires, and the tree still stops. The supervisor stops when it
// receives an exit message with a reason other than normal (from its parent,
// or from anyone holding its handle; stop_supervisor() sends one): it stops
// its children in reverse start order, each with its shutdown spec, emits
// supervisor_stopped and quits with the received reason. If it is killed
// (exit_reason::kill, or its last handle is dropped), its children are
// killed.
//
// -- Auto shutdown (supervisor_flags::autoshut) -------------------------------
//
//   never            significant children are rejected (invalid_spec).
//   any_significant  the supervisor shuts down (reason shutdown) when any
//                    significant child terminates by itself and is not
//                    restarted.
//   all_significant  ... when the last running significant child does.
//
// Only a child's own termination counts, never terminate_child.
// simple_one_for_one accepts auto_shutdown never only.
//
// -- Child spec keys (child_spec.hpp) -----------------------------------------
//
//   id           required; unique within the supervisor
//   start        required; spawns the child on the supervisor's thread
//   restart      permanent
//   shutdown     timeout(5000) for workers, infinity for supervisors
//   type         worker
//   significant  false
//   await_ready  none (no ready request)
//
// -- Messages (request/response on the supervisor handle) ---------------------
//
//   (start_child_atom, child_spec)      -> caf::actor   not simple_one_for_one
//   (start_child_atom, caf::message)    -> caf::actor   simple_one_for_one
//   (terminate_child_atom, std::string) -> void         by id
//   (terminate_child_atom, caf::actor)  -> void         by handle
//   (restart_child_atom, std::string)   -> caf::actor   a stopped child
//   (delete_child_atom, std::string)    -> void         a stopped child's spec
//   (which_children_atom)               -> std::vector<child_info>
//   (count_children_atom)               -> child_counts
//   (caf::subscribe_atom, caf::actor)   -> void         add an event subscriber
//   (caf::unsubscribe_atom, caf::actor) -> void
//   (ready_atom)                        -> caf::ok_atom once init succeeded
//
// Errors are supervision_errc values (errors.hpp). start_child returns an
// invalid actor when the start function returned one (OTP's ignore).
// Requests are served one at a time in arrival order (which_children,
// count_children and subscribe at once); one that arrives while the
// supervisor restarts or stops children waits until it is done. Below are
// blocking wrappers for code outside actors (tests, main).
//
// -- Events (events.hpp) ------------------------------------------------------
//
// child_started, child_exited, child_restarted, child_start_failed,
// intensity_reached, supervisor_stopped; sent as supervision_event messages
// to subscribers, and forwarded by nested supervisors to their parents.
// Events of a child whose start function called report_os_pid carry that
// pid (os_pid); an exit event also carries how the process ended (exit)
// when the child attached it to its exit reason (with_os_exit).
//
// -- Threads -------------------------------------------------------------------
//
// Everything a supervisor does runs in its own actor: it never blocks a CAF
// worker thread (no scoped_actor, no receive), start functions must not
// either. The blocking wrappers below must not be called from inside an
// actor; from there, send the messages (or spawn_supervisor and request
// ready_atom).
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/duration.hpp>
#include <caf/error.hpp>
#include <caf/exit_reason.hpp>
#include <caf/expected.hpp>
#include <caf/message.hpp>
#include <caf/scoped_actor.hpp>

#include <dspex/supervision/child_spec.hpp>
#include <dspex/supervision/clock.hpp>
#include <dspex/supervision/errors.hpp>
#include <dspex/supervision/events.hpp>

namespace dspex::supervision {

// -- flags and options ---------------------------------------------------------

enum class strategy { one_for_one, one_for_all, rest_for_one, simple_one_for_one };

enum class auto_shutdown { never, any_significant, all_significant };

struct supervisor_flags {
  strategy strat = strategy::one_for_one;
  /// Restarts allowed within `period`; must be >= 0.
  int intensity = 1;
  /// Must be > 0.
  std::chrono::milliseconds period{5000};
  auto_shutdown autoshut = auto_shutdown::never;

  supervisor_flags with_strategy(strategy s) const {
    auto x = *this;
    x.strat = s;
    return x;
  }

  supervisor_flags with_intensity(int n, std::chrono::milliseconds p) const {
    auto x = *this;
    x.intensity = n;
    x.period = p;
    return x;
  }

  supervisor_flags with_auto_shutdown(auto_shutdown a) const {
    auto x = *this;
    x.autoshut = a;
    return x;
  }
};

struct supervisor_options {
  /// This supervisor's path in the tree; child paths are path + "/" + id.
  /// For a supervisor started by supervisor_child the path is always the
  /// parent's child path and this field is ignored.
  std::string path = "root";
  /// Restart intensity clock; null: a monotonic_clock (nested supervisors
  /// inherit their parent's clock).
  std::shared_ptr<clock> clk;
  /// Event subscribers from the start (so they see the init's events).
  std::vector<caf::actor> subscribers;
};

// -- what which_children and count_children return -----------------------------

enum class child_status {
  /// Alive (and, with await_ready, confirmed ready).
  running,
  /// Its restart failed; a retry is queued.
  restarting,
  /// Not running: terminated by terminate_child, a transient child after a
  /// normal exit, a start that returned ignore, or not started yet.
  undefined,
};

struct child_info {
  /// The spec id; for simple_one_for_one children "<spec id>#<n>", n counting
  /// from 1 per supervisor.
  std::string id;
  /// Invalid unless running.
  caf::actor handle;
  child_type type = child_type::worker;
  child_status status = child_status::undefined;
  /// The OS process backing the child, when running and its start function
  /// reported one (report_os_pid).
  std::optional<int> os_pid;
};

struct child_counts {
  /// Child specs (simple_one_for_one: 1).
  std::size_t specs = 0;
  /// Children running.
  std::size_t active = 0;
  /// Children of type supervisor, running or not (simple_one_for_one: the
  /// dynamic children when the template is a supervisor).
  std::size_t supervisors = 0;
  /// Children of type worker, running or not.
  std::size_t workers = 0;
};

std::string to_string(strategy);
std::string to_string(auto_shutdown);
std::string to_string(child_status);

// -- message atoms (at most 10 characters) --------------------------------------

using start_child_atom = caf::atom_constant<caf::atom("start_chld")>;
using terminate_child_atom = caf::atom_constant<caf::atom("term_chld")>;
using restart_child_atom = caf::atom_constant<caf::atom("rstrt_chld")>;
using delete_child_atom = caf::atom_constant<caf::atom("del_chld")>;
using which_children_atom = caf::atom_constant<caf::atom("which_chld")>;
using count_children_atom = caf::atom_constant<caf::atom("count_chld")>;

// -- starting supervisors ---------------------------------------------------------

/// Spawns a supervisor and runs its init (starting all children in order,
/// awaiting each); returns it when the init succeeded, else the error
/// (start_failed or invalid_spec) once the supervisor and everything it had
/// started have terminated. Blocks the calling thread: not for use inside an
/// actor (use spawn_supervisor there).
caf::expected<caf::actor> start_supervisor(caf::actor_system& sys,
                                           supervisor_flags flags,
                                           std::vector<child_spec> children,
                                           supervisor_options options = {});

/// Spawns a supervisor without waiting: its init runs asynchronously. Send it
/// (ready_atom) to learn the outcome: caf::ok_atom, or the init's error (the
/// supervisor then terminates).
caf::actor spawn_supervisor(caf::actor_system& sys, supervisor_flags flags,
                            std::vector<child_spec> children,
                            supervisor_options options = {});

/// A child spec that starts a nested supervisor: type supervisor, shutdown
/// infinity, await_ready without timeout (the parent's start waits for the
/// nested init and fails with it). The nested supervisor takes its path
/// (parent path + "/" + id) and, when options.clk is null, its clock from the
/// parent, and forwards its events to the parent. Adjust restart etc. with
/// the fluent setters.
child_spec supervisor_child(std::string id, supervisor_flags flags,
                            std::vector<child_spec> children,
                            supervisor_options options = {});

/// Checks flags and specs as the supervisor's init does; none when valid.
caf::error validate(const supervisor_flags& flags,
                    const std::vector<child_spec>& children);

// -- blocking wrappers (not for use inside actors) ---------------------------------
//
// Each sends the request and waits for the answer (no deadline by default,
// as OTP's supervisor calls). A supervisor that is gone answers
// caf::sec::request_receiver_down. The first argument is the caller's
// scoped_actor or an actor_system (a scoped_actor is then made for the call).

/// Who waits in a blocking call: converts from `caf::scoped_actor&` and from
/// `caf::actor_system&`, so every wrapper exists once for both.
class blocking_caller {
public:
  blocking_caller(caf::scoped_actor& self) : self_(&self) {}
  blocking_caller(caf::actor_system& sys)
    : own_(std::make_unique<caf::scoped_actor>(sys)), self_(own_.get()) {}
  caf::scoped_actor& operator*() const { return *self_; }

private:
  std::unique_ptr<caf::scoped_actor> own_;
  caf::scoped_actor* self_;
};

caf::expected<caf::actor> start_child(blocking_caller who, const caf::actor& sup,
                                      child_spec spec, caf::duration timeout = caf::infinite);
caf::expected<caf::actor> start_child(blocking_caller who, const caf::actor& sup,
                                      caf::message args, caf::duration timeout = caf::infinite);
caf::error terminate_child(blocking_caller who, const caf::actor& sup, const std::string& id,
                           caf::duration timeout = caf::infinite);
caf::error terminate_child(blocking_caller who, const caf::actor& sup, const caf::actor& child,
                           caf::duration timeout = caf::infinite);
caf::expected<caf::actor> restart_child(blocking_caller who, const caf::actor& sup,
                                        const std::string& id,
                                        caf::duration timeout = caf::infinite);
caf::error delete_child(blocking_caller who, const caf::actor& sup, const std::string& id,
                        caf::duration timeout = caf::infinite);
caf::expected<std::vector<child_info>> which_children(blocking_caller who, const caf::actor& sup,
                                                      caf::duration timeout = caf::infinite);
caf::expected<child_counts> count_children(blocking_caller who, const caf::actor& sup,
                                           caf::duration timeout = caf::infinite);
caf::error subscribe(blocking_caller who, const caf::actor& sup, const caf::actor& subscriber,
                     caf::duration timeout = caf::infinite);
/// Sends `sup` an exit message with `reason` and waits until it terminated
/// (its children first). Returns the supervisor's exit reason.
caf::error stop_supervisor(blocking_caller who, const caf::actor& sup,
                           caf::error reason
                           = caf::make_error(caf::exit_reason::user_shutdown));

} // namespace dspex::supervision

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::supervision::child_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<dspex::supervision::child_info>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::supervision::child_counts)
