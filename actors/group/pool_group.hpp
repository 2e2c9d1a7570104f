// pool_group: one name for several pools, local or remote (remote_pool), on
// one node or many. It takes the same (exec, command_request) -> json as a
// pool, and (cancel, ref) and (status); docs/remote.md "Pool groups".
//
// Routing: a request goes to the member with the fewest requests in flight
// from this group (ties in turn), among the members that are up. A request
// with a session goes where that session went before while that member is
// up (affinity: its programs and LM live there); the first request of a
// session, or one whose member went down, picks afresh.
//
// Up or down: every health_interval the group asks each member its status:
// a remote_pool that is not connected, a pool whose circuit is open or a
// member not running (restarting) is down and gets nothing. A member that
// answers node_down is down at once, until a later status says otherwise.
//
// Failure: a request in flight on a member that dies gets the member's
// answer (node_down from a remote_pool). One whose command is listed in
// `idempotent` is sent once more to another member instead (opt in: a
// command that ran halfway may run twice). A request the member refused
// unseen (circuit_open, node_down before it left) is sent to another member
// whatever the command: it never ran.
//
// Streams and cancellation cross the group: the caller's (cancel, ref)
// reaches the member that has the request, a caller that dies cancels its
// requests there, and chunks reach the caller's sink with the caller's ref.
#pragma once

#include <dspex/actors/node/monitor.hpp>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace dspex {

struct pool_group_config {
  std::string name;                  ///< the group's pool name (unique across the tree)
  std::vector<std::string> members;  ///< pool or remote_pool names of this node
  std::set<std::string> idempotent;  ///< commands sent again to another member after node_down
  std::chrono::milliseconds health_interval{200};
};

/// `dir` resolves member names ("pool:NAME", "remote:NAME") at each use: a
/// restarted member is found under its new handle.
caf::actor spawn_pool_group(caf::local_actor* ctx, const pool_group_config& cfg,
                            std::shared_ptr<directory> dir);

} // namespace dspex
