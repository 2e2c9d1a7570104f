// A node: one running tree built from a config, in the caller's own
// actor_system. This is the embedding API.
//
//   auto cfg = dspex::parse_config(dspex::default_config());
//   auto n = dspex::node::start(sys, *cfg);          // blocks until pools are warm
//   auto r = (*n)->execute_in_session("s1", "ping");  // synchronous
//   (*n)->stop();                                     // graceful, reaps everything
//
// From an actor, send (exec, command_request) to `pool()` and handle the
// json or error reply asynchronously.
//
// Modes (as DSPex's ConditionalSupervisor): pool runs the config as is;
// single replaces every pool by one supervised worker; disabled starts no
// Python at all (execute answers `unavailable`); auto checks that python3
// and the worker package start, then runs as pool, else as disabled with
// the reason in mode_message().
#pragma once

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/host_functions.hpp>
#include <dspex/actors/node/messages.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace dspex {

/// CAF settings that suit dspex's message pattern (many short hops between
/// a few actors and the io thread): the work-sharing scheduler, which halved
/// the round trip against work stealing on 2 cores, with one scheduler
/// thread instead of CAF's at least 4 (see README, Performance). Call before cfg.parse(...), so configuration files and
/// --caf# options still override it. The dspex CLI does.
void recommended_settings(caf::actor_system_config& cfg);

struct node_options {
  /// Receive every supervision event of the tree (supervision_event messages).
  std::vector<caf::actor> subscribers;
  /// Where every worker's package (dspex_worker) is, in place of the
  /// located one (tests, relocated installs). A config's worker.python_path
  /// does not lose to it: that goes first on the import path, this after
  /// it, then worker.handler_paths (worker_environment, worker.hpp).
  std::string python_path;
  /// Stop leftovers of dead earlier runs before starting (see host_run.hpp).
  bool reap_leftovers = true;
  /// How long start() waits for every pool to be warm.
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(60)};
};

/// Why the root supervisor stopped by itself (not through node::stop()).
struct root_failure {
  /// The deepest supervisor in the chain of escalations that reached its
  /// restart intensity ("root/pool_sup/workers"); "root" when the root's own
  /// children did it; empty when no intensity was reached (the root was
  /// killed, or auto_shutdown stopped it).
  std::string path;
  /// The child whose exit tipped `path` over ("w2").
  std::string child;
  /// The root's exit reason ("shutdown", "killed", ...).
  std::string reason;
  /// One line for people: "root/pool_sup/workers reached its restart
  /// intensity (child w2), escalated to root".
  std::string message;
};

/// Where and how an asynchronous call runs (node::call, node::stream).
struct call_options {
  std::string pool;                      ///< empty: target()
  std::optional<std::string> session;    ///< none: anonymous
  std::chrono::milliseconds timeout{0};  ///< 0: the worker's request_timeout
};

/// A call in flight (node::call, node::stream). cancel() ends it with
/// errc::cancelled, unless it was answered first, and the worker's handler
/// is told to stop. Copyable, cheap; it does not keep the call going, and
/// cancel() after the end does nothing.
class call_handle {
public:
  call_handle() = default;
  void cancel() const;
  /// False for a default-constructed handle (and for a call refused at once).
  bool valid() const { return static_cast<bool>(actor_); }

private:
  friend class node;
  explicit call_handle(caf::actor a) : actor_(std::move(a)) {}
  caf::actor actor_;
};

/// The answer of an asynchronous call: its result or a classified error.
using result_callback = std::function<void(caf::expected<json>)>;
/// One chunk of a stream, in order.
using chunk_callback = std::function<void(json)>;

/// The os pids in a status tree (node::status()["tree"]), depth first; only
/// of children whose path contains `path_part` when it is not empty
/// ("/workers/": the pool workers). Only live processes: a child still
/// starting (-1) or gone (null) is left out; never throws.
std::vector<int> tree_os_pids(const json& tree, const std::string& path_part = {});

class node : public std::enable_shared_from_this<node> {
public:
  static caf::expected<std::shared_ptr<node>> start(caf::actor_system& sys, tree_config cfg,
                                                    node_options opts = {});
  ~node();

