// The real dspex binary as a child process of a test: its output collected
// line by line, its exit awaited. A child still running when the test ends
// is killed and reaped, so a failing assertion never leaves a node behind.
#pragma once

#include <dspex/bridge/python_process.hpp>

#include "support/wait.hpp"
#include "test_paths.hpp"

#include <doctest/doctest.h>

#include <csignal>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace dspex::test {

struct cli_process {
  std::mutex mx;
  std::vector<std::string> lines_;
  promise_box<bridge::exit_status> exited;
  std::shared_ptr<bridge::python_process> proc;

  /// `env` is added to the test's own environment (NOTIFY_SOCKET, ...).
  /// `executable`: another real program the test runs the same way (prometheus).
  cli_process(bridge::io_loop& loop, std::vector<std::string> args,
              std::vector<std::pair<std::string, std::string>> env = {},
              std::string executable = DSPEX_TEST_CLI) {
    bridge::process_options o;
    o.executable = std::move(executable);
    o.args = std::move(args);
    o.framed = false;
    o.env = {{"DSPEX_PYTHON_PATH", DSPEX_TEST_PYTHON_DIR}};
    o.env.insert(o.env.end(), env.begin(), env.end());
    bridge::process_callbacks cbs;
    cbs.on_output = [this](std::string_view l) {
      std::lock_guard<std::mutex> g(mx);
      lines_.emplace_back(l);
    };
    cbs.on_exit = [this](bridge::exit_status s) { exited.set(s); };
    proc = bridge::python_process::spawn(loop, o, cbs);
  }
  cli_process(const cli_process&) = delete;
  cli_process& operator=(const cli_process&) = delete;

  ~cli_process() {
    if (!exited.wait(std::chrono::milliseconds(0))) {
      proc->kill();
      exited.wait(std::chrono::seconds(30));
    }
  }

  /// Stops a node still running as a service manager would: SIGCONT (it
  /// may be stopped), SIGTERM, then SIGKILL after 30 s; waits for the exit.
  void stop() {
    if (exited.wait(std::chrono::milliseconds(0)))
      return;
    proc->signal(SIGCONT);
    proc->signal(SIGTERM);
    if (!exited.wait(std::chrono::seconds(30)))
      proc->kill();
    exited.wait(std::chrono::seconds(30));
  }

  /// Everything printed so far (stdout and stderr), one line per line.
  std::string output() {
    std::lock_guard<std::mutex> g(mx);
    std::string all;
    for (auto& l : lines_)
      all.append(l).append("\n");
    return all;
  }

  /// The first line containing `part`, or "".
  std::string line_with(const std::string& part) {
    std::lock_guard<std::mutex> g(mx);
    for (auto& l : lines_)
      if (l.find(part) != std::string::npos)
        return l;
    return {};
  }

  std::vector<std::string> lines() {
    std::lock_guard<std::mutex> g(mx);
    return lines_;
  }
};

/// Runs a short dspex command to completion; its output, and its exit code
/// in `*code`.
inline std::string run_cli(bridge::io_loop& loop, std::vector<std::string> args,
                           int* code = nullptr) {
  cli_process p(loop, std::move(args));
  REQUIRE(p.exited.wait(std::chrono::seconds(60)));
  if (code)
    *code = p.exited.get().code();
  return p.output();
}

} // namespace dspex::test
