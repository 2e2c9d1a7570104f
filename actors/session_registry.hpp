// The session registry: which sessions exist, when each was last seen, and
// the program definitions each created. It outlives workers and pools (it
// is their sibling in the tree), so a session loses nothing when the worker
// that served it dies: the pool re-attaches the definitions it keeps here.
//
//   (sess_new, sid)       -> unit | duplicate_session
//   (touch, sid)          a request in that session: creates it when new
//   (sess_end, sid)       -> unit | unknown_session; pools drop its programs
//                         from their workers (cleanup_session)
//   (sess_list)           -> json [{id, created_ms_ago, idle_ms, requests, programs}]
//   (stats)               -> json {sessions, created, ended, expired, programs}
//   (prog_put, sid, pid, def) / (prog_del, sid, pid) / (programs) -> json
//
// Sessions idle longer than ttl are swept every sweep_interval, exactly as
// if ended.
#pragma once

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>

#include <chrono>

namespace dspex {

struct session_registry_config {
  std::chrono::milliseconds ttl{std::chrono::hours(1)};
  std::chrono::milliseconds sweep_interval{std::chrono::seconds(60)};
};

caf::actor spawn_session_registry(caf::local_actor* ctx, session_registry_config cfg);
caf::actor spawn_session_registry(caf::actor_system& sys, session_registry_config cfg);

} // namespace dspex
