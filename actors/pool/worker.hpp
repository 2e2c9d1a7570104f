// The worker: one supervised Python process behind a CAF actor.
//
// States:  starting -> ready <-> busy,  degraded (a request timed out since
//          the last answer), grace (a timed-out request may still answer),
//          terminating (asked to stop).
// Health:  healthy | degraded | unhealthy (in its grace or being replaced),
//          from worker-level faults only: a Python exception is an answer.
//
// Contract:
// - (ready) -> unit once the init ping answered within init_timeout; when it
//   does not, the worker exits with init_failed and every waiter gets that.
//   A supervisor's await_ready uses exactly this.
// - (exec, command_request) -> json result, or a classified dspex error.
//   Requests are correlated by id and each has its own timeout. A reply with
//   success=false (a Python exception, UnknownCommand) is an ordinary reply:
//   python_error, and the worker is fine.
// - A timeout fails that caller with command_timeout at its deadline. The
//   worker then has timeout_grace to answer late: that reply is discarded
//   and the worker is sound again (it tells its pool: recovered). Meanwhile
//   it takes no new work (requests are held, then sent or failed). No reply
//   within the grace: a pool worker asks its pool to replace it (stuck), a
//   worker on its own exits with command_timeout. Its pool is told of every
//   timeout (timedout, pooled, tag) and of a failed init (initfail). All
//   deadlines of a worker share one timer (deadlines.hpp).
// - Many requests may be in flight (the pool sends up to max_concurrency);
//   the Python worker then serves them on request threads and replies in
//   any order. (done, ok, tag) names the pool's job of each pooled one.
// - Any protocol error: every caller fails with protocol_error and the
//   worker exits with that reason (a fault its supervisor counts).
// - (retire), from its pool: it is being replaced on purpose. The process is
//   killed at once (Python may be stuck and unable to read a shutdown frame),
//   callers get worker_crashed, and the actor waits for its supervisor's
//   terminate_child to end it, so the exit is one the supervisor asked for.
// - The process dying at any moment fails every in-flight caller at once with
//   worker_crashed, and the actor exits with a reason naming the exit code or
//   signal: exit code 0 is a normal exit, anything else an abnormal one, so
//   restart types apply as in OTP.
// - An exit message (a supervisor's shutdown) starts the staged stop: the
//   shutdown command, EOF, SIGTERM, SIGKILL; the actor exits once the process
//   was reaped, with the reason it was given. A worker serving a pool first
//   drains: it asks its pool (leaving), serves what the pool routed to it
//   meanwhile, and stops once the pool answers (nothing more comes, all it
//   sent was answered) or after drain_timeout.
// - (adopt, pool): a pool restarted on its own takes this worker over; it
//   serves that pool from now on and tells it (worker_up) once nothing of the
//   old pool's is in flight.
// - (stats) -> json: requests, errors, checkouts, session requests, uptime,
//   last activity, os pid, state, health, and direct_replies: the answers
//   the io thread gave without the actor (inflight_table.hpp).
#pragma once

#include <dspex/actors/node/messages.hpp>
#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/fork_server.hpp>
#include <dspex/bridge/io_loop.hpp>
#include <dspex/bridge/json_limits.hpp>
#include <dspex/bridge/process_limits.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/local_actor.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dspex {

