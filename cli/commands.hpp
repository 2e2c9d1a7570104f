// The dspex executable's subcommands, one file each.
#pragma once

#include <dspex/actors/remote/network.hpp>
#include <dspex/actors/node/node.hpp>

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
/// A node's router over the network (remote_client.cpp): replies as the
/// control socket's ({"ok", "result" | "error"}; status: the status object).
json remote_exec(const std::string& endpoint, const tls_options& tls, const command_request& cmd,
                 const std::string& pool);
json remote_status(const std::string& endpoint, const tls_options& tls);

/// Prints the tree and pool metrics of `status` for people.
void print_status(const json& status);

// -- operating a running node through its control socket (operate.cpp) --

/// Prints an error reply ({"ok": false, "error": {"class", "message"}}) as
/// "dspex: <class>: <message>" on stderr, the class once; returns 1.
int report_error(const json& reply);

/// `dspex restart|stop|start PATH`: one child of the tree. Returns the exit
/// code (0, or 1 with the node's error on stderr).
int control_child(const std::string& control, const std::string& op, const std::string& path);
/// dspex scale POOL N: the node checks N (a negative one is sent as is and
/// refused there, so every bad size gets the same classified error).
int control_scale(const std::string& control, const std::string& pool, long long size);
/// dspex reload POOL [--surge N]: prints how many workers were replaced and the
/// fork servers' pids; a rolled-back reload is an error with its reason.
int control_reload(const std::string& control, const std::string& pool, long long surge);

/// `dspex status [--json] --watch`: the status again every `interval_ms`,
/// `count` times (0: until interrupted). On a terminal each refresh clears
/// the screen and draws from the top; otherwise the blocks follow one
/// another, separated by a blank line.
int watch_status(const std::string& control, bool as_json, int interval_ms, int count);

/// `dspex exec`'s output: the reply on stdout, {"ok", "result" | "error"},
/// indented (`compact`: one line). Returns the exit code, 0 or 1.
int print_reply(const json& reply, bool compact);

/// `dspex exec --stream`: sends `request` (an exec with "stream": true),
/// prints each chunk's data as one line of JSON as it arrives, then the
/// reply as print_reply does. Returns the exit code.
int stream_exec(const std::string& control, const json& request, bool compact);

/// `dspex events --follow`: prints each supervision event of the running
/// node as one JSON line as it happens; stops after `count` events (0:
/// never) or when the node closes the stream.
int follow_events(const std::string& control, int count);

} // namespace dspex::cli
