// Rolling reload of a running pool (issue 27, node::reload_pool): under load
// from concurrent clients, a changed handler module and a changed preload
// module are picked up, every request is answered ok, sessions keep their
// programs, and the old fork server goes; a reload whose new code fails to
// import is rolled back with the old code serving on. Real workers, forked
// and spawned.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>
#include <dspex/actors/pool/pool.hpp>

#include "support/load_clients.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <set>
#include <thread>
#include <sys/stat.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

std::string handler_text(const std::string& version) {
  return "import os, time\n"
         "import reload_preload\n"
         "from dspex_worker import command\n"
         "VERSION = '" + version + "'\n"
         "@command('version')\n"
         "def version(args, ctx):\n"
         "    time.sleep(args.get('s', 0))\n"
         "    return {'handler': VERSION, 'preload': reload_preload.VERSION, 'pid': os.getpid()}\n";
}

struct reload_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::string dir;
  std::shared_ptr<node> n;

  explicit reload_fixture(const std::string& start = "fork", int size = 3, int max_overflow = 0) {
    char tmpl[] = "/tmp/dspex-reload-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    write("reload_cmds.py", handler_text("v1"));
    write("reload_preload.py", "VERSION = 'p1'\n");
    auto j = small_tree("pool", size);
    j["root"]["children"][1]["max_overflow"] = max_overflow;
    auto& w = j["root"]["children"][1]["worker"];
    w["start"] = start;
    w["handlers"] = {"reload_cmds"};
    w["handler_paths"] = {dir};
    w["preload"] = {"reload_preload"};
    // No bytecode cache: an edit within the same second and of the same
    // size would otherwise be read from a stale .pyc (docs/operations.md).
    w["env"] = {{"PYTHONDONTWRITEBYTECODE", "1"}};
    n = start_test_node(sys, j);
  }
  ~reload_fixture() {
    if (n)
      n->stop();
    std::system(("rm -rf " + dir).c_str());
  }

  void write(const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
  }
  json pool() { return n->status()["pools"]["default"]; }
  int fork_server_pid() {
    auto pids = tree_os_pids(n->status()["tree"], "fork_server");
    return pids.empty() ? -1 : pids.front();
  }
  // What `version` answers on every worker (asked often enough, with the
  // workers busy, to reach each).
  std::set<std::string> versions(int times = 24) {
    std::set<std::string> seen;
    for (int i = 0; i < times; ++i) {
      auto r = n->execute("version", json{{"s", 0.001}});
      REQUIRE_MESSAGE(r, why(r));
      seen.insert((*r)["handler"].get<std::string>() + "/" + (*r)["preload"].get<std::string>());
    }
    return seen;
  }
};

struct spawn_fixture : reload_fixture {
  spawn_fixture() : reload_fixture("spawn", 2) {}
};

struct overflow_fixture : reload_fixture {
  overflow_fixture() : reload_fixture("fork", 1, 2) {}
};

} // namespace

