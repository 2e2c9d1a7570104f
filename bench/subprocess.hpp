// Child processes for the benchmarks: the bare loop's Python workers, the
// Python peers (mp_peer.py) and gnuplot. Deliberately not bridge's
// python_process: the bare loop is the floor dspex is measured against, so
// it must not run on the machinery it measures (no io_loop, no asio, no
// actors): plain fork/exec, blocking pipes, one waitpid per child.
//
// The same hygiene as the bridge (docs/architecture.md, "No orphans"):
// - every pipe is created close-on-exec (pipe2), and the child closes every
//   descriptor above 2 before exec, so no child holds another's pipe;
// - the child gets its own process group and PR_SET_PDEATHSIG(SIGKILL):
//   a host killed by SIGKILL leaves no child behind. Linux fires the death
//   signal when the *thread* that forked exits, so spawn from a thread that
//   outlives the child (the bench spawns from its calling thread);
// - exactly one reaper: the child_process object; its destructor stops and
//   reaps a child still running. Straggling members of the child's process
//   group (mp_peer's pool processes) are SIGKILLed before the leader is
//   reaped, while its pid (the group id) cannot yet be reused.
#pragma once

#include <chrono>
#include <csignal>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace dspex::bench {

struct spawn_spec {
  std::vector<std::string> argv;  ///< argv[0]: a path, or a name looked up in PATH
  std::vector<std::pair<std::string, std::string>> env;  ///< set on top of the host's environment
  bool pipe_stdin = true;   ///< false: the child reads /dev/null
  bool pipe_stdout = true;  ///< false: the child's stdout goes to /dev/null
  enum class stderr_mode { inherit, null, merge } stderr_to = stderr_mode::inherit;
  bool batch_scheduling = false;  ///< bridge::enter_batch_scheduling in the child
};

/// A spawned child (move-only). Not thread-safe: one owner at a time (it may
/// be handed to another thread, which then does the I/O).
class child_process {
public:
  child_process() = default;
  child_process(child_process&& other) noexcept;
  child_process& operator=(child_process&& other) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  /// Stops (stop()) a child that was not reaped yet.
  ~child_process();

  /// Forks and execs. Throws std::system_error when the program cannot be
  /// found or exec fails (reported through a close-on-exec error pipe, so
  /// this returns only once exec has happened).
  static child_process spawn(const spawn_spec& spec);

  pid_t pid() const noexcept { return pid_; }
  int in_fd() const noexcept { return in_fd_; }    ///< write end of the child's stdin, or -1
  int out_fd() const noexcept { return out_fd_; }  ///< read end of the child's stdout, or -1
  bool reaped() const noexcept { return reaped_; }
  int raw_status() const noexcept { return status_; }  ///< waitpid status, once reaped

  void close_stdin();
  void close_stdout();

  /// True once the child has exited (it stays unreaped: the pid is kept).
  bool has_exited();

  /// Waits up to `limit` for the child to exit; when it did, kills the rest
  /// of its process group and reaps it. Never signals a running child.
  bool wait_for(std::chrono::milliseconds limit);

  /// Closes stdin (a worker exits on EOF), waits `grace`, then SIGKILLs the
  /// process group and reaps. Returns the raw wait status.
  int stop(std::chrono::milliseconds grace = std::chrono::milliseconds(2000));

  /// Sends `sig` to the child's whole process group unless it was reaped.
  void signal_group(int sig);

private:
  void reap_now();
  void close_fds();

  pid_t pid_ = -1;
  int in_fd_ = -1;
  int out_fd_ = -1;
  bool reaped_ = true;
  int status_ = 0;
};

struct command_result {
  int raw_status = 0;
  bool timed_out = false;  ///< the deadline passed and the process group was killed
  std::string output;      ///< everything the child wrote to stdout (and stderr when merged)
  bool succeeded() const noexcept;  ///< exited with code 0 within the deadline
  std::string describe() const;     ///< "exit code 3", "signal 9", "timed out"
};

/// Runs a command to completion with /dev/null as stdin, capturing stdout.
/// At `timeout` the child's process group is SIGKILLed. Throws
/// std::system_error when it cannot be started.
command_result run_command(spawn_spec spec, std::chrono::milliseconds timeout);

/// The full path of `name` (as execvp would find it), or "" when absent.
std::string find_in_path(const std::string& name);

/// Writes all of `data`; false on EPIPE or another error (errno kept).
bool write_all(int fd, const char* data, std::size_t n);

/// Blocks SIGPIPE in the calling thread for its lifetime, so a write to a
/// dead child's pipe returns EPIPE instead of killing the host; a SIGPIPE
/// left pending is consumed before the old mask is restored.
class sigpipe_block {
public:
  sigpipe_block();
  ~sigpipe_block();
  sigpipe_block(const sigpipe_block&) = delete;
  sigpipe_block& operator=(const sigpipe_block&) = delete;

private:
  sigset_t old_;
  bool was_blocked_ = false;
};

} // namespace dspex::bench
