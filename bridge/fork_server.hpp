// The host's side of a fork server (python/dspex_worker/fork_server.py): one
// warm, preloaded Python process per pool that forks workers on request.
//
// - start() spawns it as a plain python_process (so it gets the parent-death
//   signal, its own process group and one pidfd reaper, as every child does)
//   with one end of a SOCK_SEQPACKET socketpair as its fd 3, and waits for
//   its "ready" (the preload may take seconds; it blocks the calling thread,
//   a supervisor's start function, that long).
// - fork_worker() sends the worker's three pipe ends (SCM_RIGHTS) and waits
//   for the pid: a local round trip plus one fork, about a millisecond, on
//   the calling thread (a supervisor running a worker's start function). The
//   io thread is never blocked: it only reads the socket.
// - The server is the workers' parent and reaps them; it relays each raw
//   wait status, which reaches the worker's on_exit exactly as a spawned
//   process's would. When the server itself dies, its workers die with it
//   (parent-death signal); each one still gets its on_exit, with SIGKILL,
//   once its pidfd shows it is gone.
#pragma once

#include <dspex/bridge/exit_status.hpp>
#include <dspex/bridge/io_loop.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace dspex::bridge {

class python_process;

struct fork_server_options {
  std::string python = "python3";
  std::vector<std::pair<std::string, std::string>> env;  ///< PYTHONPATH and the workers' env
  std::string run_id;                  ///< on its command line (and its children's)
  std::vector<std::string> preload;    ///< modules imported once
  std::string label = "fork_server";   ///< prefix of its output lines
  std::chrono::milliseconds ready_timeout{60000};
  /// The server runs under SCHED_BATCH, and so every child it forks.
  bool batch_scheduling = false;
};

/// Why a fork server did not start: its own message (a preload that failed
/// or left threads running), or the exit status.
struct fork_server_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class fork_server : public std::enable_shared_from_this<fork_server> {
public:
  /// Spawns the server and waits until it is ready. Throws fork_server_error
  /// (or std::system_error when python cannot be started). `on_exit` fires
  /// once, on the io thread, when the server process ends.
  static std::shared_ptr<fork_server> start(io_loop& loop, fork_server_options opts,
                                            std::function<void(exit_status)> on_exit);

  ~fork_server();

  pid_t pid() const noexcept;

  /// Forks a worker with `argv` (the worker's arguments, after
  /// "-m dspex_worker") and `env` on top of the server's; `in_fd`, `out_fd`
  /// and `err_fd` become its fds 0, 1 and 2 (the caller keeps its copies and
  /// closes them afterwards). `on_exit` gets the worker's raw wait status,
  /// on the io thread, exactly once. Returns the pid; throws
  /// fork_server_error when the server is gone or refuses, or does not answer
  /// within `timeout`. Any thread but the io thread.
  pid_t fork_worker(const std::vector<std::string>& argv,
                    const std::vector<std::pair<std::string, std::string>>& env, int in_fd,
                    int out_fd, int err_fd, std::function<void(pid_t)> on_forked,
                    std::function<void(exit_status)> on_exit,
                    std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));

  /// True until the server process ended.
  bool alive() const noexcept;

  /// Asks the server to stop (closes our end of the socket: EOF); its
  /// workers die with it. on_exit reports the end.
  void stop();

  /// SIGKILLs the server (tests, and the owner's last word).
  void kill();

  struct impl;

private:
  fork_server() = default;
  std::shared_ptr<impl> impl_;
  // Held here, not in impl: impl lives on in io-thread handlers, and a
  // process handle dropped there (as the io_context is destroyed) would
  // post to a loop that is going away.
  std::shared_ptr<python_process> proc_;
};

/// The current fork server of one pool, shared by its supervisor's children
/// (they restart independently): the fork-server child sets it, workers
/// fork through whatever it holds when they start.
class fork_server_slot {
public:
  std::shared_ptr<fork_server> get() const {
    std::lock_guard<std::mutex> g(mx_);
    return fs_;
  }
  void set(std::shared_ptr<fork_server> fs) {
    std::lock_guard<std::mutex> g(mx_);
    fs_ = std::move(fs);
  }
  /// Clears the slot if it still holds `fs` (a newer server stays).
  void clear(const fork_server* fs) {
    std::lock_guard<std::mutex> g(mx_);
    if (fs_.get() == fs)
      fs_.reset();
  }

private:
  mutable std::mutex mx_;
  std::shared_ptr<fork_server> fs_;
};

} // namespace dspex::bridge
