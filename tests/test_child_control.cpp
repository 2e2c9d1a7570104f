// Control of single children, as supervisorctl (issue 15): dspex restart /
// stop / start PATH, status --watch and events --follow against a real
// `dspex run` child with real Python workers; and an events follower that
// does not read, dropped without holding up the node.
#include <doctest/doctest.h>

#include <algorithm>

#include <dspex/actors/node/node.hpp>
#include <dspex/cli/control.hpp>
#include <dspex/cli/control_request.hpp>

#include "support/system_config.hpp"
#include "support/cli_process.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <csignal>
#include <cstring>
#include <fstream>
#include <poll.h>
#include <set>
#include <sstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

const std::string w1 = "root/pool_sup/workers/w1";

std::string temp_dir() {
  char tmpl[] = "/tmp/dspex-cc-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

void remove_dir(const std::string& dir) {
  for (auto name : {"/c.sock", "/c.sock.lock", "/tree.json"})
    ::unlink((dir + name).c_str());
  ::rmdir(dir.c_str());
}

// The node of the status tree at `path` (null when absent).
json child_at(const json& tree, const std::string& path) {
  if (tree.value("path", "") == path)
    return tree;
  if (tree.contains("children"))
    for (auto& c : tree["children"]) {
      auto r = child_at(c, path);
      if (!r.is_null())
        return r;
    }
  return nullptr;
}

bool is_class(const json& reply, const std::string& cls) {
  return reply.is_object() && reply.value("ok", true) == false && reply.contains("error")
         && reply["error"].value("class", "") == cls;
}

std::string message_of(const json& reply) {
  return reply.contains("error") ? reply["error"].value("message", "") : "";
}

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] == '{')
      out.push_back(json::parse(line, nullptr, false));
  return out;
}

int count_of(const std::string& text, const std::string& what) {
  int n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}

// A real `dspex run` with a pool of two real Python workers.
struct run_fixture {
  bridge::io_loop loop;
  std::string dir = temp_dir();
  std::string path = dir + "/c.sock";
  std::unique_ptr<cli_process> node;

  run_fixture() {
    auto j = default_config();
    j["root"]["children"][1]["size"] = 2;
    j["root"]["children"][1]["worker"]["fault_injection"] = true;
    std::ofstream(dir + "/tree.json") << j.dump(2);
    node = std::make_unique<cli_process>(loop, std::vector<std::string>{"run", dir + "/tree.json",
                                                                    "--control", path});
    REQUIRE_MESSAGE(wait_until([&] { return pool()["workers"] == 2; }, 60s), node->output());
  }
  ~run_fixture() {
    node->proc->signal(SIGTERM);
    CHECK(node->exited.wait(60s));
    CHECK(node->exited.get().clean());
    node.reset();
    remove_dir(dir);
  }

  json status() { return cli::control_call(path, {{"op", "status"}}, 30s); }
  json pool() {
    auto s = status();
    return s.contains("pools") ? s["pools"]["default"] : json::object();
  }
  json child(const std::string& p) {
    auto s = status();
    return s.contains("tree") ? child_at(s["tree"], p) : json();
  }
  int pid_of(const std::string& p) { return child(p).value("os_pid", -1); }

  /// Runs `dspex ARGS --control PATH` to completion.
  std::string dspex(std::vector<std::string> args, int& code) {
    args.push_back("--control");
    args.push_back(path);
    cli_process p(loop, std::move(args));
    REQUIRE(p.exited.wait(120s));
    code = p.exited.get().code();
    return p.output();
  }

  int ping_pid() {
    auto r = cli::control_call(path, {{"op", "exec"}, {"command", "ping"}}, 30s);
    REQUIRE_MESSAGE(r.value("ok", false), r.dump());
    return r["result"]["pid"].get<int>();
  }
};

} // namespace

