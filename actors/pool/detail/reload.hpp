// A pool's rolling reload (issue 27): every worker is replaced, a few at a
// time, by one that imported the code afresh, while the pool serves on.
//
// One reload actor per (reload) the pool accepts; it drives the pool's
// worker supervisor and fork server through their own APIs, and the pool
// sees only what it sees of any start and deliberate stop (worker_up; a
// worker's (leaving), so nothing routed to it is lost):
//   1. fork: the fork server starts a second server (freshly imported
//      dspex_worker and `preload`); workers started from then on fork from
//      it. It failing to start (a preload that raises) ends the reload:
//      nothing changed.
//   2. The regular workers running now are the old ones. Step by step,
//      `surge` new ones are started under fresh ids ("wK", the first free
//      K), each counted as started only once its init ping answered
//      (handler modules imported), then as many old ones are stopped:
//      terminate_child, which drains each (per-worker drain) before its
//      staged stop, and delete_child. The pool never serves with fewer than
//      `size` workers.
//   3. Overflow workers of the old code are stopped (drained) last; then
//      the old fork server goes.
// A new worker that does not start rolls the reload back: the new workers
// are stopped (drained), the fork server takes the old server back, and
// workers that were already replaced are started again from it. Those get
// the old server's imports (the worker package and `preload`), but import
// their handler modules from disk, as any worker does; with start: spawn
// they spawn what is on disk. A failure at the first step (the usual one:
// code that does not import) replaced nothing, so the old workers serve on
// untouched. The answer is then init_failed, saying what failed.
//
// The fork server watches the reload actor: should it end before it
// committed or rolled back (its pool stopped or restarted, and the old
// workers with it), a new server not yet in place is dropped and an old
// one retired. New workers start one at a time (await_ready holds the
// worker supervisor for each start, and for each later restart of it), so
// a larger surge shortens the drains, not the starts.
//
// Sessions need nothing: a new worker has seen no session, so the pool
// replays a session's programs and LM on it before its first request there,
// as after a crash.
#pragma once

#include <dspex/actors/pool/pool.hpp>

#include <caf/atom.hpp>
#include <caf/local_actor.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <unordered_set>

namespace dspex {

/// reload actor -> pool: (reload_progress, json) after each step:
/// {state: "running", replaced, of, surge, started}.
using reload_progress_atom = caf::atom_constant<caf::atom("rl_prog")>;
/// pool -> reload actor: (reload_run) -> json summary | error.
using reload_run_atom = caf::atom_constant<caf::atom("rl_run")>;

struct reload_plan {
  pool_config cfg;  ///< the pool's, as it is now (size, worker template)
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<pool_links> links;
  std::size_t surge = 1;
  caf::actor pool;  ///< told (reload_progress) as the reload goes
};

/// The first "wK" not in `taken`, added to it: the id of a worker started
/// beside the others (a reload's, a scale's).
std::string take_free_worker_id(std::unordered_set<std::string>& taken);

/// Spawns the actor of one reload; (reload_run) starts it and is answered
/// {pool, reloaded, surge, ms, fork_server: {old_pid, new_pid}} once every
/// worker is new, or with the error that ended it (then rolled back). The
/// actor quits after answering.
caf::actor spawn_reload(caf::local_actor* ctx, reload_plan plan);

} // namespace dspex
