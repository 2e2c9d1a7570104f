// A supervised OS program without protocol (the config's "process" node, as
// a supervisord program): the actor lives as long as the program. Exit code
// 0 is a normal exit, any other code or a signal an abnormal one, so OTP
// restart types apply. Output lines go to the host's stderr with the id.
//
// Stopping, as OTP's supervisor stops a worker: the supervisor's shutdown
// request sends the program `stop_signal` (SIGTERM) at once; a program that
// exits before the child's shutdown timeout ends with reason shutdown (the
// reason it was given), whatever its exit status. When the timeout expires
// the supervisor kills the actor (reason killed), and dropping the process
// handle SIGKILLs the program; brutal_kill does that at once. Exit reasons
// carry the exit status (process_link.hpp), so events show exit_code or
// signal.
#pragma once

#include <dspex/bridge/io_loop.hpp>

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>

#include <csignal>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dspex {

struct os_process_config {
  std::string id;
  std::vector<std::string> command;  ///< program and arguments
  std::vector<std::pair<std::string, std::string>> env;
  std::string cwd;
  int stop_signal = SIGTERM;         ///< sent when asked to stop
};

/// Spawns the program (at once, from the calling actor's thread), then the
/// actor that owns it, and reports the pid to `ctx` when it is a supervisor
/// running this as a start function (report_os_pid). A program that cannot
/// be started gives an actor that exits at once with init_failed.
caf::actor spawn_os_process(caf::local_actor* ctx, std::shared_ptr<bridge::io_loop> loop,
                            os_process_config cfg);

} // namespace dspex
