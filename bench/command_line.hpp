// The command line of `dspex-bench` (bench/main.cpp), the benchmark and
// fault-injection executable, kept apart from the shipped `dspex` binary:
//
//   dspex-bench run [options]              dspex against its floors and peers (dspex_bench.hpp)
//   dspex-bench peers [options]            only the floors and Python peers (bench_main.hpp)
//   dspex-bench chaos [options]            seeded fault-injection scenarios (chaos.hpp)
//   dspex-bench supervisor-stop [options]  supervisor stop time against children (supervisor_stop.hpp)
//   dspex-bench start [options]            fork server against spawn: start and recovery (start_bench.hpp)
//   dspex-bench remote [options]           a remote_pool against the same pool locally (remote_bench.hpp)
//   dspex-bench streams [options]          streams, cancellation, asyncio against their floors (stream_bench.hpp)
//   dspex-bench host_calls [options]       handlers' ctx.call against a unary round trip (host_call_bench.hpp)
//
// CLI11 parses every option; `--caf#KEY=VALUE` arguments are taken out
// first and go to CAF (run, chaos, streams and host_calls), as `dspex run` does with its own.
// Parsing is separate from running so the tests check the options without
// measuring anything.
#pragma once

#include <dspex/bench/chaos.hpp>
#include <dspex/bench/dspex_bench.hpp>
#include <dspex/bench/host_call_bench.hpp>
#include <dspex/bench/remote_bench.hpp>
#include <dspex/bench/start_bench.hpp>
#include <dspex/bench/stream_bench.hpp>
#include <dspex/bench/supervisor_stop.hpp>

#include <iosfwd>
#include <string>
#include <variant>

namespace dspex::bench {

/// What a command line asks for: the subcommand and its options (only the
/// chosen subcommand's struct is filled in; the others keep their defaults).
struct bench_command {
  std::string name;  ///< "run", "peers", "chaos" or "supervisor-stop"
  dspex_bench_options run;
  peer_bench_options peers;
  chaos_options chaos;
  supervisor_stop_options supervisor_stop;
  start_bench_options start;
  remote_bench_options remote;
  stream_bench_options streams;
  host_call_bench_options host_calls;
};

/// Parses dspex-bench's argv (argv[0] is the program). Returns the command,
/// or the exit status when parsing already decided it: 0 after --help (the
/// help is on `out`), 2 on a usage error (the message is on `err`).
std::variant<bench_command, int> parse_command_line(int argc, const char* const* argv, std::ostream& out,
                                                    std::ostream& err);

/// dspex-bench's main: parses, then runs the command. Exit status: 0; 1 when
/// a measurement failed (chaos with --assert: a must-be-0 figure was not 0);
/// 2 on a usage error.
int dspex_bench_main(int argc, char** argv);

} // namespace dspex::bench
