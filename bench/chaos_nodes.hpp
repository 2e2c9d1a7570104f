// `dspex-bench chaos --nodes N`: a pool_group over N real `dspex run`
// processes on loopback (each a node of its own with `workers` workers,
// reached through a remote_pool), clients on a node in this process calling
// the group (node::call with a deadline, `echo` marked idempotent), while
// one member is SIGKILLed and later started again on its port (it must
// rejoin) and another is SIGSTOPped and later continued: a stopped node
// keeps its sockets open and answers nothing, as a partitioned one does
// until the heartbeat timeout drops it. (Network namespaces with a veth
// link to cut would be a truer partition; they need privileges this bench
// does not assume.)
//
// Figures: requests sent, answered ok, answered with each error class,
// never answered (must be 0), answered twice (must be 0), replies carrying
// another request's key (must be 0), answers later than the request's
// deadline plus the heartbeat timeout (must be 0), throughput while a member
// is down or stopped against before the faults, and whether the killed
// member rejoined (routed to again after its restart; must be yes).
// --assert makes a must-be figure the exit status 1.
#pragma once

#include <dspex/bench/chaos.hpp>

namespace dspex::bench {

int run_chaos_nodes(const chaos_options& o);

} // namespace dspex::bench
