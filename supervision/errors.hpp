// Errors of the supervision layer, as CAF errors of category `dspex_sup`.
//
// Every error carries a human-readable detail string in its context (which
// child, which reason). describe() renders any caf::error, ours included,
// without needing the actor system.
#pragma once

#include <cstdint>
#include <string>

#include <caf/atom.hpp>
#include <caf/error.hpp>

namespace dspex::supervision {

/// The CAF error category of supervision_errc.
constexpr caf::atom_value supervision_category = caf::atom("dspex_sup");

enum class supervision_errc : std::uint8_t {
  /// A child spec or the supervisor flags are malformed: empty or duplicate
  /// id, no start function, `significant` on a permanent child or with
  /// auto_shutdown never, more than one spec for simple_one_for_one, ...
  invalid_spec = 1,
  /// A child failed to start: its start function returned an error or threw,
  /// or it answered the ready request with an error, or did not answer in
  /// time, or exited before answering. For the supervisor's own start
  /// (start_supervisor) the detail names the child and its reason.
  start_failed,
  /// start_child: a child with this id exists and is not running.
  already_present,
  /// start_child: a child with this id exists and is running.
  already_started,
  /// No child with this id (or handle).
  not_found,
  /// restart_child / delete_child on a running child.
  running,
  /// restart_child / delete_child on a child waiting for a restart retry.
  restarting,
  /// The operation does not fit the strategy: restart_child / delete_child
  /// on a simple_one_for_one supervisor, start_child with a spec on one, or
  /// start_child with arguments on any other.
  simple_one_for_one,
  /// The supervisor is stopping (or stopped) and dropped the request.
  shutting_down,
};

/// The enumerator's name, e.g. "start_failed".
std::string to_string(supervision_errc);

caf::error make_error(supervision_errc code);
caf::error make_error(supervision_errc code, std::string detail);

/// Whether `err` is of category supervision_category with code `code`.
bool is(const caf::error& err, supervision_errc code);

/// Renders any error: "none" for no error, "start_failed: child 'w1': ..."
/// for ours, CAF's rendering (e.g. "exit_reason(user_shutdown)") otherwise.
std::string describe(const caf::error& err);

} // namespace dspex::supervision
