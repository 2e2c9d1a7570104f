// The local control channel of a running node: a Unix socket (mode 0600,
// never a network port), one JSON request line in, one JSON reply line out.
//   {"op": "status"}
//   {"op": "exec", "command": "...", "args": {...}, "session_id": "..."|null, "timeout_ms": n,
//    "pool": "name"|null, "stream": bool}
//        -> {"ok": true, "result": ...}; with "stream": true, first one line
//        {"chunk": DATA, "seq": N} per chunk the handler yields, in order.
//        A chunk is acknowledged to its worker once its line is written, so
//        a client that does not read stalls the handler, not the node.
//        Closing the connection while an exec runs cancels it.
//   {"op": "restart" | "stop" | "start", "path": "root/pool_sup/workers/w1"}
//        -> {"ok": true, "result": {"op", "path"}} (node::restart_child ...)
//   {"op": "scale", "pool": "name"|null, "size": N}
//        -> {"ok": true, "result": {"pool", "from", "size", "workers"}} once the
//        pool serves with N workers (node::scale_pool)
//   {"op": "events"} -> {"ok": true, "following": "events"}, then one line per
//        supervision event (control_events.hpp) for as long as the client
//        reads; the connection takes no more requests. A follower that falls
//        more than follow_backlog lines behind is dropped, after a last line
//        {"ok": false, "error": {"class": "unavailable", ...}} saying so: the
//        node never waits for it.
// A connection may carry several requests, one line each, answered in order.
// Every failure is {"ok": false, "error": {"class", "message"}} (plus
// "python" for a python_error); the message never repeats the class
// (error_object, control_request.hpp). `dspex status`, `exec`, `restart`,
// `stop`, `start`, `scale` and `events` are its clients.
//
// This header is not installed: the line protocol above, documented in
// docs/cli.md ("The control protocol"), is the interface for other programs.
//
// No client can take the node down or hold up another: connections are
// served concurrently, each must deliver a complete line within a deadline
// and below a size limit, their number is bounded (the extra one gets a
// refusal line), and every malformed request gets an invalid_request reply.
// One node per path: a second node finds the first alive and gives up.
#pragma once

#include <dspex/actors/node/node.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace dspex::cli {

/// /tmp/dspex-<uid>/<name>.sock unless DSPEX_CONTROL is set.
std::string default_control_path(const std::string& name = "default");

/// A claimed control path: "<path>.lock" held (flock, for the process's
/// life) and the socket bound and listening. A live node on the path makes
/// the claim fail with in_use(); a stale socket of a dead node is replaced.
/// The destructor removes the socket only if it is still ours (same inode).
class control_socket {
public:
  control_socket() = default;
  static control_socket claim(const std::string& path);
  ~control_socket();
  control_socket(control_socket&& other) noexcept;
  control_socket& operator=(control_socket&& other) noexcept;
  control_socket(const control_socket&) = delete;
  control_socket& operator=(const control_socket&) = delete;

  bool listening() const { return fd_ >= 0; }
  /// Another live node serves (or is starting on) this path.
  bool in_use() const { return in_use_; }
  /// Why not listening: "another node is serving P (pid N)", a bind error...
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }
  /// Hands the listening descriptor over (the server owns it from then on).
  int release_fd();

private:
  void reset();
  std::string path_;
  std::string error_;
  bool in_use_ = false;
  int fd_ = -1;
  int lock_fd_ = -1;
  bool bound_ = false;  ///< we created the socket file (unlink it if still ours)
  unsigned long dev_ = 0, ino_ = 0;
};

struct control_options {
  /// A connection must deliver a complete request line within this long
  /// (counted from connect, or from the previous reply).
  std::chrono::milliseconds read_deadline{std::chrono::seconds(5)};
  /// Longest request line accepted, without its newline.
  std::size_t max_line = 1u << 20;
  /// Connections open at once; one more gets a refusal line and is closed.
  std::size_t max_connections = 64;
  /// Threads that run `status` and restart / stop / start (they block on
  /// the node); exec needs none.
  std::size_t status_threads = 2;
  /// Event lines an events follower may fall behind before it is dropped.
  std::size_t follow_backlog = 1024;
};

class control_server {
public:
  /// Claims `path` (control_socket::claim) and serves it.
  control_server(node& n, std::string path, control_options opts = {});
  /// Serves an already claimed socket (claim it before the node starts, so a
  /// second node gives up before it spawns a worker).
  control_server(node& n, control_socket sock, control_options opts = {});
  /// stops serving; in-flight execs are answered to nobody, unless drain()
  /// came first: then it waits up to read_deadline for their replies.
  ~control_server();
  /// For a graceful stop, before node::stop(): from now on requests that
  /// call the node (status, restart / stop / start, events) are answered
  /// shutting_down, and this waits for those running; execs go on, and the
  /// draining pools answer them. Idempotent.
  void drain();
  control_server(const control_server&) = delete;
  control_server& operator=(const control_server&) = delete;

  const std::string& path() const { return sock_.path(); }
  bool listening() const { return impl_ != nullptr; }
  bool in_use() const { return sock_.in_use(); }
  const std::string& error() const { return sock_.error(); }

private:
  struct impl;
  control_socket sock_;
  std::shared_ptr<impl> impl_;
};

/// A failed reply as the control protocol writes it: {"ok": false,
/// "error": {"class": cls, "message": message}}.
json error_reply(const std::string& cls, const std::string& message);

/// Sends one request; returns the reply or {"ok": false, "error": {class,
/// message}}: unavailable when no node answers the connect or no reply comes
/// within `reply_timeout` (0: derived from the request's timeout_ms),
/// protocol_error when the reply is not a JSON object line.
json control_call(const std::string& path, const json& request,
                  std::chrono::milliseconds reply_timeout = std::chrono::milliseconds{0});

/// Sends one request and hands every reply line to `on_line` until it
/// returns false or the node closes the connection (the events op). Returns
/// the last line seen, or a failure as control_call does. Waits without a
/// deadline for lines after the first.
json control_stream(const std::string& path, const json& request,
                    const std::function<bool(const json&)>& on_line);

} // namespace dspex::cli
