// The real dspex binary as a child process of a test: its output lines
// (stdout and stderr) collected, its exit awaited; killed if still running
// when the test is done with it.
#pragma once

#include <dspex/bridge/python_process.hpp>

#include "support/wait.hpp"
#include "test_paths.hpp"

#include <mutex>
#include <string>
#include <vector>

namespace dspex::test {

struct program {
  std::mutex mx;
  std::string out;
  promise_box<bridge::exit_status> exited;
  std::shared_ptr<bridge::python_process> proc;

  program(bridge::io_loop& loop, std::vector<std::string> args) {
    bridge::process_options o;
    o.executable = DSPEX_TEST_CLI;
    o.args = std::move(args);
    o.framed = false;
    o.env = {{"DSPEX_PYTHON_PATH", DSPEX_TEST_PYTHON_DIR}};
    bridge::process_callbacks cbs;
    cbs.on_output = [this](std::string_view l) {
      std::lock_guard<std::mutex> g(mx);
      out.append(l).append("\n");
    };
    cbs.on_exit = [this](bridge::exit_status s) { exited.set(s); };
    proc = bridge::python_process::spawn(loop, o, cbs);
  }
  std::string output() {
    std::lock_guard<std::mutex> g(mx);
    return out;
  }
  ~program() {
    if (!exited.wait(std::chrono::milliseconds(0))) {
      proc->kill();
      exited.wait(std::chrono::seconds(30));
    }
  }
};

} // namespace dspex::test
