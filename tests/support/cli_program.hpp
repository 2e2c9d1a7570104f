// The real dspex binary (or another program: `executable`) as a child of a
// test: its stdout and stderr lines collected, its exit awaited
// (test_cli.cpp, test_metrics.cpp, ...).
#pragma once

#include <dspex/bridge/python_process.hpp>

#include "support/wait.hpp"
#include "test_paths.hpp"

#include <doctest/doctest.h>

#include <mutex>
#include <string>
#include <vector>

namespace dspex::test {

struct program {
  std::mutex mx;
  std::vector<std::string> lines;
  promise_box<bridge::exit_status> exited;
  std::shared_ptr<bridge::python_process> proc;

  program(bridge::io_loop& loop, std::vector<std::string> args,
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
  /// The first line containing `part`, or "".
  std::string line_with(const std::string& part) {
    std::lock_guard<std::mutex> g(mx);
    for (auto& l : lines)
      if (l.find(part) != std::string::npos)
        return l;
    return {};
  }
};

/// Runs a short command to completion; returns its output.
inline std::string run(bridge::io_loop& loop, std::vector<std::string> args, int* code = nullptr) {
  program p(loop, std::move(args));
  REQUIRE(p.exited.wait(std::chrono::seconds(60)));
  if (code)
    *code = p.exited.get().code();
  return p.output();
}

} // namespace dspex::test
