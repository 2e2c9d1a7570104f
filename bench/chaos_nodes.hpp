// `dspex-bench chaos --nodes N`: a pool_group over N real `dspex run`
// processes (each a node of its own with `workers` workers, reached through
// a remote_pool), clients on a node in this process calling the group
// (node::call with a deadline, `echo` marked idempotent), while member 0 is
// SIGKILLed and later started again on its port (it must rejoin), member 1
// is SIGSTOPped and later continued (a hung node: sockets open, nothing
// answered), and member 2 is partitioned: it runs in a network namespace of
// its own (netns_link.hpp) whose veth link is cut, then healed (it must
// rejoin). Without namespaces (not root, no `ip`) member 2 is left out of
// the faults, and the run says so. Each fault lasts a fifth to a third of
// the fault phase: give it more than the heartbeat timeout (2 s) per fault.
//
// Figures: requests sent, answered ok, answered with each error class,
// never answered (must be 0), answered twice (must be 0), replies carrying
// another request's key (must be 0), answers later than the request's
// deadline plus the heartbeat timeout (must be 0), throughput while a member
// is down, stopped or cut off against before the faults, whether the killed
// and the partitioned members rejoined (routed to again; must be yes), and
// failover times (a fault -> the last request in flight then answered; a
// restart or a heal -> routed to again; the load goes on until the healed
// member is routed to, at most 10 s past the fault phase).
// --assert makes a must-be figure the exit status 1.
#pragma once

#include <dspex/bench/chaos.hpp>

namespace dspex::bench {

int run_chaos_nodes(const chaos_options& o);

} // namespace dspex::bench
