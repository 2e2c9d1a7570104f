// The fork server as a child of a pool supervisor (bridge/fork_server.hpp):
// it sits ahead of the pool and the workers (rest_for_one), so a crashed
// server restarts everything forked from it.
//
// The start function starts the server and waits for its "ready", which
// takes as long as the preload imports (seconds with dspy) on the
// supervisor's thread; a preload that fails, or leaves threads running,
// gives an actor that exits at once with init_failed and the server's own
// message. The actor then lives as long as the process: its exit (any
// status) ends the actor with process_exited and the status attached, which
// the supervisor counts. Asked to stop, it closes the server's socket (EOF)
// and ends when the server has exited.
//
// A rolling reload (actors/pool/detail/reload.hpp) swaps servers without a
// restart of the tree:
//   (reload)        -> {old_pid, new_pid}: a second server is started (off
//                      the scheduler: its preload may take seconds) with
//                      fresh imports; workers started from now on fork from
//                      it (the slot holds it), the old one keeps its
//                      workers alive. An error when it does not start:
//                      nothing changed.
//   (reload_commit) -> unit: the old server is stopped (its workers are gone).
//   (reload_back)   -> unit: rollback; the slot holds the old server again
//                      and the new one is stopped.
// Only the current server's exit is a fault; the other's is expected.
#pragma once

#include <dspex/actors/pool/worker.hpp>
#include <dspex/bridge/fork_server.hpp>
#include <dspex/bridge/io_loop.hpp>
#include <dspex/supervision/child_spec.hpp>

#include <caf/atom.hpp>

#include <memory>
#include <string>

namespace dspex {

using reload_commit_atom = caf::atom_constant<caf::atom("rl_commit")>;
using reload_back_atom = caf::atom_constant<caf::atom("rl_back")>;

/// The child spec of a pool's fork server: python, env, run id and preload
/// from the pool's worker template; the running server goes into `slot`.
supervision::child_spec fork_server_child_spec(std::string id, const worker_config& w,
                                               std::shared_ptr<bridge::io_loop> loop,
                                               std::shared_ptr<bridge::fork_server_slot> slot);

/// The options the fork server of workers like `w` starts with.
bridge::fork_server_options fork_server_options_for(const worker_config& w);

} // namespace dspex
