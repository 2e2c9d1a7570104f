// The dspex executable's subcommands, one file each.
#pragma once

#include <dspex/actors/network.hpp>
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

/// A node's router over the network (remote_client.cpp): replies as the
/// control socket's ({"ok", "result" | "error"}; status: the status object).
json remote_exec(const std::string& endpoint, const tls_options& tls, const command_request& cmd,
                 const std::string& pool);
json remote_status(const std::string& endpoint, const tls_options& tls);

/// Prints the tree and pool metrics of `status` for people.
void print_status(const json& status);

} // namespace dspex::cli
