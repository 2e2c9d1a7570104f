// The control socket's streams and cancel-on-close, against a real
// `dspex run` with real Python workers: {"op": "exec", "stream": true}
// lines in order, `dspex exec --stream`, a client that reads nothing (the
// node's memory stays flat, the handler stalls, others are served), and a
// connection closed mid-request (the handler's finally runs, the pool
// counts it cancelled).
#include <doctest/doctest.h>

#include <dspex/bridge/python_process.hpp>
#include <dspex/cli/control.hpp>

#include "support/cli_process.hpp"
#include "support/proc_status.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A raw client connection: one request line out, reply lines in (blocking,
// as a plain script would do it).
struct raw_client {
  int fd = -1;
  FILE* in = nullptr;

  explicit raw_client(const std::string& path) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    in = ::fdopen(::dup(fd), "r");
    REQUIRE(in != nullptr);
  }
  ~raw_client() {
    hang_up();
    if (in)
      std::fclose(in);
  }
  void send(const json& request) {
    auto text = request.dump() + "\n";
    REQUIRE(::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
  }
  /// The next line, parsed; discarded (not an object) at EOF.
  json next() {
    char* line = nullptr;
    std::size_t cap = 0;
    auto n = ::getline(&line, &cap, in);
    json j = n > 0 ? json::parse(std::string(line, static_cast<std::size_t>(n)), nullptr, false)
                   : json(json::value_t::discarded);
    std::free(line);
    return j;
  }
  void hang_up() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }
};

struct stream_fixture {
  bridge::io_loop loop;
  std::string dir, config, sock;
  std::unique_ptr<cli_process> node;

  stream_fixture() {
    char tmpl[] = "/tmp/dspex-cstream-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    config = dir + "/tree.json";
    sock = dir + "/c.sock";
    auto j = json::parse(run_cli(loop, {"config", "--default"}));
    auto& pool = j["root"]["children"][1];
    pool["size"] = 2;
    pool["worker"]["handler_paths"] = {DSPEX_TEST_SOURCE_DIR "/tests/handlers"};
    pool["worker"]["handlers"] = {"stream_cmds", "control_stream_cmds"};
    std::ofstream(config) << j.dump(2);
    node = std::make_unique<cli_process>(
      loop, std::vector<std::string>{"run", config, "--control", sock});
    REQUIRE(wait_until([&] { return pool_status().value("workers", 0) == 2; }, 60s));
  }
  ~stream_fixture() {
    node->stop();
    for (auto name : {"/tree.json", "/c.sock", "/c.sock.lock", "/marker"})
      ::unlink((dir + name).c_str());
    ::rmdir(dir.c_str());
  }

  json pool_status() {
    auto s = cli::control_call(sock, {{"op", "status"}}, 30s);
    return s.contains("pools") ? s["pools"]["default"] : json::object();
  }
  long cancelled() { return pool_status()["requests"].value("cancelled", 0L); }

  std::string marker() {
    auto m = dir + "/marker";
    std::ofstream(m).close();
    return m;
  }

  /// The node's resident memory, kB.
  long rss_kb() { return test::rss_kb(node->proc->pid()); }
};

json exec(const std::string& command, json args, bool stream) {
  return {{"op", "exec"}, {"command", command}, {"args", std::move(args)}, {"stream", stream}};
}

} // namespace