  caf::expected<json> execute(const std::string& command, json args = json::object(),
                              std::optional<std::string> session = std::nullopt,
                              std::chrono::milliseconds timeout = std::chrono::milliseconds{0}) {
    return execute_on({}, command, std::move(args), std::move(session), timeout);
  }
  /// As execute, on the pool (or remote_pool) named `pool`; an empty name is
  /// target(). An unknown name is invalid_request naming the known pools.
  caf::expected<json> execute_on(const std::string& pool, const std::string& command,
                                 json args = json::object(),
                                 std::optional<std::string> session = std::nullopt,
                                 std::chrono::milliseconds timeout = std::chrono::milliseconds{0});
  caf::expected<json> execute_in_session(const std::string& session, const std::string& command,
                                         json args = json::object(),
                                         std::chrono::milliseconds timeout = {}) {
    return execute(command, std::move(args), session, timeout);
  }
  caf::expected<json> execute_anonymous(const std::string& command, json args = json::object(),
                                        std::chrono::milliseconds timeout = {}) {
    return execute(command, std::move(args), std::nullopt, timeout);
  }

  /// Asynchronous calls, for threads that must not block (node_async.cpp;
  /// docs/embedding.md "Asynchronous calls and streams"). The callbacks
  /// run on a CAF scheduler thread, once each, in order (every chunk
  /// before the result): keep them short and never block in them (not on
  /// execute(), not on a future of another call): with
  /// recommended_settings() that thread is the node's only one. An
  /// exception a callback throws is caught and logged to stderr.
  /// A call refused at once (unknown pool, stopped node, args too deep)
  /// calls on_result before returning, with an invalid handle.
  call_handle call(const std::string& command, json args, call_options opts,
                   result_callback on_result);
  /// The same, its answer in a future (wait on it from any thread but a
  /// callback's).
  std::future<caf::expected<json>> call(const std::string& command, json args = json::object(),
                                        call_options opts = {});
  /// A streaming call: on_chunk gets each value the handler yields, in
  /// order, then on_result the handler's return value (or the error:
  /// chunks already delivered stay delivered). A slow on_chunk slows the
  /// handler down (the worker waits for credit: worker.stream_window chunks,
  /// worker.stream_window_bytes bytes) and
  /// never grows the host's memory.
  call_handle stream(const std::string& command, json args, call_options opts,
                     chunk_callback on_chunk, result_callback on_result);

  caf::error create_session(const std::string& session);
  caf::error end_session(const std::string& session);

  /// A function the handlers of every pool may call: ctx.call("fn:NAME",
  /// args) (host_functions.hpp; docs/embedding.md "Host functions").
  /// invalid_request for an empty or taken name. Calls made after
  /// unregister_function get invalid_request; those in flight finish.
  caf::error register_function(const std::string& name, host_function f);
  /// The same for a function that may block: it runs on one of the node's
  /// four host-function threads. node::stop() waits for those running.
  caf::error register_blocking_function(const std::string& name, blocking_host_function f);
  void unregister_function(const std::string& name);

  /// The tree (every child with its state, os pid and restart count), the
  /// pool metrics and the session stats.
  json status();

  /// Operator control of one child, by its path from the root
  /// ("root/pool_sup/workers/w1"), as supervisorctl does, through the parent
  /// supervisor's dynamic API with OTP's semantics: stop_child
  /// (terminate_child) leaves it stopped, listed with status undefined,
  /// until start_child (restart_child); restart_child stops it when it runs,
  /// then starts it. None of this spends restart intensity, and a pool does
  /// not count a worker stopped this way as a crash. Errors: invalid_request
  /// for a path that names no child (the message names the deepest
  /// supervisor found and its children) or a start of a running child;
  /// init_failed when the child did not start. Blocking: not for use inside
  /// an actor. Implemented in node_control.cpp.
  caf::error stop_child(const std::string& path);
  caf::error start_child(const std::string& path);
  caf::error restart_child(const std::string& path);

  /// Resizes the pool named `name` (empty: the first pool) to `size`
  /// workers while it serves: it grows by starting workers and shrinks by
  /// draining the idlest (each finishes its requests first, bounded by the
  /// pool's drain_timeout), so no request fails. Blocks until the pool
  /// serves with `size` workers; answers {"pool", "from", "size",
  /// "workers"}. The new size shows in status ("size") and stays until the
  /// pool restarts from its config. Errors: invalid_request for `size`
  /// outside [1, max_pool_size] (4096, pool.hpp), an unknown or remote
  /// pool; unavailable while another resize of it runs or when it did not
  /// get there by its deadline (the resize goes on). Not inside an actor.
  caf::expected<json> scale_pool(const std::string& name, std::size_t size);

