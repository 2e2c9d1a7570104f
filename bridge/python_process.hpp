// One OS process speaking the framed protocol over its stdin/stdout, driven
// entirely from the shared io_loop thread. Despite the name it runs any
// command; "python" because that is what a worker runs.
//
// Guarantees:
// - Pipes are close-on-exec, so a child never holds another child's pipe
//   and every worker sees EOF when its own input closes.
// - The child gets PR_SET_PDEATHSIG(SIGKILL) and its own process group: a
//   host killed by SIGKILL leaves no worker behind, and a terminal's Ctrl-C
//   reaches the host only, which then stops its workers in order.
// - Exactly one reaper: a pidfd watched on the loop; the raw wait status
//   tells an exit code from a signal. Boost.Process's own wait/exit machinery
//   is never used, and the child object is detached.
// - on_exit fires exactly once, after every frame the process wrote has been
//   delivered through on_frame (or after a short grace when a grandchild
//   keeps the pipe open).
// - Destroying the last handle of a live process kills and reaps it.
// - Nothing it starts outlives it: it runs in a scope of its own
//   (process_scope.hpp), swept once it is reaped, before on_exit fires.
//
// Every callback runs on the loop thread; keep them short (forward to an actor).
#pragma once

#include <dspex/bridge/exit_status.hpp>
#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/io_loop.hpp>
#include <dspex/bridge/protocol.hpp>

#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace dspex::bridge {

struct process_options {
  std::string executable;              ///< path or a name looked up in PATH
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;  ///< set on top of the host's environment
  std::string working_dir;             ///< empty: the host's
  std::size_t max_frame_bytes = default_max_frame_bytes;
  /// Prefix of forwarded output lines ("[label] line"); empty: the
  /// executable and the pid.
  std::string label;
  /// false: the process speaks no protocol (a supervised plain program);
  /// its stdout is forwarded like stderr.
  bool framed = true;
  /// Descriptors that become the child's fds 3, 4, ... (spawn only; the
  /// originals may be close-on-exec, the copies are not).
  std::vector<int> pass_fds;
  /// The child runs under SCHED_BATCH (see enter_batch_scheduling).
  bool batch_scheduling = false;
  /// Every process it starts is killed once it is reaped (process_scope.hpp).
  bool contain = true;
};

struct process_callbacks {
  std::function<void(std::string body)> on_frame;
  /// The stream is broken (oversized frame, or EOF inside a frame); no more
  /// frames follow. The process keeps running; the owner decides its fate.
  std::function<void(protocol_error)> on_protocol_error;
  /// One line the process wrote to stderr (or to stdout when not framed),
  /// without its newline. Unset: forwarded to the host's stderr with the
  /// label of process_options.
  std::function<void(std::string_view line)> on_output;
  std::function<void(exit_status)> on_exit;
};

/// A staged stop: optionally a last frame (the "shutdown" command), then
/// close stdin, wait `grace`; `term_signal` (SIGTERM), wait `term_grace`;
/// SIGKILL. Each step is skipped once the process has exited. grace 0 sends
/// the signal at once (a plain program is asked to stop as OTP asks a
/// child); term_grace no_kill never sends SIGKILL (the owner's own deadline,
/// or none, decides).
struct stop_plan {
  std::optional<std::string> ask_frame_body;
  std::chrono::milliseconds grace{2000};
  std::chrono::milliseconds term_grace{1000};
  int term_signal = SIGTERM;

  static constexpr std::chrono::milliseconds no_kill = std::chrono::milliseconds::max();
};

class fork_server;

class python_process : public std::enable_shared_from_this<python_process> {
public:
  /// Spawns on the loop thread. Throws std::system_error when the program
  /// cannot be started.
  static std::shared_ptr<python_process> spawn(io_loop& loop, process_options opts,
                                               process_callbacks cbs);

  /// The same process, forked by a warm fork server instead of exec'd
  /// (`-m dspex_worker` is implied: opts.args are the worker's arguments;
  /// executable and working_dir are the server's). Pipes, frames, output,
  /// stop plans and on_exit behave as for spawn; the server is the parent
  /// and relays the raw wait status. Blocks the calling thread for the
  /// round trip (about a millisecond); never call it on the io thread.
  /// Throws std::runtime_error (fork_server_error) when the server refuses
  /// or is gone.
  static std::shared_ptr<python_process> fork_from(io_loop& loop, fork_server& server,
                                                   process_options opts, process_callbacks cbs,
                                                   std::chrono::milliseconds timeout);

  ~python_process();

  pid_t pid() const noexcept { return pid_; }
  /// Its scope (process_scope.hpp); empty when not contained.
  const std::string& scope() const noexcept;

  /// Encodes and queues one frame (thread-safe). Bodies above
  /// max_frame_bytes are refused with false and nothing is written.
  bool send(std::string body);

  /// Queues one frame already encoded (header and body, as
  /// append_request_frame writes it); the same refusal as send.
  bool send_frame(std::string frame);

  /// Whether send_frame would take a frame of `frame_bytes` (header included).
  bool frame_fits(std::size_t frame_bytes) const noexcept;

  /// Closes the process's stdin (thread-safe): a worker exits on EOF.
  void close_input();

  /// Sends a signal unless the process was already reaped (thread-safe).
  void signal(int sig);

  /// Runs the stop plan (thread-safe); on_exit reports the end.
  void stop(stop_plan plan);

  /// Kills at once (SIGKILL); on_exit reports the end.
  void kill() { signal(9); }

  /// True once the process was reaped.
  bool reaped() const noexcept;

  struct impl;

private:
  python_process() = default;
  std::shared_ptr<impl> impl_;
  pid_t pid_ = -1;
};

} // namespace dspex::bridge