TEST_SUITE("control_stream") {

TEST_CASE_FIXTURE(stream_fixture, "a streaming exec: one chunk line per chunk in order, then the reply") {
  raw_client c(sock);
  c.send(exec("count", {{"n", 50}}, true));
  for (int i = 0; i < 50; ++i) {
    auto line = c.next();
    REQUIRE(line.is_object());
    CHECK(line.size() == 2);
    CHECK(line["seq"] == i);
    CHECK(line["chunk"] == json{{"i", i}});
  }
  auto last = c.next();
  CHECK(last["ok"] == true);
  CHECK(last["result"] == json{{"total", 50}});

  // The same connection goes on: "stream": false is a plain exec, a
  // "stream" that is not a boolean is refused by name.
  c.send(exec("count", {{"n", 2}}, false));
  last = c.next();
  CHECK(last["ok"] == true);
  CHECK(last["result"] == json{{"total", 2}});
  auto bad = exec("count", json::object(), true);
  bad["stream"] = "yes";
  c.send(bad);
  last = c.next();
  CHECK(last["ok"] == false);
  CHECK(last["error"]["class"] == "invalid_request");
  CHECK(last["error"]["message"].get<std::string>().find("stream:") == 0);
  // An error of the handler ends a stream as it ends an exec.
  c.send(exec("no_such_command", json::object(), true));
  CHECK(c.next()["error"]["class"] == "python_error");
  CHECK(cancelled() == 0);
}

TEST_CASE_FIXTURE(stream_fixture, "dspex exec --stream prints each chunk as a line, then the reply") {
  int code = -1;
  auto out = run_cli(loop, {"exec", "--stream", "count", R"({"n": 50})", "--compact", "--control", sock},
                     &code);
  CHECK(code == 0);
  std::istringstream lines(out);
  std::string line;
  for (int i = 0; i < 50; ++i) {
    REQUIRE(std::getline(lines, line));
    CHECK(json::parse(line, nullptr, false) == json{{"i", i}});
  }
  REQUIRE(std::getline(lines, line));
  CHECK(json::parse(line, nullptr, false) == json{{"ok", true}, {"result", {{"total", 50}}}});
  CHECK_FALSE(std::getline(lines, line));

  // A failure: the error reply, exit 1; with --node: a usage error, at once.
  out = run_cli(loop, {"exec", "--stream", "no_such_command", "--control", sock}, &code);
  CHECK(code == 1);
  CHECK(out.find("python_error") != std::string::npos);
  out = run_cli(loop, {"exec", "--stream", "count", "--node", "127.0.0.1:1"}, &code);
  CHECK(code == 2);
  CHECK(out.find("--stream cannot be used with --node") != std::string::npos);
}

TEST_CASE_FIXTURE(stream_fixture, "a client that reads nothing stalls its handler, not the node") {
  auto before = rss_kb();
  REQUIRE(before > 0);
  // 10,000 chunks of 64 KiB: 640 MiB if the node buffered what the client
  // does not take.
  raw_client c(sock);
  c.send(exec("blob", {{"n", 10000}, {"size", 65536}}, true));
  REQUIRE(wait_until([&] { return pool_status().value("busy", 0) == 1; }));
  // Others are served meanwhile, by the other worker and the control thread.
  auto until = std::chrono::steady_clock::now() + 3s;
  int served = 0;
  while (std::chrono::steady_clock::now() < until) {
    CHECK(cli::control_call(sock, {{"op", "exec"}, {"command", "ping"}}, 30s).value("ok", false));
    ++served;
    std::this_thread::sleep_for(100ms);
  }
  CHECK(served > 5);
  auto after = rss_kb();
  CHECK(after - before < 50 * 1024);
  // Past the deadline for taking a line the client is cut off, and its
  // request cancelled.
  CHECK(wait_until([&] { return cancelled() == 1; }));
  CHECK(wait_until([&] { return pool_status().value("busy", -1) == 0; }));
}

TEST_CASE_FIXTURE(stream_fixture, "closing the connection cancels the request: the handler's finally runs") {
  auto m = marker();
  SUBCASE("a plain exec") {
    raw_client c(sock);
    c.send(exec("spin", {{"marker", m}}, false));
    REQUIRE(wait_until([&] { return slurp(m) == "started\n"; }));
    c.hang_up();
  }
  SUBCASE("a stream") {
    raw_client c(sock);
    c.send(exec("count", {{"n", 1000000}}, true));
    CHECK(c.next()["seq"] == 0);
    c.hang_up();
    CHECK(wait_until([&] { return cancelled() == 1; }));
    CHECK(wait_until([&] { return pool_status().value("busy", -1) == 0; }));
    // And a plain exec on another connection, closed in turn.
    raw_client d(sock);
    d.send(exec("spin", {{"marker", m}}, false));
    REQUIRE(wait_until([&] { return slurp(m) == "started\n"; }));
    d.hang_up();
  }
  SUBCASE("dspex exec, stopped by SIGTERM") {
    cli_process cli(loop, {"exec", "spin", json{{"marker", m}}.dump(), "--control", sock});
    REQUIRE(wait_until([&] { return slurp(m) == "started\n"; }));
    cli.proc->signal(SIGTERM);
    REQUIRE(cli.exited.wait(30s));
  }
  CHECK(wait_until([&] { return slurp(m) == "started\nfinally\n"; }));
  CHECK(wait_until([&] { return pool_status().value("busy", -1) == 0; }));
  auto requests = pool_status()["requests"];
  CHECK(requests.value("ok", 0) == 0);
  CHECK(wait_until([&] { return cancelled() >= 1; }));
}

TEST_CASE_FIXTURE(stream_fixture, "a client that only shut down its sending side gets its answers") {
  raw_client c(sock);
  c.send(exec("count", {{"n", 3}}, true));
  c.send(exec("count", {{"n", 1}}, false));  // pipelined
  ::shutdown(c.fd, SHUT_WR);
  for (int i = 0; i < 3; ++i)
    CHECK(c.next()["seq"] == i);
  CHECK(c.next()["result"] == json{{"total", 3}});
  CHECK(c.next()["result"] == json{{"total", 1}});
  CHECK(c.next().is_discarded());  // then closed
  CHECK(cancelled() == 0);
}

} // TEST_SUITE
