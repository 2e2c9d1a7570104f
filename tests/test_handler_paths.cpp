// Making handler modules importable: worker.handler_paths, the config's
// env.PYTHONPATH (added to the path, never in place of the worker package's
// directory), node_options.python_path beside the config's python_path; and
// a handler module that does not import failing the start with one line
// naming it (not a restart loop of tracebacks). With real `dspex run`
// processes and node::start, for both start methods.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/pool/worker.hpp>

#include "support/cli_process.hpp"
#include "support/scratch_dir.hpp"
#include "support/system_config.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// A handler module that imports a helper from another directory and reports
// where both came from and the import path it runs with.
const char* handler_source = R"(import sys
import dspex_worker
import my_helper
from dspex_worker import command

@command("where")
def where(args, ctx):
    return {"module": __file__, "helper": my_helper.__file__,
            "package": dspex_worker.__file__, "sys_path": sys.path}
)";

std::string fresh_dir(const std::string& name) {
  return scratch_path("hp-" + name);
}

std::string file_in(const std::string& dir, const std::string& name, const std::string& text) {
  auto path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size()))
    ++n;
  return n;
}

std::ptrdiff_t index_of(const json& list, const std::string& item) {
  for (std::size_t i = 0; i < list.size(); ++i)
    if (list[i] == item)
      return static_cast<std::ptrdiff_t>(i);
  return -1;
}

// The default tree with a pool of 2 started `start`, loading `handlers`.
json tree_with(const std::string& start, std::vector<std::string> handlers) {
  auto j = default_config();
  j["root"]["children"][1]["size"] = 2;
  auto& w = j["root"]["children"][1]["worker"];
  w["start"] = start;
  w["handlers"] = handlers;
  return j;
}

const std::string missing_line =
  "handler module 'my_cmdz' failed to import: ModuleNotFoundError: No module named 'my_cmdz'";

} // namespace

