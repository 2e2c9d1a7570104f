// The session registry: which sessions exist, when each was last seen, and
// what each built on the workers (its programs and LM, a session_book:
// session_state.hpp). It outlives workers and pools (it is their sibling in
// the tree), so a session loses nothing when the worker that served it dies
// or its pool restarts: the pool asks it before every dispatch what the
// chosen worker must be replayed first.
//
//   (sess_new, sid)       -> unit | duplicate_session | resource_exhausted
//   (sess_use, sid)       -> unit | resource_exhausted: a use of the session
//                         (a lease, single mode); creates it when new
//   (touch, sid)          one way: a use of a session the sender knows; should
//                         it be gone, it is created again, never past the cap
//   (sess_end, sid)       -> unit | unknown_session; pools drop its programs
//                         from their workers (cleanup_session)
//   (sess_list)           -> json [{id, created_ms_ago, idle_ms, requests, programs,
//                            lm: "provider/model" or null; never a secret}]
//   (stats)               -> json {sessions, max_sessions, created, ended,
//                         expired, refused, programs, ttl_ms}
//   (prepare, pool, command_request, seen_versions) -> session_plan |
//                         resource_exhausted: records the request's effect and
//                         says what to replay first
//   (settle, change, ok)  how the request that made a change ended; a
//                         failed one is undone
//   (pool_up, pool, default_lm)  a pool (re)started or found this registry
//                         new: it hears of ended sessions; its default LM
//
// Sessions idle longer than ttl are swept every sweep_interval, exactly as
// if ended.
//
// At most max_sessions live at once: whatever would create one more (a
// request with a new session id, sess_new, sess_use) is refused with
// resource_exhausted naming the cap (counted in "refused"); existing
// sessions go on, and once one ends or expires a new one is admitted.
#pragma once

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>

#include <chrono>

namespace dspex {

struct session_registry_config {
  std::chrono::milliseconds ttl{std::chrono::hours(1)};
  std::chrono::milliseconds sweep_interval{std::chrono::seconds(60)};
  /// Live sessions at most (config max_sessions).
  std::size_t max_sessions = 100000;
};

caf::actor spawn_session_registry(caf::local_actor* ctx, session_registry_config cfg);
caf::actor spawn_session_registry(caf::actor_system& sys, session_registry_config cfg);

} // namespace dspex