TEST_SUITE("pool_reload") {

TEST_CASE_FIXTURE(reload_fixture, "a rolling reload under load picks up a changed handler, then a changed preload; every request ok") {
  // A session with a program, made before: it must serve after.
  REQUIRE(n->execute_in_session("s1", "configure_lm", json{{"provider", "mock"}}));
  REQUIRE(n->execute_in_session("s1", "create_program", json{{"id", "p"}, {"signature", "q -> a"}}));
  CHECK(versions() == std::set<std::string>{"v1/p1"});
  auto old_server = fork_server_pid();
  REQUIRE(old_server > 0);
  auto old_workers = tree_os_pids(n->status()["tree"], "/workers/");
  REQUIRE(old_workers.size() == 3);

  load_clients load(*n, 4, "version", json{{"s", 0.002}});
  REQUIRE(load.wait_answers(20));
  write("reload_cmds.py", handler_text("v2"));
  auto r = n->reload_pool("default");
  REQUIRE_MESSAGE(r, why(r));
  CHECK((*r)["reloaded"] == 3);
  CHECK((*r)["surge"] == 1);
  CHECK((*r)["fork_server"]["old_pid"] == old_server);
  auto new_server = (*r)["fork_server"]["new_pid"].get<int>();
  CHECK(new_server != old_server);
  REQUIRE(load.wait_answers(20));

  // The preload module, two at a time.
  write("reload_preload.py", "VERSION = 'p2'\n");
  r = n->reload_pool("default", 2);
  REQUIRE_MESSAGE(r, why(r));
  CHECK((*r)["reloaded"] == 3);
  CHECK((*r)["surge"] == 2);
  REQUIRE(load.wait_answers(20));
  load.stop();
  CHECK_MESSAGE(load.all_ok(), load.tally.dump());

  CHECK(versions() == std::set<std::string>{"v2/p2"});
  // The old servers and workers are gone; the pool has its size again.
  CHECK(wait_until([&] { return all_gone(old_workers) && all_gone({old_server, new_server}); }));
  auto p = pool();
  CHECK(p["workers"] == 3);
  CHECK(p["crashes"] == 0);
  CHECK(p["reloads"]["ok"] == 2);
  CHECK(p["reload"]["state"] == "done");
  CHECK(p["reload"]["replaced"] == 3);
  CHECK(tree_os_pids(n->status()["tree"], "/workers/").size() == 3);
  // The session's program was replayed on the new workers.
  auto out = n->execute_in_session("s1", "execute_program",
                                   json{{"program_id", "p"}, {"inputs", {{"q", "x"}}}});
  CHECK_MESSAGE(out, why(out));
}

TEST_CASE_FIXTURE(reload_fixture, "a reload whose new code fails is rolled back: the old code serves on, nothing fails") {
  auto old_server = fork_server_pid();
  load_clients load(*n, 4, "version", json{{"s", 0.002}});
  REQUIRE(load.wait_answers(20));

  SUBCASE("a handler module that does not import") {
    write("reload_cmds.py", "def broken(:\n");
    auto r = n->reload_pool("default");
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(is(r.error(), errc::init_failed), describe(r.error()));
    CHECK(detail_of(r.error()).find("rolled back") != std::string::npos);
    CHECK(detail_of(r.error()).find("reload_cmds") != std::string::npos);
  }
  SUBCASE("a preload module that raises") {
    write("reload_preload.py", "raise RuntimeError('bad preload')\n");
    auto r = n->reload_pool("default");
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(is(r.error(), errc::init_failed), describe(r.error()));
    CHECK(detail_of(r.error()).find("bad preload") != std::string::npos);
  }
  REQUIRE(load.wait_answers(20));
  load.stop();
  CHECK_MESSAGE(load.all_ok(), load.tally.dump());
  CHECK(versions() == std::set<std::string>{"v1/p1"});
  CHECK(fork_server_pid() == old_server);
  auto p = pool();
  CHECK(p["workers"] == 3);
  CHECK(p["crashes"] == 0);
  CHECK(p["reloads"]["rolled_back"] == 1);
  CHECK(p["reload"]["state"] == "rolled_back");
  CHECK(tree_os_pids(n->status()["tree"], "/workers/").size() == 3);

  // Fixed, the next reload goes through.
  write("reload_cmds.py", handler_text("v3"));
  write("reload_preload.py", "VERSION = 'p3'\n");
  auto r = n->reload_pool("default");
  REQUIRE_MESSAGE(r, why(r));
  CHECK(versions() == std::set<std::string>{"v3/p3"});
}

TEST_CASE_FIXTURE(spawn_fixture, "spawned workers: a reload under load picks up the new handler; a failing one keeps the old workers") {
  load_clients load(*n, 3, "version", json{{"s", 0.002}});
  REQUIRE(load.wait_answers(20));
  write("reload_cmds.py", handler_text("v2"));
  auto r = n->reload_pool("default");
  REQUIRE_MESSAGE(r, why(r));
  CHECK((*r)["reloaded"] == 2);
  CHECK((*r)["fork_server"].empty());
  REQUIRE(load.wait_answers(20));

  write("reload_cmds.py", "def broken(:\n");
  auto bad = n->reload_pool("default");
  REQUIRE_FALSE(bad);
  CHECK(is(bad.error(), errc::init_failed));
  REQUIRE(load.wait_answers(20));
  load.stop();
  CHECK_MESSAGE(load.all_ok(), load.tally.dump());
  CHECK(versions() == std::set<std::string>{"v2/p1"});
  CHECK(pool()["workers"] == 2);
  CHECK(pool()["crashes"] == 0);
}

TEST_CASE_FIXTURE(overflow_fixture, "overflow workers of the old code drain and go; the old fork server goes after them") {
  // 4 clients on 1 worker + 2 overflow: the overflow workers are busy.
  load_clients load(*n, 4, "version", json{{"s", 0.02}});
  REQUIRE(wait_until([&] { return pool()["overflow"] == 2; }));
  auto old_server = fork_server_pid();
  write("reload_cmds.py", handler_text("v2"));
  auto r = n->reload_pool("default");
  REQUIRE_MESSAGE(r, why(r));
  CHECK((*r)["reloaded"] == 1);
  REQUIRE(load.wait_answers(20));
  load.stop();
  CHECK_MESSAGE(load.all_ok(), load.tally.dump());
  CHECK(wait_until([&] { return all_gone({old_server}); }));
  CHECK(pool()["crashes"] == 0);
  CHECK(versions() == std::set<std::string>{"v2/p1"});
}

TEST_CASE_FIXTURE(reload_fixture, "a node stopped during a reload: the reload ends with an error, nothing hangs, no process is left") {
  auto pids = tree_os_pids(n->status()["tree"], "pool_sup");
  std::string phase;
  SUBCASE("while the new fork server imports its preload") {
    write("reload_preload.py", "import time\ntime.sleep(3)\nVERSION = 'p2'\n");
    phase = "starting";
  }
  SUBCASE("while new workers start (two seconds each to import)") {
    write("reload_cmds.py", "import time\ntime.sleep(2)\n" + handler_text("v2"));
    phase = "running";
  }
  caf::expected<json> r = json();
  std::thread reloading([&] { r = n->reload_pool("default"); });
  // Asked of the pool itself: a whole node status is slow under a sanitizer.
  json seen;
  caf::scoped_actor self{sys};
  bool in_phase = wait_until([&] {
    self->request(n->pool("default"), std::chrono::seconds(10), status_atom::value)
      .receive([&](json& st) { seen = st["reload"]; }, [](caf::error&) {});
    return seen.value("state", "") == phase;
  });
  auto during = tree_os_pids(n->status()["tree"], "pool_sup");
  n->stop();
  reloading.join();  // before any REQUIRE: a thread left joinable would end the run
  CHECK_MESSAGE(in_phase, seen.dump());
  CHECK_FALSE(r);
  pids.insert(pids.end(), during.begin(), during.end());
  CHECK(wait_until([&] { return all_gone(pids); }));
}

TEST_CASE_FIXTURE(reload_fixture, "a bad surge or pool is a classified error and changes nothing; reloads back to back all go through") {
  auto old_server = fork_server_pid();
  for (std::size_t bad : {std::size_t{0}, std::size_t{4}}) {
    auto r = n->reload_pool("default", bad);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_request));
    CHECK(detail_of(r.error()).find("surge") != std::string::npos);
  }
  auto r = n->reload_pool("nope");
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::invalid_request));
  CHECK(fork_server_pid() == old_server);
  CHECK(pool()["reloads"]["ok"] == 0);
  // Back to back: the server a reload retired may still be exiting when
  // the next one starts.
  for (int i = 0; i < 3; ++i) {
    auto again = n->reload_pool("default", 3);
    CHECK_MESSAGE(again, why(again));
  }
  CHECK(pool()["reloads"]["ok"] == 3);
  CHECK(fork_server_pid() != old_server);
}

}