TEST_SUITE("handler_paths") {

TEST_CASE("worker_environment: the config's python_path, the package, handler_paths, env.PYTHONPATH, then the host's") {
  worker_config w;
  w.python_path = "/cfg";
  w.package_path = "/pkg";
  w.handler_paths = {"/h1", "/h2"};
  w.env = {{"A", "1"}, {"PYTHONPATH", "/e1:/e2::/h1"}, {"B", "2"}};
  auto env = worker_environment(w);
  REQUIRE(env.size() == 4);
  CHECK(env[0].first == "PYTHONPATH");
  CHECK(env[0].second.rfind("/cfg:/pkg:/h1:/h2:/e1:/e2", 0) == 0);  // /h1 once
  CHECK(env[1] == std::pair<std::string, std::string>{"PYTHONUNBUFFERED", "1"});
  CHECK(env[2] == std::pair<std::string, std::string>{"A", "1"});
  CHECK(env[3] == std::pair<std::string, std::string>{"B", "2"});

  // Without a package_path (no node option) the located package is there.
  worker_config located;
  CHECK(worker_environment(located)[0].second.rfind(locate_python_dir(), 0) == 0);
}

TEST_CASE("config: handler_paths is a list of directories; a pool's default_lm refuses unknown keys") {
  auto j = tree_with("fork", {"my_cmds"});
  j["root"]["children"][1]["worker"]["handler_paths"] = {"/a", "rel/b"};
  auto ok = parse_config(j);
  REQUIRE_MESSAGE(ok, why(ok));

  j["root"]["children"][1]["worker"]["handler_paths"] = {"/a:/b"};
  auto colon = parse_config(j);
  REQUIRE_FALSE(colon);
  CHECK(describe(colon.error()).find("worker.handler_paths[0]") != std::string::npos);
  j["root"]["children"][1]["worker"]["handler_paths"] = "/a";
  CHECK_FALSE(parse_config(j));

  auto lm = tree_with("fork", {});
  lm["root"]["children"][1]["default_lm"] = {{"provider", "openai"}, {"api_key", "sk-SECRET"},
                                             {"api_base", "http://127.0.0.1:9/v1"}};
  auto bad = parse_config(lm);
  REQUIRE_FALSE(bad);
  auto text = describe(bad.error());
  CHECK(text.find("default_lm.api_base: unknown key") != std::string::npos);
  CHECK(text.find("base_url") != std::string::npos);
  CHECK(text.find("sk-SECRET") == std::string::npos);
}

TEST_CASE("dspex run: handler_paths and env.PYTHONPATH load a handler module; dspex_worker stays importable") {
  for (std::string start : {"fork", "spawn"}) {
    CAPTURE(start);
    auto handlers = fresh_dir("handlers");
    auto helpers = fresh_dir("helpers");
    auto module = file_in(handlers, "my_cmds.py", handler_source);
    auto helper = file_in(helpers, "my_helper.py", "VALUE = 1\n");
    auto dir = fresh_dir("run");
    auto j = tree_with(start, {"my_cmds"});
    auto& w = j["root"]["children"][1]["worker"];
    w["handler_paths"] = {handlers};
    // What the newcomer wrote: a PYTHONPATH of its own, no worker package in it.
    w["env"] = {{"PYTHONPATH", "/nonexistent/dspex-test:" + helpers}};
    auto config = file_in(dir, "tree.json", j.dump(2));
    auto sock = dir + "/control.sock";

    bridge::io_loop loop;
    cli_process node(loop, {"run", config, "--control", sock});
    REQUIRE_MESSAGE(wait_until([&] {
      auto s = json::parse(run_cli(loop, {"status", "--json", "--control", sock}), nullptr, false);
      return (s.is_object() && s.contains("pools") && s["pools"]["default"]["workers"] == 2)
             || node.exited.wait(0ms);
    }, 60s), node.output());
    REQUIRE_MESSAGE(!node.exited.wait(0ms), node.output());

    int code = -1;
    auto out = run_cli(loop, {"exec", "where", "--control", sock}, &code);
    CHECK_MESSAGE(code == 0, out);
    auto reply = json::parse(out, nullptr, false);
    REQUIRE_MESSAGE(reply.is_object(), out);
    auto r = reply["result"];
    CHECK(r["module"] == module);
    CHECK(r["helper"] == helper);
    CHECK(r["package"] == std::string(DSPEX_TEST_PYTHON_DIR) + "/dspex_worker/__init__.py");
    // The package's directory first, then the handler directory, then the
    // config's env.PYTHONPATH entries.
    auto path = r["sys_path"];
    auto package = index_of(path, DSPEX_TEST_PYTHON_DIR);
    auto handler = index_of(path, handlers);
    auto env_dir = index_of(path, helpers);
    CHECK(package >= 0);
    CHECK(handler > package);
    CHECK(env_dir > handler);

    node.proc->signal(SIGTERM);
    REQUIRE(node.exited.wait(60s));
    CHECK_MESSAGE(node.exited.get().clean(), node.output());
  }
}

TEST_CASE("dspex run: a misspelled handler module fails the start with one line naming it") {
  for (std::string start : {"fork", "spawn"}) {
    CAPTURE(start);
    auto handlers = fresh_dir("handlers");
    file_in(handlers, "my_cmds.py", handler_source);
    auto dir = fresh_dir("run");
    auto j = tree_with(start, {"my_cmdz"});
    j["root"]["children"][1]["worker"]["handler_paths"] = {handlers};
    auto config = file_in(dir, "tree.json", j.dump(2));

    bridge::io_loop loop;
    int code = -1;
    auto out = run_cli(loop, {"run", config, "--control", dir + "/control.sock"}, &code);
    CHECK(code == 1);
    std::string failure;  // the line saying why the tree did not start
    for (auto at = out.find("dspex: "); at != std::string::npos; at = out.find("dspex: ", at + 1)) {
      auto line = out.substr(at, out.find('\n', at) - at);
      if (line.find("did not start") != std::string::npos)
        failure = line;
    }
    CHECK_MESSAGE(failure.find(missing_line) != std::string::npos, out);
    CHECK_MESSAGE(failure.find("invalid_config") != std::string::npos, out);
    CHECK_MESSAGE(out.find("shutting_down") == std::string::npos, out);
    CHECK_MESSAGE(count_of(out, "Traceback") <= 1, out);
  }
}

TEST_CASE("node::start: a handler module that does not import is invalid_config with its one line") {
  auto handlers = fresh_dir("handlers");
  file_in(handlers, "raises_cmds.py", "import os\nraise RuntimeError('no config file here')\n");
  for (std::string start : {"fork", "spawn"}) {
    CAPTURE(start);
    system_config cfg;
    caf::actor_system sys{cfg};
    node_options opts;
    opts.python_path = DSPEX_TEST_PYTHON_DIR;
    for (auto [module, line] : {std::pair<std::string, std::string>{"my_cmdz", missing_line},
                                {"raises_cmds",
                                 "handler module 'raises_cmds' failed to import: RuntimeError: no "
                                 "config file here (at " + handlers + "/raises_cmds.py:2)"}}) {
      auto j = tree_with(start, {module});
      j["root"]["children"][1]["worker"]["handler_paths"] = {handlers};
      auto tc = parse_config(j);
      REQUIRE(tc);
      auto n = node::start(sys, *tc, opts);
      REQUIRE_FALSE(n);
      CHECK(is(n.error(), errc::invalid_config));
      CHECK(detail_of(n.error()) == "pool default: " + line);
    }
  }
}

TEST_CASE("node::start: node_options.python_path and the config's python_path both reach the path") {
  // The config's python_path names the handler directory (no dspex_worker
  // there); the node's names the package. Neither replaces the other.
  auto handlers = fresh_dir("handlers");
  auto helpers = fresh_dir("helpers");
  file_in(handlers, "my_cmds.py", handler_source);
  file_in(helpers, "my_helper.py", "VALUE = 1\n");
  for (std::string start : {"fork", "spawn"}) {
    CAPTURE(start);
    system_config cfg;
    caf::actor_system sys{cfg};
    node_options opts;
    opts.python_path = DSPEX_TEST_PYTHON_DIR;
    auto j = tree_with(start, {"my_cmds"});
    auto& w = j["root"]["children"][1]["worker"];
    w["python_path"] = handlers;
    w["env"] = {{"PYTHONPATH", helpers}};
    auto tc = parse_config(j);
    REQUIRE(tc);
    auto n = node::start(sys, *tc, opts);
    REQUIRE_MESSAGE(n, why(n));
    auto r = (*n)->execute("where");
    REQUIRE_MESSAGE(r, why(r));
    auto path = (*r)["sys_path"];
    CHECK(index_of(path, handlers) >= 0);
    CHECK(index_of(path, handlers) < index_of(path, DSPEX_TEST_PYTHON_DIR));
    CHECK(index_of(path, DSPEX_TEST_PYTHON_DIR) < index_of(path, helpers));
    CHECK((*r)["package"] == std::string(DSPEX_TEST_PYTHON_DIR) + "/dspex_worker/__init__.py");
    (*n)->stop();
  }
}

}
