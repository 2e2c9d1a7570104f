// SCHED_BATCH for the worker processes (worker.sched_batch, default on).
//
// Why: the host routes every request on one thread (actors/node/detail/io_scheduler.hpp).
// Under the default policy a worker woken by the request written to its
// pipe preempts that very thread, whose CPU it then takes while replies and
// requests of the other workers wait: measured at 0.4 involuntary switches
// per request at W=4 on 2 cores. A SCHED_BATCH process never preempts on
// wake-up (sched(7)): it runs at once on a free CPU, else when the host
// thread sleeps or at the next tick. The policy is inherited across fork and
// exec, so a fork server's children have it too.
#pragma once

namespace dspex::bridge {

/// Puts the calling process under SCHED_BATCH. Async-signal-safe, for a
/// child between fork and exec. A failure is harmless: the default policy
/// stays.
void enter_batch_scheduling() noexcept;

} // namespace dspex::bridge