struct worker_config {
  std::string id = "worker";        ///< shown in stats, passed to Python as --worker-id
  std::string python = "python3";   ///< the interpreter: a path or a name in PATH
  std::string module = "dspex_worker";
  /// The config's python_path: first on the worker's import path, so a
  /// `module` (or a worker package) there wins; see worker_environment.
  std::string python_path;
  /// The node's python_path (node_options::python_path, set by the node):
  /// the worker package's directory; empty: located (locate_python_dir).
  /// On the import path after python_path, never replaced by it.
  std::string package_path;
  /// Directories of handler modules (the config's handler_paths), on the
  /// import path after the worker package's directory.
  std::vector<std::string> handler_paths;
  std::vector<std::string> handler_modules;  ///< user command modules (--handlers)
  std::vector<std::pair<std::string, std::string>> env;
  std::vector<std::string> extra_args;
  std::string run_id;               ///< empty: this host's run id
  std::chrono::milliseconds init_timeout{10000};
  std::chrono::milliseconds request_timeout{30000};
  /// After a request timed out: how long a late reply is awaited (and
  /// discarded) before the worker is replaced.
  std::chrono::milliseconds timeout_grace{1000};
  std::size_t max_frame_bytes = bridge::default_max_frame_bytes;
  /// The tree's max_json_depth (bridge/json_limits.hpp): deeper args are
  /// refused (invalid_request), a deeper reply fails its request
  /// (result_too_deep). Set by the node from the tree config.
  std::size_t max_json_depth = bridge::default_max_json_depth;
  bool fault_injection = false;     ///< enables the worker's fault_* commands
  /// A stream's credit window (protocol 2, actors/pool/detail/
  /// stream_credit.hpp): chunks a worker may send beyond the last one its
  /// caller took. The sink acks every window/2-th chunk, and each ack costs
  /// the Python worker a GIL hand-over between its reader and request
  /// threads and may stall the stream while it waits for a CPU: 1024 lets
  /// a 1,000-chunk stream of small chunks run without a stall.
  std::uint32_t stream_window = 1024;
  /// ... and in bytes (chunk frame bodies): the worker sends while what it
  /// sent past the last chunk taken is below this (one chunk larger than it
  /// goes alone), the sink acks once half of it came. So one stream holds
  /// at most this plus one chunk in the host, whatever its chunks weigh.
  std::uint64_t stream_window_bytes = 1024 * 1024;
  /// Requests one process serves at once (Python request threads); its
  /// pool keeps up to this many in flight on it. 1: one at a time.
  std::size_t max_concurrency = 1;
  /// The process runs under SCHED_BATCH: its wake-ups do not preempt the
  /// host thread that routes requests (bridge::enter_batch_scheduling).
  bool sched_batch = true;
  /// Hard limits (config worker.limits), set by the process itself before
  /// handler code is imported (bridge/process_limits.hpp).
  bridge::process_limits limits;
  /// Asked to stop while serving a pool, how long the worker waits for the
  /// pool to route nothing more to it and see its requests answered
  /// (leaving) before the staged stop: the pool's drain_timeout.
  std::chrono::milliseconds drain_timeout{10000};
  std::chrono::milliseconds stop_grace{2000};  ///< after the shutdown command and EOF
  std::chrono::milliseconds term_grace{1000};  ///< after SIGTERM, before SIGKILL
  std::string mode = "pool";        ///< passed to Python as --mode
  /// The pool this worker serves: told (worker_up) once ready and (done)
  /// after every pooled request. Invalid: a worker on its own.
  caf::actor pool;
  bool overflow = false;            ///< started on demand beyond pool_size
  /// "fork": pool workers are forked by the pool's fork server (a warm
  /// interpreter with `preload` imported); "spawn": each is a fresh python.
  /// A worker on its own, or with a module other than dspex_worker, spawns.
  std::string start = "fork";
  std::vector<std::string> preload;  ///< modules the fork server imports once
  /// Set by the pool supervisor when start is fork: where to fork from.
  std::shared_ptr<bridge::fork_server_slot> forker;
  /// Where the handlers' host calls go (set by the node); unset: a host
  /// call is answered `unavailable`.
  std::shared_ptr<class host_call_router> host_calls;
};

/// Where the dspex_worker package is: DSPEX_PYTHON_PATH, then the source
/// tree of this build, then the install prefix, then share/dspex/python
/// beside the running executable.
std::string locate_python_dir();

/// The environment a worker, and its pool's fork server, runs with:
/// PYTHONPATH, PYTHONUNBUFFERED=1, then the config's `env` (its PYTHONPATH
/// merged into the first, never replacing it). PYTHONPATH is, in this
/// order (the first directory holding a module wins): python_path (the
/// config's), the worker package's directory (package_path, i.e. the
/// node's python_path, else locate_python_dir()), handler_paths, the
/// entries of the config's env.PYTHONPATH, then the host's own PYTHONPATH.
/// So the worker package stays importable whatever the config adds.
std::vector<std::pair<std::string, std::string>> worker_environment(const worker_config& cfg);

/// The command line a worker runs (for tests and for `dspex status`).
std::vector<std::string> worker_command_line(const worker_config& cfg);

/// Spawns a worker. The io_loop must outlive it (it is shared for that).
caf::actor spawn_worker(caf::actor_system& sys, std::shared_ptr<bridge::io_loop> loop,
                        worker_config cfg);

/// The same, spawned from inside another actor (a supervisor's start function).
caf::actor spawn_worker(caf::local_actor* ctx, std::shared_ptr<bridge::io_loop> loop,
                        worker_config cfg);

} // namespace dspex
