// Atoms and message types shared by the domain actors. CAF 0.17 atoms hold
// at most 10 characters; types that cross actors are declared here once.
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/actor.hpp>
#include <caf/atom.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>

namespace dspex {

using json = nlohmann::json;

// -- requests a client sends ---------------------------------------------------
using exec_atom = caf::atom_constant<caf::atom("exec")>;        ///< (exec, command_request) -> json
using stats_atom = caf::atom_constant<caf::atom("stats")>;      ///< (stats) -> json
using ready_atom = caf::atom_constant<caf::atom("ready")>;      ///< (ready) -> unit once initialised
using status_atom = caf::atom_constant<caf::atom("status")>;    ///< (status) -> json snapshot
/// (scale, n) -> json: a pool's size becomes n (pool.hpp).
using scale_atom = caf::atom_constant<caf::atom("scale")>;
/// (reload, surge) -> json: a pool's rolling reload (pool.hpp).
using reload_atom = caf::atom_constant<caf::atom("reload")>;
/// (cancel, ref) from a caller to the pool (or worker) it sent (exec) to:
/// cancel its request `ref` (command_request::ref). Its answer is
/// `cancelled` at once; the handler is told to stop. One way.
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
/// (chunk, stream_chunk) from a worker to a request's sink, in order,
/// before the request's answer.
using chunk_atom = caf::atom_constant<caf::atom("chunk")>;
/// (ack, wire, seq) from a sink to the chunk's sender: chunks up to `seq`
/// of stream `wire` are taken (see stream_chunk::ack).
using ack_atom = caf::atom_constant<caf::atom("ack")>;
/// (hcresult, call, ok, result, error) to a worker: the answer of its host
/// call `call` (a host function's reply, from any thread).
using host_result_atom = caf::atom_constant<caf::atom("hcresult")>;

// -- worker internals (from the io thread to the worker actor) ---------------
using frame_atom = caf::atom_constant<caf::atom("frame")>;
using proto_err_atom = caf::atom_constant<caf::atom("protoerr")>;
using proc_exit_atom = caf::atom_constant<caf::atom("procexit")>;
using output_atom = caf::atom_constant<caf::atom("output")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using deadline_atom = caf::atom_constant<caf::atom("deadline")>;  ///< (deadline, at_ns): deadlines.hpp
using init_atom = caf::atom_constant<caf::atom("init")>;

// -- pool <-> worker ------------------------------------------------------------
using worker_up_atom = caf::atom_constant<caf::atom("worker_up")>;  ///< worker -> pool: (worker_up, id, overflow[, port])
using done_atom = caf::atom_constant<caf::atom("done")>;            ///< worker -> pool: (done, outcome, tag)
/// pool -> worker: (adopt, pool). A pool restarted on its own (an operator's
/// restart_child of it) takes over the running workers of its supervisor.
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;
// Worker faults (see pool.hpp, "Faults"): a request timed out and the worker
// is in its grace (timedout, pooled); every late reply came within the grace
// (recovered); the grace expired, replace me (stuck); the init ping failed
// (initfail, id, error: init_failed, or invalid_config when the worker
// cannot start as configured). The pool answers a replacement with (retire): kill the process
// now, the supervisor's terminate_child follows.
using timedout_atom = caf::atom_constant<caf::atom("timedout")>;
using recovered_atom = caf::atom_constant<caf::atom("recovered")>;
/// worker -> pool: a timed-out request's handler ended within the grace
/// (a soft timeout: the process is kept).
using soft_timeout_atom = caf::atom_constant<caf::atom("softtmo")>;
using stuck_atom = caf::atom_constant<caf::atom("stuck")>;
using init_fail_atom = caf::atom_constant<caf::atom("initfail")>;
using retire_atom = caf::atom_constant<caf::atom("retire")>;
/// worker -> pool: (leaving) -> unit: the worker was asked to stop; the pool
/// routes nothing more to it and answers once it holds nothing of its own
/// on it (no request in flight, no lease, no ping).
using leaving_atom = caf::atom_constant<caf::atom("leaving")>;
/// worker -> pool: (limit, error) its process was ended by a hard limit
/// (SIGXCPU: cpu_limit); the pool replaces it on purpose, and a pool that
/// kills a worker for a limit sends it (retire, error): its callers get that
/// error instead of worker_crashed.
using limit_atom = caf::atom_constant<caf::atom("limit")>;
using grace_atom = caf::atom_constant<caf::atom("grace")>;
using replace_atom = caf::atom_constant<caf::atom("replace")>;
using checkout_atom = caf::atom_constant<caf::atom("checkout")>;
using checkin_atom = caf::atom_constant<caf::atom("checkin")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using circuit_atom = caf::atom_constant<caf::atom("circuit")>;
using workers_atom = caf::atom_constant<caf::atom("workers")>;  ///< (workers) -> std::vector<caf::actor>

// -- session registry -------------------------------------------------------------
using touch_atom = caf::atom_constant<caf::atom("touch")>;        ///< (touch, sid): seen now
using sess_new_atom = caf::atom_constant<caf::atom("sess_new")>;  ///< (sess_new, sid) -> unit | duplicate_session
using sess_use_atom = caf::atom_constant<caf::atom("sess_use")>;  ///< (sess_use, sid) -> unit | resource_exhausted
using sess_end_atom = caf::atom_constant<caf::atom("sess_end")>;  ///< (sess_end, sid) -> unit | unknown_session
using sess_list_atom = caf::atom_constant<caf::atom("sess_list")>; ///< (sess_list) -> json
using prepare_atom = caf::atom_constant<caf::atom("prepare")>;    ///< pool -> registry: (prepare, pool, req, seen) -> session_plan
using settle_atom = caf::atom_constant<caf::atom("settle")>;      ///< pool -> registry: (settle, change, ok): its request answered
using pool_up_atom = caf::atom_constant<caf::atom("pool_up")>;    ///< pool -> registry: (pool_up, name, default_lm): tell me about ended sessions
using cleanup_atom = caf::atom_constant<caf::atom("cleanup")>;    ///< registry -> pool: (cleanup, sid)
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;
/// registry -> pools: (versions, pool, sid, version): a session's state
/// (sid set) or pool `pool`'s default LM (sid none) is now at `version`.
using versions_atom = caf::atom_constant<caf::atom("versions")>;

/// One chunk of a streaming request, as its sink receives it.
struct stream_chunk {
  std::uint64_t ref = 0;   ///< the request's command_request::ref
  std::uint64_t seq = 0;   ///< 0, 1, 2, ... without gaps
  json data;
  std::uint64_t wire = 0;  ///< the stream's id on its worker: echo it in (ack)
  /// The sink must answer (ack, wire, seq) to the sender once it has taken
  /// this chunk: the worker stops sending when the sink falls a whole
  /// window behind (worker.stream_window, worker.stream_window_bytes), so a
  /// slow sink cannot make the host buffer without bound. Set once half the
  /// chunk window or half the byte window came since the last ack
  /// (actors/pool/detail/stream_credit.hpp).
  bool ack = false;
};

/// One command for a worker. A zero timeout means the worker's default.
struct command_request {
  std::string command;
  json args = json::object();
  std::optional<std::string> session_id;
  std::chrono::milliseconds timeout{0};
  /// Set by the pool when it delegates: the worker then reports (done, ...)
  /// to its pool once it replied, which is how the pool learns it is free
  /// without ever standing on the reply path.
  bool pooled = false;
  /// The pool's name for this job on its worker, echoed in (done) and
  /// (timedout): with max_concurrency > 1 replies come back in any order.
  std::uint64_t tag = 0;
  /// The caller's name for the request, not 0: it may then cancel it
  /// (cancel, ref), and the pool cancels it when the caller dies. Unique
  /// among the caller's requests in flight. 0: not cancellable.
  std::uint64_t ref = 0;
  /// Set: the caller takes a stream; the handler's chunks go to `sink` as
  /// (chunk, stream_chunk) before the answer. Needs ref.
  caf::actor sink;
  /// How many host calls deep this request is: 0 from a client, n + 1 for
  /// a host call made by a request at depth n (max_call_depth bounds it).
  std::uint8_t depth = 0;
};

inline command_request make_command(std::string name, json args = json::object(),
                                    std::optional<std::string> session = std::nullopt,
                                    std::chrono::milliseconds timeout = std::chrono::milliseconds{0}) {
  command_request r;
  r.command = std::move(name);
  r.args = std::move(args);
  r.session_id = std::move(session);
  r.timeout = timeout;
  return r;
}

} // namespace dspex

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(nlohmann::json)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::command_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::stream_chunk)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::optional<std::string>)
