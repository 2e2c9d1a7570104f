// An actor system of its own for every test case (no state shared between
// tests), on the shipped configuration (system_config.hpp), with a scoped
// actor for blocking requests and the io_loop workers share.
#pragma once

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/process/detail/fork_server_child.hpp>
#include <dspex/actors/pool/worker.hpp>
#include <dspex/bridge/io_loop.hpp>

#include <caf/all.hpp>

#include "system_config.hpp"
#include "test_paths.hpp"

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace dspex::test {

using namespace std::chrono_literals;

struct actor_fixture {
  system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<bridge::io_loop> loop = io_loop_for(sys);
  caf::scoped_actor self{sys};
  std::vector<caf::actor> owned;  // stopped at the end of the test
  // Workers on their own fork from this when the start method is fork (a
  // pool has its own, under its supervisor).
  std::shared_ptr<bridge::fork_server_slot> forker;

  ~actor_fixture() {
    for (auto& a : owned)
      self->send_exit(a, caf::exit_reason::kill);
    owned.clear();
    // The workers' configs share the slot and may outlive the loop: the
    // server itself is dropped here, while the loop still runs.
    if (forker)
      forker->set(nullptr);
  }

  /// The start method under test: DSPEX_TEST_START=spawn|fork (fork, the
  /// default, when unset). CTest runs the worker and pool suites with both.
  static std::string test_start() {
    auto v = std::getenv("DSPEX_TEST_START");
    return v && std::string(v) == "spawn" ? "spawn" : "fork";
  }

  /// A worker config for the in-tree Python package, fault injection on.
  static worker_config test_worker_config(std::string id = "w1") {
    worker_config c;
    c.id = std::move(id);
    c.python_path = DSPEX_TEST_PYTHON_DIR;
    c.fault_injection = true;
    c.init_timeout = 20s;
    c.request_timeout = 20s;
    c.stop_grace = 2s;
    c.term_grace = 1s;
    c.start = test_start();
    return c;
  }

  caf::actor spawn(worker_config c) {
    if (c.start == "fork" && !c.forker && c.module == "dspex_worker") {
      if (!forker) {
        forker = std::make_shared<bridge::fork_server_slot>();
        forker->set(bridge::fork_server::start(*loop, fork_server_options_for(c), {}));
      }
      c.forker = forker;
    }
    auto w = spawn_worker(sys, loop, std::move(c));
    owned.push_back(w);
    self->monitor(w);
    return w;
  }

  /// Waits for the worker's init handshake; returns its error if it failed.
  caf::error await_ready(const caf::actor& w) {
    caf::error result;
    self->request(w, caf::infinite, ready_atom::value)
      .receive([] {}, [&](caf::error& e) { result = std::move(e); });
    return result;
  }

  caf::expected<json> exec(const caf::actor& target, std::string command, json args = json::object(),
                           std::chrono::milliseconds timeout = 0ms,
                           std::optional<std::string> session = std::nullopt) {
    caf::expected<json> result{caf::error{}};
    auto req = make_command(std::move(command), std::move(args), std::move(session), timeout);
    self->request(target, std::chrono::seconds(60), exec_atom::value, std::move(req))
      .receive([&](json& j) { result = std::move(j); },
               [&](caf::error& e) { result = std::move(e); });
    return result;
  }

  json stats(const caf::actor& target) {
    json out;
    self->request(target, std::chrono::seconds(30), stats_atom::value)
      .receive([&](json& j) { out = std::move(j); }, [&](caf::error&) {});
    return out;
  }

  /// The exit reason of a monitored actor (waits for its down message).
  caf::error await_down(const caf::actor& a, std::chrono::seconds limit = 30s) {
    caf::error reason = caf::sec::request_timeout;
    bool done = false;
    while (!done) {
      bool got = false;
      self->receive(
        [&](caf::down_msg& m) {
          got = true;
          if (m.source == a.address()) {
            reason = std::move(m.reason);
            done = true;
          }
        },
        caf::after(limit) >> [&] { done = true; });
      (void)got;
    }
    for (auto it = owned.begin(); it != owned.end(); ++it)
      if (*it == a) {
        owned.erase(it);
        break;
      }
    return reason;
  }
};

} // namespace dspex::test
