// The real dspex binary as a child of the test: its output lines kept, its
// exit awaited, signals sent to it. Reaped through bridge::python_process
// (a pidfd), and killed with the test process (parent-death signal).
#pragma once

#include <dspex/bridge/python_process.hpp>

#include "support/wait.hpp"
#include "test_paths.hpp"

#include <doctest/doctest.h>

#include <mutex>
#include <string>
#include <vector>

namespace dspex::test {

struct cli_program {
  std::mutex mx;
  std::vector<std::string> lines;
  promise_box<bridge::exit_status> exited;
  std::shared_ptr<bridge::python_process> proc;

  cli_program(bridge::io_loop& loop, std::vector<std::string> args) {
    bridge::process_options o;
    o.executable = DSPEX_TEST_CLI;
    o.args = std::move(args);
    o.framed = false;
    o.env = {{"DSPEX_PYTHON_PATH", DSPEX_TEST_PYTHON_DIR}};
    bridge::process_callbacks cbs;
    cbs.on_output = [this](std::string_view l) {
      std::lock_guard<std::mutex> g(mx);
      lines.emplace_back(l);
    };
    cbs.on_exit = [this](bridge::exit_status s) { exited.set(s); };
    proc = bridge::python_process::spawn(loop, o, cbs);
  }
  std::string output() {
    std::lock_guard<std::mutex> g(mx);
    std::string all;
    for (auto& l : lines)
      all += l + "\n";
    return all;
  }
};

/// Runs a short command to completion; its output (stdout and stderr).
inline std::string run_cli(bridge::io_loop& loop, std::vector<std::string> args,
                           int* code = nullptr) {
  cli_program p(loop, std::move(args));
  REQUIRE(p.exited.wait(std::chrono::seconds(60)));
  if (code)
    *code = p.exited.get().code();
  return p.output();
}

} // namespace dspex::test