TEST_SUITE("child control") {

TEST_CASE("control requests: restart / stop / start need a path of the tree's shape; events takes none") {
  using kind = cli::control_request::kind;
  struct ok_case {
    const char* line;
    kind op;
    const char* path;
  };
  for (auto c : {ok_case{R"({"op": "restart", "path": "root/pool_sup/workers/w1"})", kind::restart,
                         "root/pool_sup/workers/w1"},
                 ok_case{R"({"op": "stop", "path": "root/monitor"})", kind::stop, "root/monitor"},
                 ok_case{R"({"op": "start", "path": "root/a/b/c"})", kind::start, "root/a/b/c"},
                 ok_case{R"({"op": "events"})", kind::events, ""}}) {
    cli::control_request req;
    std::string err;
    CHECK_MESSAGE(cli::parse_control_request(c.line, req, err), c.line << ": " << err);
    CHECK(req.op == c.op);
    CHECK(req.path == c.path);
  }
  for (auto [line, expect] : std::vector<std::pair<std::string, std::string>>{
         {R"({"op": "restart"})", "path: missing"},
         {R"({"op": "stop", "path": 5})", "path: expected a non-empty string"},
         {R"({"op": "start", "path": ""})", "path: expected a non-empty string"},
         {R"({"op": "start", "path": null})", "path: expected a non-empty string"},
         {R"({"op": "restart", "path": "pool_sup/workers/w1"})", "path: expected root/<child>"},
         {R"({"op": "restart", "path": "root"})", "path: expected root/<child>"},
         {R"({"op": "restart", "path": "root/"})", "path: expected root/<child>"},
         {R"({"op": "restart", "path": "root//w1"})", "path: expected root/<child>"},
         {R"({"op": "restart", "path": "root/w1/"})", "path: expected root/<child>"},
         {R"({"op": "reboot", "path": "root/w1"})", "\"restart\", \"stop\", \"start\", \"scale\", \"reload\" or \"events\""}}) {
    cli::control_request req;
    std::string err;
    CHECK_FALSE(cli::parse_control_request(line, req, err));
    CHECK_MESSAGE(err.find(expect) != std::string::npos, line << " -> " << err);
  }
}

TEST_CASE_FIXTURE(run_fixture, "dspex restart, stop and start one worker: new pid, the pool one less and serving, back") {
  auto before = pid_of(w1);
  auto other = pid_of("root/pool_sup/workers/w2");
  REQUIRE(before > 0);
  REQUIRE(other > 0);

  int code = -1;
  auto out = dspex({"restart", w1}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(out.find(w1 + ": restarted") != std::string::npos);
  auto after = pid_of(w1);
  CHECK(after > 0);
  CHECK(after != before);
  CHECK(wait_until([&] { return process_gone(before); }));
  CHECK(pid_of("root/pool_sup/workers/w2") == other);
  CHECK(wait_until([&] { return pool()["workers"] == 2; }));
  ping_pid();

  out = dspex({"stop", w1}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(out.find(w1 + ": stopped") != std::string::npos);
  auto stopped = child(w1);
  CHECK(stopped["status"] == "undefined");
  CHECK(stopped["state"] == "stopped");
  CHECK_FALSE(stopped.contains("os_pid"));
  CHECK(wait_until([&] { return process_gone(after); }));
  CHECK(wait_until([&] { return pool()["workers"] == 1; }));
  for (int i = 0; i < 4; ++i)
    CHECK(ping_pid() == other);
  auto shown = dspex({"status"}, code);
  CHECK(code == 0);
  bool listed = false;
  std::istringstream rows(shown);
  for (std::string row; std::getline(rows, row);)
    listed = listed || (row.find(" w1 ") != std::string::npos && row.find(" stopped") != std::string::npos);
  CHECK_MESSAGE(listed, shown);
  // Stopped stays stopped: a second stop changes nothing.
  out = dspex({"stop", w1}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(child(w1)["state"] == "stopped");

  out = dspex({"start", w1}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(out.find(w1 + ": started") != std::string::npos);
  auto again = pid_of(w1);
  CHECK(again > 0);
  CHECK(again != after);
  CHECK(wait_until([&] { return pool()["workers"] == 2; }));
  out = dspex({"start", w1}, code);
  CHECK(code == 1);
  CHECK_MESSAGE(out.find("invalid_request") != std::string::npos, out);
  CHECK(out.find("already running") != std::string::npos);

  // None of it was a crash, none spent restart intensity.
  auto p = pool();
  CHECK(p["crashes"] == 0);
  CHECK(p["circuit"] == "closed");
  CHECK(p["errors"].empty());
  CHECK(child(w1)["restarts"] == 0);
}

TEST_CASE("control requests: scale needs a positive integer size and takes a pool name or null") {
  cli::control_request req;
  std::string err;
  REQUIRE_MESSAGE(cli::parse_control_request(R"({"op": "scale", "pool": "batch", "size": 3})", req, err), err);
  CHECK(req.op == cli::control_request::kind::scale);
  CHECK(req.pool == "batch");
  CHECK(req.size == 3);
  REQUIRE_MESSAGE(cli::parse_control_request(R"({"op": "scale", "pool": null, "size": 1})", req, err), err);
  CHECK(req.pool.empty());
  for (auto [line, expect] : std::vector<std::pair<std::string, std::string>>{
         {R"({"op": "scale", "pool": "p"})", "size: missing"},
         {R"({"op": "scale", "size": -1})", "size: expected a positive integer"},
         {R"({"op": "scale", "size": "3"})", "size: expected a positive integer"},
         {R"({"op": "scale", "size": 2.5})", "size: expected a positive integer"},
         {R"({"op": "scale", "pool": 7, "size": 2})", "pool: expected a pool name"}}) {
    CHECK_FALSE(cli::parse_control_request(line, req, err));
    CHECK_MESSAGE(err.find(expect) != std::string::npos, line << " -> " << err);
  }
}

TEST_CASE_FIXTURE(run_fixture, "dspex scale grows and shrinks the running pool; a bad size or pool exits 1 with its class") {
  int code = -1;
  auto out = dspex({"scale", "default", "3"}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK_MESSAGE(out.find("default: 2 -> 3 workers") != std::string::npos, out);
  CHECK(pool()["workers"] == 3);
  CHECK(pool()["size"] == 3);
  out = dspex({"scale", "default", "1"}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(pool()["workers"] == 1);
  CHECK(ping_pid() > 0);
  for (auto [args, expect] : std::vector<std::pair<std::vector<std::string>, std::string>>{
         {{"scale", "default", "0"}, "invalid_request: size: expected an integer in [1, 4096]"},
         {{"scale", "default", "5000"}, "invalid_request: size: expected an integer in [1, 4096]"},
         {{"scale", "default", "-2"}, "invalid_request: size: expected a positive integer"},
         {{"scale", "nope", "2"}, "invalid_request: pool: unknown pool \"nope\""}}) {
    out = dspex(args, code);
    CHECK_MESSAGE(code == 1, out);
    CHECK_MESSAGE(out.find(expect) != std::string::npos, out);
  }
  CHECK(pool()["size"] == 1);
  out = dspex({"scale", "default", "2"}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(pool()["workers"] == 2);
}

TEST_CASE("control requests: reload takes a pool name or null and an optional positive surge") {
  cli::control_request req;
  std::string err;
  REQUIRE_MESSAGE(cli::parse_control_request(R"({"op": "reload", "pool": "batch"})", req, err), err);
  CHECK(req.op == cli::control_request::kind::reload);
  CHECK(req.pool == "batch");
  CHECK(req.size == 1);
  REQUIRE_MESSAGE(cli::parse_control_request(R"({"op": "reload", "pool": null, "surge": 3})", req, err), err);
  CHECK(req.pool.empty());
  CHECK(req.size == 3);
  for (auto [line, expect] : std::vector<std::pair<std::string, std::string>>{
         {R"({"op": "reload", "surge": -1})", "surge: expected a positive integer"},
         {R"({"op": "reload", "surge": "2"})", "surge: expected a positive integer"},
         {R"({"op": "reload", "pool": 7})", "pool: expected a pool name"}}) {
    CHECK_FALSE(cli::parse_control_request(line, req, err));
    CHECK_MESSAGE(err.find(expect) != std::string::npos, line << " -> " << err);
  }
}

TEST_CASE_FIXTURE(run_fixture, "dspex reload replaces every worker and the fork server; a bad surge or pool exits 1 with its class") {
  auto before = tree_os_pids(status()["tree"], "pool_sup");
  int code = -1;
  auto out = dspex({"reload", "default"}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK_MESSAGE(out.find("default: reloaded 2 workers in ") != std::string::npos, out);
  CHECK_MESSAGE(out.find("(fork server ") != std::string::npos, out);
  auto after = tree_os_pids(status()["tree"], "pool_sup");
  CHECK(after.size() == before.size());
  for (int pid : after)
    CHECK(std::find(before.begin(), before.end(), pid) == before.end());
  CHECK(pool()["reloads"]["ok"] == 1);
  CHECK(ping_pid() > 0);
  auto shown = dspex({"status"}, code);
  CHECK_MESSAGE(shown.find("reload: done, 2 of 2 workers replaced (surge 1, ") != std::string::npos, shown);
  for (auto [args, expect] : std::vector<std::pair<std::vector<std::string>, std::string>>{
         {{"reload", "default", "--surge", "0"}, "invalid_request: surge: expected an integer in [1, 2]"},
         {{"reload", "default", "--surge", "-2"}, "invalid_request: surge: expected a positive integer"},
         {{"reload", "nope"}, "invalid_request: pool: unknown pool \"nope\""}}) {
    out = dspex(args, code);
    CHECK_MESSAGE(code == 1, out);
    CHECK_MESSAGE(out.find(expect) != std::string::npos, out);
  }
  CHECK(wait_until([&] { return all_gone(before); }));
}

TEST_CASE_FIXTURE(run_fixture, "dspex restart of the pool actor alone: the new pool adopts the running workers") {
  auto pids = std::make_pair(pid_of(w1), pid_of("root/pool_sup/workers/w2"));
  int code = -1;
  auto out = dspex({"restart", "root/pool_sup/pool"}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(wait_until([&] { return pool()["workers"] == 2; }));
  std::set<int> served;
  for (int i = 0; i < 6; ++i)
    served.insert(ping_pid());
  CHECK(served.count(pids.first) + served.count(pids.second) == served.size());
  CHECK(pid_of(w1) == pids.first);
  CHECK(pid_of("root/pool_sup/workers/w2") == pids.second);
  // Stopped and started again, too.
  out = dspex({"stop", "root/pool_sup/pool"}, code);
  CHECK_MESSAGE(code == 0, out);
  out = dspex({"start", "root/pool_sup/pool"}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK(wait_until([&] { return pool()["workers"] == 2; }));
  CHECK(ping_pid() > 0);
}

TEST_CASE_FIXTURE(run_fixture, "an unknown path is invalid_request naming it and the children found there") {
  auto pids = std::make_pair(pid_of(w1), pid_of("root/pool_sup/workers/w2"));
  auto r = cli::control_call(path, {{"op", "restart"}, {"path", "root/pool_sup/workers/w9"}}, 60s);
  CHECK(is_class(r, "invalid_request"));
  CHECK_MESSAGE(message_of(r).find("path root/pool_sup/workers/w9: no child w9 under "
                                   "root/pool_sup/workers; its children: w1, w2")
                  != std::string::npos,
                r.dump());
  r = cli::control_call(path, {{"op", "stop"}, {"path", "root/nope/x"}}, 60s);
  CHECK(is_class(r, "invalid_request"));
  CHECK_MESSAGE(message_of(r).find("no child nope under root; its children: sessions, pool_sup, monitor")
                  != std::string::npos,
                r.dump());
  r = cli::control_call(path, {{"op", "start"}, {"path", "root/sessions/x"}}, 60s);
  CHECK(is_class(r, "invalid_request"));
  CHECK_MESSAGE(message_of(r).find("root/sessions is a worker, not a supervisor") != std::string::npos,
                r.dump());
  r = cli::control_call(path, {{"op", "restart"}, {"path", "sessions"}}, 60s);
  CHECK(is_class(r, "invalid_request"));
  CHECK(message_of(r).find("path: expected root/<child>") != std::string::npos);
  int code = -1;
  auto out = dspex({"stop", "root/pool_sup/workers/w9"}, code);
  CHECK(code == 1);
  CHECK_MESSAGE(out.find("invalid_request") != std::string::npos, out);
  // Nothing changed.
  CHECK(pid_of(w1) == pids.first);
  CHECK(pid_of("root/pool_sup/workers/w2") == pids.second);
  CHECK(pool()["workers"] == 2);
}

TEST_CASE_FIXTURE(run_fixture, "dspex events --follow streams the exit and start of a restarted worker") {
  auto before = pid_of(w1);
  cli_process follower(loop, {"events", "--follow", "--count", "2", "--control", path});
  REQUIRE_MESSAGE(wait_until([&] {
                    return follower.output().find("following the events") != std::string::npos;
                  }, 60s),
                  follower.output());
  int code = -1;
  auto out = dspex({"restart", w1}, code);
  REQUIRE_MESSAGE(code == 0, out);
  REQUIRE_MESSAGE(follower.exited.wait(60s), follower.output());
  CHECK(follower.exited.get().clean());
  auto lines = json_lines(follower.output());
  REQUIRE_MESSAGE(lines.size() == 2, follower.output());
  CHECK(lines[0]["event"] == "child_exited");
  CHECK(lines[0]["path"] == w1);
  CHECK(lines[0]["reason"] == "shutdown");
  CHECK(lines[0]["os_pid"] == before);
  CHECK(lines[1]["event"] == "child_started");
  CHECK(lines[1]["path"] == w1);
  CHECK(lines[1]["os_pid"] == pid_of(w1));
  CHECK(lines[1]["os_pid"] != before);

  out = dspex({"events"}, code);
  CHECK(code == 2);
  CHECK_MESSAGE(out.find("events needs --follow") != std::string::npos, out);
}

// Issue 26: --count 3 hung after 2 events. Each restart of a worker is two
// events (child_exited, child_started), so two restarts through the control
// socket make four: the follower prints three and exits by itself.
TEST_CASE_FIXTURE(run_fixture, "dspex events --follow --count 3 exits after three event lines") {
  cli_process follower(loop, {"events", "--follow", "--count", "3", "--control", path});
  REQUIRE_MESSAGE(wait_until([&] {
                    return follower.output().find("following the events") != std::string::npos;
                  }, 60s),
                  follower.output());
  CHECK_MESSAGE(follower.output().find("following the events of the node at " + path
                                       + " until 3 events")
                  != std::string::npos,
                follower.output());
  auto r = cli::control_call(path, {{"op", "restart"}, {"path", w1}}, 60s);
  REQUIRE_MESSAGE(r.value("ok", false), r.dump());
  REQUIRE_MESSAGE(wait_until([&] { return json_lines(follower.output()).size() == 2; }, 60s),
                  follower.output());
  CHECK_FALSE(follower.exited.wait(0ms));  // two of three: still following
  r = cli::control_call(path, {{"op", "restart"}, {"path", "root/pool_sup/workers/w2"}}, 60s);
  REQUIRE_MESSAGE(r.value("ok", false), r.dump());
  REQUIRE_MESSAGE(follower.exited.wait(60s), follower.output());
  CHECK_MESSAGE(follower.exited.get().code() == 0, follower.output());
  auto lines = json_lines(follower.output());
  REQUIRE_MESSAGE(lines.size() == 3, follower.output());
  CHECK(lines[0]["event"] == "child_exited");
  CHECK(lines[0]["path"] == w1);
  CHECK(lines[1]["event"] == "child_started");
  CHECK(lines[1]["path"] == w1);
  CHECK(lines[2]["path"] == "root/pool_sup/workers/w2");
  CHECK(lines[2]["event"] == "child_exited");
}

// Issue 26: `dspex start .../w3` printed "dspex: invalid_request:
// invalid_request: ...". An error reply's message is the text after the
// class; each command prints "dspex: <class>: <message>" once.
TEST_CASE_FIXTURE(run_fixture, "error lines name their class once: start, stop, status, exec") {
  int code = -1;
  auto out = dspex({"start", "root/pool_sup/workers/w3"}, code);
  CHECK(code == 1);
  CHECK_MESSAGE(out == "dspex: invalid_request: path root/pool_sup/workers/w3: no child w3 under "
                       "root/pool_sup/workers; its children: w1, w2\n",
                out);
  out = dspex({"stop", "root/nope"}, code);
  CHECK(code == 1);
  CHECK_MESSAGE(out == "dspex: invalid_request: path root/nope: no child nope under root; its "
                       "children: sessions, pool_sup, monitor\n",
                out);
  // The reply itself: the class in "class", the rest in "message".
  auto r = cli::control_call(path, {{"op", "start"}, {"path", "root/pool_sup/workers/w3"}}, 60s);
  CHECK(is_class(r, "invalid_request"));
  CHECK(message_of(r).rfind("path root/pool_sup/workers/w3: no child w3", 0) == 0);

  out = dspex({"exec", "echo", "{}", "--pool", "nope"}, code);
  CHECK(code == 1);
  auto reply = json::parse(out, nullptr, false);
  REQUIRE_MESSAGE(reply.is_object(), out);
  CHECK(is_class(reply, "invalid_request"));
  CHECK_MESSAGE(message_of(reply) == "pool: unknown pool \"nope\"; known pools: default", out);
  out = dspex({"exec", "no_such_command"}, code);
  CHECK(code == 1);
  reply = json::parse(out, nullptr, false);
  REQUIRE_MESSAGE(reply.is_object(), out);
  CHECK(is_class(reply, "python_error"));
  CHECK_MESSAGE(message_of(reply) == "UnknownCommand: unknown command 'no_such_command'", out);

  // No node there: the client's own failure, in the same form.
  auto none = dir + "/none.sock";
  cli_process status(loop, {"status", "--control", none});
  REQUIRE(status.exited.wait(60s));
  CHECK(status.exited.get().code() == 1);
  CHECK_MESSAGE(status.output() == "dspex: unavailable: cannot reach a running node at " + none
                                     + ": No such file or directory\n",
                status.output());
}

// Issue 26: exec had no one-line output for scripts.
TEST_CASE_FIXTURE(run_fixture, "dspex exec --compact prints the reply as one line of JSON") {
  int code = -1;
  auto out = dspex({"exec", "ping", "--compact"}, code);
  CHECK(code == 0);
  REQUIRE_MESSAGE(count_of(out, "\n") == 1, out);
  CHECK(out.back() == '\n');
  auto reply = json::parse(out, nullptr, false);
  REQUIRE_MESSAGE(reply.is_object(), out);
  CHECK(reply["ok"] == true);
  CHECK(reply["result"]["status"] == "ok");
  out = dspex({"exec", "no_such_command", "--compact"}, code);
  CHECK(code == 1);
  REQUIRE_MESSAGE(count_of(out, "\n") == 1, out);
  reply = json::parse(out, nullptr, false);
  REQUIRE_MESSAGE(reply.is_object(), out);
  CHECK(is_class(reply, "python_error"));
  // Without it, the reply is indented over several lines, as before.
  out = dspex({"exec", "ping"}, code);
  CHECK(code == 0);
  CHECK(count_of(out, "\n") > 1);
  CHECK(json::parse(out, nullptr, false).is_object());
  cli_process help(loop, {"exec", "--help"});
  REQUIRE(help.exited.wait(60s));
  CHECK_MESSAGE(help.output().find("--compact") != std::string::npos, help.output());
}

TEST_CASE_FIXTURE(run_fixture, "dspex status --watch --count 2 prints two blocks, plain when not a terminal") {
  int code = -1;
  auto out = dspex({"status", "--watch", "--count", "2", "--interval-ms", "50"}, code);
  CHECK_MESSAGE(code == 0, out);
  CHECK_MESSAGE(count_of(out, "tree (mode pool)") == 2, out);
  CHECK_MESSAGE(count_of(out, "pool default: 2 workers") == 2, out);
  CHECK(out.find("\033[") == std::string::npos);
  out = dspex({"status", "--watch", "--json", "--count", "3", "--interval-ms", "10"}, code);
  CHECK(code == 0);
  CHECK(count_of(out, "\"run_id\"") == 3);
}

TEST_CASE_FIXTURE(run_fixture, "dspex status --watch on a terminal redraws in place") {
  // script(1) (util-linux, Essential in Debian) gives the command a pty.
  if (::access("/usr/bin/script", X_OK) != 0) {
    MESSAGE("no /usr/bin/script: skipped");
    return;
  }
  std::string cmd = std::string(DSPEX_TEST_CLI) + " status --watch --count 2 --interval-ms 50 --control "
                    + path;
  bridge::process_options o;
  o.executable = "/usr/bin/script";
  o.args = {"-qec", cmd, "/dev/null"};
  o.framed = false;
  std::mutex mx;
  std::string out;
  promise_box<bridge::exit_status> done;
  bridge::process_callbacks cbs;
  cbs.on_output = [&](std::string_view l) {
    std::lock_guard<std::mutex> g(mx);
    out.append(l).append("\n");
  };
  cbs.on_exit = [&](bridge::exit_status s) { done.set(s); };
  auto p = bridge::python_process::spawn(loop, o, cbs);
  REQUIRE(done.wait(60s));
  CHECK(done.get().clean());
  std::lock_guard<std::mutex> g(mx);
  CHECK_MESSAGE(count_of(out, "\033[H\033[2J") == 2, out);
  CHECK(count_of(out, "tree (mode pool)") == 2);
}

// A tree with no Python: one `process` child.
json sleeper_tree(int children) {
  json kids = json::array();
  for (int i = 1; i <= children; ++i)
    kids.push_back({{"id", "p" + std::to_string(i)}, {"type", "process"},
                    {"command", {"sleep", "600"}}});
  return {{"mode", "pool"},
          {"root",
           {{"strategy", "one_for_one"},
            {"intensity", 10},
            {"children",
             json::array({{{"id", "many"}, {"type", "supervisor"}, {"children", kids}}})}}}};
}

int connect_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

// The first line from `fd` (blocking), "" at EOF.
std::string first_line(int fd) {
  std::string buf;
  char c;
  while (::recv(fd, &c, 1, 0) == 1) {
    if (c == '\n')
      return buf;
    buf += c;
  }
  return buf;
}

TEST_CASE("a follower holds a connection slot while it follows, and frees it when it hangs up") {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  auto n = start_test_node(sys, sleeper_tree(1));
  auto dir = temp_dir();
  auto path = dir + "/c.sock";
  {
    cli::control_options opts;
    opts.max_connections = 1;
    cli::control_server server(*n, path, opts);
    REQUIRE(server.listening());
    int fd = connect_unix(path);
    std::string req = "{\"op\": \"events\"}\n";
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
    CHECK(json::parse(first_line(fd))["following"] == "events");
    auto refused = cli::control_call(path, {{"op", "status"}}, 30s);
    CHECK(is_class(refused, "unavailable"));
    CHECK(message_of(refused).find("too many control connections (1)") != std::string::npos);
    // The follower sees the events of a restart.
    REQUIRE_FALSE(n->restart_child("root/many/p1"));
    auto exited = json::parse(first_line(fd));
    CHECK(exited["event"] == "child_exited");
    CHECK(exited["path"] == "root/many/p1");
    ::close(fd);
    CHECK(wait_until([&] { return cli::control_call(path, {{"op", "status"}}, 30s).contains("tree"); }));
  }
  n->stop();
  remove_dir(dir);
}

TEST_CASE("a follower that stops reading is dropped with a last line, and the node goes on") {
  // 100 `process` children under one supervisor: each restart of it is a
  // burst of 200 events, far more than a socket buffer and a small backlog.
  test::system_config cfg;
  caf::actor_system sys{cfg};
  auto n = start_test_node(sys, sleeper_tree(100));
  auto dir = temp_dir();
  auto path = dir + "/c.sock";
  {
    cli::control_options opts;
    opts.follow_backlog = 16;
    opts.read_deadline = 60s;  // the write we leave pending must outlast the bursts
    cli::control_server server(*n, path, opts);
    REQUIRE(server.listening());

    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    std::string req = "{\"op\": \"events\"}\n";
    REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
    // The acknowledgement, then we stop reading.
    std::string buf;
    char chunk[4096];
    while (buf.find('\n') == std::string::npos) {
      auto got = ::recv(fd, chunk, sizeof chunk, 0);
      REQUIRE(got > 0);
      buf.append(chunk, static_cast<std::size_t>(got));
    }
    CHECK(json::parse(buf.substr(0, buf.find('\n')))["following"] == "events");
    buf.erase(0, buf.find('\n') + 1);

    // The node is not held up by the follower: every restart completes and
    // status answers meanwhile.
    for (int i = 0; i < 6; ++i) {
      auto err = n->restart_child("root/many");
      CHECK_MESSAGE(!err, describe(err));
      auto s = cli::control_call(path, {{"op", "status"}}, 30s);
      CHECK(s.contains("tree"));
    }
    // Now read: what the socket held, then the line that dropped us, then EOF.
    auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) > 0) {
        auto got = ::recv(fd, chunk, sizeof chunk, 0);
        if (got <= 0)
          break;
        buf.append(chunk, static_cast<std::size_t>(got));
      }
      REQUIRE(std::chrono::steady_clock::now() < deadline);
    }
    ::close(fd);
    auto lines = json_lines(buf);
    REQUIRE(lines.size() >= 2);
    auto& last = lines.back();
    CHECK(is_class(last, "unavailable"));
    CHECK_MESSAGE(message_of(last).find("events follower too slow: more than 16 event lines behind")
                    != std::string::npos,
                  last.dump());
    for (std::size_t i = 0; i + 1 < lines.size(); ++i)
      CHECK(lines[i].contains("event"));
    MESSAGE((lines.size() - 1) << " event lines reached the follower before it was dropped");
    // The server still serves, a new follower included.
    CHECK(cli::control_call(path, {{"op", "status"}}, 30s).contains("tree"));
  }
  n->stop();
  remove_dir(dir);
}

} // TEST_SUITE
