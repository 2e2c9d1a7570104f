// Supervision events as JSON lines: the one form shared by `dspex run
// --events FILE` and the control socket's events op (`dspex events
// --follow`). Fields:
//   ts, event, path, child,
//   os_pid     when an OS process backs the child (from the event itself),
//   reason     on exits, failed starts and supervisor stops: normal |
//              shutdown | killed | crash,
//   exit_code  or signal {"number": 9, "name": "SIGKILL"}, when the child's
//              process ended and its exit reason says how,
//   detail     plain text: "signal 9 (SIGKILL)", "exit code 3", or the
//              reason's own detail.
#pragma once

#include <dspex/actors/node/messages.hpp>
#include <dspex/supervision/events.hpp>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <functional>
#include <string>

namespace dspex::cli {

json event_json(const supervision::supervision_event& ev);

/// An actor that hands each supervision event it receives to `sink` as one
/// JSON line (newline included), on the actor's thread: keep `sink` short.
caf::actor spawn_event_forwarder(caf::actor_system& sys, std::function<void(std::string)> sink);

} // namespace dspex::cli
