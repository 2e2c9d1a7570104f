// Atoms and message types shared by the domain actors. CAF 0.17 atoms hold
// at most 10 characters; types that cross actors are declared here once.
#pragma once

#include <caf/allowed_unsafe_message_type.hpp>
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

// -- worker internals (from the io thread to the worker actor) ---------------
using frame_atom = caf::atom_constant<caf::atom("frame")>;
using proto_err_atom = caf::atom_constant<caf::atom("protoerr")>;
using proc_exit_atom = caf::atom_constant<caf::atom("procexit")>;
using output_atom = caf::atom_constant<caf::atom("output")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using init_atom = caf::atom_constant<caf::atom("init")>;

/// One command for a worker. A zero timeout means the worker's default.
struct command_request {
  std::string command;
  json args = json::object();
  std::optional<std::string> session_id;
  std::chrono::milliseconds timeout{0};
};

} // namespace dspex

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(nlohmann::json)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::command_request)
