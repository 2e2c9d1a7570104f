// A supervised OS program without protocol (the config's "process" node, as
// a supervisord program): the actor lives as long as the program. Exit code
// 0 is a normal exit, any other code or a signal an abnormal one, so OTP
// restart types apply. A shutdown request runs the staged stop (EOF,
// SIGTERM, SIGKILL). Output lines go to the host's stderr with the id.
#pragma once

#include <dspex/bridge/io_loop.hpp>

#include <caf/actor.hpp>
#include <caf/local_actor.hpp>

#include <chrono>
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
  std::chrono::milliseconds stop_grace{1000};
  std::chrono::milliseconds term_grace{1000};
};

caf::actor spawn_os_process(caf::local_actor* ctx, std::shared_ptr<bridge::io_loop> loop,
                            os_process_config cfg);

} // namespace dspex
