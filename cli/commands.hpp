// The dspex executable's subcommands, one file each.
#pragma once

#include <dspex/actors/node.hpp>

#include <caf/actor_system.hpp>

#include <string>

namespace dspex::cli {

/// The demo workload (`dspex run --demo`): sessions create programs and run
/// them concurrently on the mock LM, one worker is killed in the middle, and
/// a table shows what happened. Returns the process exit code.
int run_demo(caf::actor_system& sys, node& n);

/// An actor that writes every supervision event as one JSON line to `path`.
caf::actor spawn_event_log(caf::actor_system& sys, const std::string& path);

/// An actor that logs every supervision event as one line on stderr (log.hpp).
caf::actor spawn_event_logger(caf::actor_system& sys);

/// Prints the tree and pool metrics of `status` for people.
void print_status(const json& status);

} // namespace dspex::cli