  /// Rolling reload of the pool named `name` (empty: the first pool) while
  /// it serves: a new fork server imports `preload` and the worker package
  /// afresh, and every worker is replaced, `surge` at a time (in [1, size]),
  /// by one that imported the handler modules afresh; each old worker drains
  /// before it stops, so no request fails and the pool never serves with
  /// fewer than `size` workers. Sessions keep their programs (replayed on
  /// the new workers). Blocks until done; answers {"pool", "reloaded",
  /// "surge", "ms", "fork_server": {"old_pid", "new_pid"}}. A new server or
  /// worker that does not start rolls it back (the old code serves on) and
  /// is answered init_failed with the reason. Errors as scale_pool, and
  /// unavailable while a resize or another reload of it runs. Status
  /// "reload" shows the progress, "reloads" how they ended. Not inside an
  /// actor. (docs/operations.md, "Rolling reload".)
  caf::expected<json> reload_pool(const std::string& name, std::size_t surge = 1);

  /// reload_pool of every local pool in turn (what SIGHUP does to `dspex
  /// run`), each with its answer.
  std::vector<std::pair<std::string, caf::expected<json>>> reload_all(std::size_t surge = 1);

  /// Adds a subscriber of every supervision event of the tree from now on
  /// (supervision_event messages); it is dropped when it terminates, or by
  /// unsubscribe. Does not block.
  void subscribe(const caf::actor& subscriber);
  void unsubscribe(const caf::actor& subscriber);

  /// Graceful shutdown: new requests get shutting_down, in-flight ones
  /// finish within the pools' drain timeout, then the tree stops in
  /// reverse order and every process is reaped. Idempotent.
  void stop();

  /// Calls `f` once, when the root supervisor stops by itself (restart
  /// intensity reached, auto_shutdown, killed): from an actor thread, so keep
  /// it short and do not call stop() from it (signal a thread that does).
  /// Called at once, on this thread, when it has already happened. A root
  /// stopped by stop() is no failure and calls nothing.
  void on_failure(std::function<void(const root_failure&)> f);

  /// The failure, once the root has stopped by itself.
  std::optional<root_failure> failure() const;

  /// Waits up to `timeout` for the root to stop by itself; the failure, or
  /// nothing when it still runs (or was stopped by stop()).
  std::optional<root_failure> wait_failure(std::chrono::milliseconds timeout) const;

  /// The actor that serves requests (the first pool, or the single worker);
  /// invalid when disabled.
  caf::actor target() const;
  /// The actor of the pool (or remote_pool) named `name`, which takes the
  /// same (exec, command_request) as target(); invalid when no such name.
  caf::actor pool(const std::string& name) const;
  /// `pool(name)`, or target() for an empty name; else invalid_request
  /// naming the known pools (unavailable when the bridge is disabled).
  caf::expected<caf::actor> resolve(const std::string& name) const;
  /// The names of the tree's pools and remote pools, in config order.
  std::vector<std::string> pool_names() const;
  caf::actor root() const;
  /// The port the router is published on (config `listen`; port 0 there
  /// picks one); 0 when the node does not listen.
  std::uint16_t listen_port() const;
  bridge_mode mode() const;
  /// The tree's max_json_depth: execute* refuses deeper args
  /// (invalid_request) before they reach a pool; the control socket and
  /// the router check request text against it.
  std::size_t max_json_depth() const;
  const std::string& mode_message() const;

private:
  /// What a node holds (actors/node/detail/node_impl.hpp).
  struct impl;
  explicit node(caf::actor_system& sys);
  caf::error listen(const tree_config& cfg);
  /// The actor a call to `pool` goes to, after the checks every call makes
  /// (stopped, args depth, the pool's name, a session's admission).
  caf::expected<caf::actor> call_target(const std::string& pool, const json& args,
                                        const std::optional<std::string>& session);
  /// The pool actor of a local pool, for a live operation named `verb`.
  caf::expected<caf::actor> local_pool_for(const std::string& name, const char* verb);
  /// Asks a pool a live operation's message and waits for its answer.
  caf::expected<json> ask_pool(const caf::actor& p, caf::message msg,
                               std::chrono::minutes backstop = std::chrono::minutes(10));
  std::unique_ptr<impl> impl_;
};

} // namespace dspex
