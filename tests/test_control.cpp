// The control socket against bad clients: malformed requests by the
// thousand, idle and slow clients, too many clients, and a second node on
// the same path. Real sockets, a real node with real Python workers, and the
// real dspex binary for the one-node-per-path cases.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>
#include <dspex/bridge/python_process.hpp>
#include <dspex/cli/control.hpp>

#include "support/system_config.hpp"
#include "support/cli_process.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <poll.h>
#include <random>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

// A fresh directory per test: socket paths must be short (108 bytes).
std::string temp_dir() {
  char tmpl[] = "/tmp/dspex-ctl-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

void remove_dir(const std::string& dir) {
  for (auto name : {"/c.sock", "/c.sock.lock", "/d.sock", "/d.sock.lock", "/tree.json", "/x"})
    ::unlink((dir + name).c_str());
  ::rmdir(dir.c_str());
}

// -1 on failure (no REQUIRE: the fuzz threads call it too).
int try_connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
    return fd;
  if (fd >= 0)
    ::close(fd);
  return -1;
}

int connect_to(const std::string& path) {
  int fd = try_connect(path);
  REQUIRE_MESSAGE(fd >= 0, std::strerror(errno));
  return fd;
}

bool send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    auto n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0)
      return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

// One reply line; "" when the peer closed first, "<timeout>" (no JSON) when
// nothing came within `limit`. Never throws: the fuzz threads use it.
struct line_reader {
  int fd;
  std::string buf;
  bool eof = false;
  explicit line_reader(int f) : fd(f) {}
  std::string next(std::chrono::milliseconds limit = eventually) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
      auto nl = buf.find('\n');
      if (nl != std::string::npos) {
        auto line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        return line;
      }
      if (eof)
        return "";
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0)
        return "<timeout>";
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0)
        continue;
      char chunk[4096];
      auto n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n > 0)
        buf.append(chunk, static_cast<std::size_t>(n));
      else
        eof = true;  // 0, or ECONNRESET after we were cut off
    }
  }
  /// True when nothing has arrived (no reply, no close) right now.
  bool quiet() {
    pollfd p{fd, POLLIN, 0};
    return buf.empty() && ::poll(&p, 1, 0) == 0;
  }
};

json parse(const std::string& line) {
  return json::parse(line, nullptr, false);
}

bool is_class(const json& reply, const std::string& cls) {
  return reply.is_object() && reply.value("ok", true) == false && reply.contains("error")
         && reply["error"].value("class", "") == cls;
}

void collect_workers(const json& n, std::map<std::string, int>& pids, int& restarts) {
  auto path = n.value("path", std::string());
  if (n.contains("os_pid") && path.find("/workers/") != std::string::npos)  // not the fork server
    pids[n.value("path", "")] = n["os_pid"].get<int>();
  restarts += n.value("restarts", 0);
  if (n.contains("children"))
    for (auto& c : n["children"])
      collect_workers(c, pids, restarts);
}

struct control_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::string dir = temp_dir();
  std::string path = dir + "/c.sock";
  std::shared_ptr<node> n;

  control_fixture() {
    auto j = default_config();
    j["root"]["children"][1]["size"] = 2;
    j["root"]["children"][1]["worker"]["fault_injection"] = true;
    n = start_test_node(sys, j);
  }
  ~control_fixture() {
    if (n)
      n->stop();
    remove_dir(dir);
  }

  json status(const std::string& p) { return cli::control_call(p, {{"op", "status"}}, 30s); }
  json ping(const std::string& p) {
    return cli::control_call(p, {{"op", "exec"}, {"command", "ping"}}, 30s);
  }
};

// Every malformed request the fuzz threads send, with the words its reply
// must contain (the field it names).
std::vector<std::pair<std::string, std::string>> malformed_lines() {
  return {
    {"{", "not valid JSON"},
    {"not json at all", "not valid JSON"},
    {"{\"op\": \"exec\", \"command\": \"ping\"", "not valid JSON"},
    {"", "empty request"},
    {"   ", "empty request"},
    {"[1, 2, 3]", "JSON object"},
    {"42", "JSON object"},
    {"\"status\"", "JSON object"},
    {"null", "JSON object"},
    {"{}", "op: missing"},
    {"{\"op\": 5}", "op: expected"},
    {"{\"op\": null}", "op: expected"},
    {"{\"op\": [\"status\"]}", "op: expected"},
    {"{\"op\": \"reboot\"}", "op: unknown"},
    {"{\"op\": \"STATUS\"}", "op: unknown"},
    {"{\"op\": \"exec\"}", "command: missing"},
    {"{\"op\": \"exec\", \"command\": 5}", "command: expected"},
    {"{\"op\": \"exec\", \"command\": \"\"}", "command: expected"},
    {"{\"op\": \"exec\", \"command\": null}", "command: expected"},
    {"{\"op\": \"exec\", \"command\": {\"a\": 1}}", "command: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"args\": \"x\"}", "args: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"args\": [1]}", "args: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"args\": null}", "args: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"session_id\": 5}", "session_id: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"session_id\": {}}", "session_id: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"timeout_ms\": \"x\"}", "timeout_ms: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"timeout_ms\": -1}", "timeout_ms: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"timeout_ms\": 1.5}", "timeout_ms: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"timeout_ms\": true}", "timeout_ms: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"timeout_ms\": 1e30}", "timeout_ms: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"pool\": 5}", "pool: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"pool\": \"\"}", "pool: expected"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"pool\": \"nope\"}", "unknown pool"},
    {"{\"op\": \"exec\", \"command\": \"ping\", \"timeout_ms\": 18446744073709551615}",
     "timeout_ms: expected"},
    {"{\"op\": \"exec\", \"command\": \"p\xff\xfe\"}", "not valid JSON"},
  };
}

std::string random_binary(std::mt19937& rng) {
  std::uniform_int_distribution<int> len(1, 300), byte(0, 255);
  std::string s = "\xff";  // never valid JSON, whatever follows
  for (int i = len(rng); i > 0; --i) {
    char c = static_cast<char>(byte(rng));
    s.push_back(c == '\n' ? ' ' : c);
  }
  return s;
}

bool serving(const std::string& path) {
  auto s = cli::control_call(path, {{"op", "status"}}, 30s);
  return s.contains("pools") && s["pools"]["default"].value("workers", 0) == 1;
}

} // namespace

TEST_SUITE("control") {

TEST_CASE_FIXTURE(control_fixture, "thousands of malformed requests beside idle clients change nothing") {
  cli::control_options o;
  o.read_deadline = 120s;  // the idle clients stay for the whole test
  o.max_line = 64 * 1024;
  o.max_connections = 100;
  cli::control_server srv(*n, path, o);
  REQUIRE(srv.listening());

  auto before = status(path);
  REQUIRE(before.contains("tree"));
  std::map<std::string, int> pids_before;
  int restarts_before = 0;
  collect_workers(before["tree"], pids_before, restarts_before);
  REQUIRE(pids_before.size() == 2);

  std::vector<int> idle;
  for (int i = 0; i < 40; ++i)
    idle.push_back(connect_to(path));

  auto cases = malformed_lines();
  std::atomic<int> answered{0}, wrong{0}, silent_ok{0};
  std::mutex wrong_mx;
  std::string first_wrong;
  auto note_wrong = [&](const std::string& what) {
    ++wrong;
    std::lock_guard<std::mutex> g(wrong_mx);
    if (first_wrong.empty())
      first_wrong = what;
  };
  constexpr int threads = 6, rounds = 60;  // 6 * 60 * 10 lines, and more
  auto fuzzer = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<std::size_t> pick(0, cases.size() - 1);
    std::uniform_int_distribution<int> kind(0, 9);
    for (int round = 0; round < rounds; ++round) {
      int fd = try_connect(path);
      if (fd < 0) {
        note_wrong(std::string("connect failed: ") + std::strerror(errno));
        continue;
      }
      line_reader in{fd};
      // Several malformed lines on one connection, each answered in turn.
      for (int i = 0; i < 10; ++i) {
        int k = kind(rng);
        std::string line, expect;
        if (k == 0) {
          line = random_binary(rng);
          expect = "not valid JSON";
        } else {
          auto& c = cases[pick(rng)];
          line = c.first;
          expect = c.second;
        }
        if (!send_all(fd, line + "\n")) {
          note_wrong("send failed");
          break;
        }
        auto reply = parse(in.next());
        if (!is_class(reply, "invalid_request")
            || reply["error"].value("message", "").find(expect) == std::string::npos)
          note_wrong(line + " -> " + reply.dump(-1, ' ', false, json::error_handler_t::replace));
        else
          ++answered;
      }
      // Then end the connection in one of the bad ways.
      switch (round % 3) {
        case 0: {  // a line above the limit: answered, then closed
          std::string huge(o.max_line + 100, 'a');
          send_all(fd, huge + "\n");  // may fail half-way once the server closes
          auto reply = parse(in.next());
          if (is_class(reply, "invalid_request")
              && reply["error"].value("message", "").find("above") != std::string::npos
              && in.next().empty())
            ++answered;
          else
            note_wrong("huge line -> " + reply.dump());
          break;
        }
        case 1: {  // half a line, then EOF: nobody to answer, just closed
          send_all(fd, "{\"op\": \"exe");
          ::shutdown(fd, SHUT_WR);
          if (in.next().empty())
            ++silent_ok;
          else
            note_wrong("half line got a reply");
          break;
        }
        default:
          break;  // just close
      }
      ::close(fd);
    }
  };
  // Status and exec keep working while the fuzzers run.
  std::atomic<bool> fuzzing{true};
  std::atomic<int> statuses{0}, pings{0}, side_failures{0};
  std::thread side([&] {
    while (fuzzing) {
      auto s = status(path);
      s.contains("pools") ? ++statuses : ++side_failures;
      auto p = ping(path);
      p.value("ok", false) ? ++pings : ++side_failures;
    }
  });
  std::vector<std::thread> fuzzers;
  for (unsigned t = 0; t < threads; ++t)
    fuzzers.emplace_back(fuzzer, 1000 + t);
  for (auto& t : fuzzers)
    t.join();
  fuzzing = false;
  side.join();

  CHECK_MESSAGE(wrong == 0, first_wrong);
  CHECK(answered == threads * rounds * 10 + threads * rounds / 3);
  CHECK(silent_ok == threads * rounds / 3);
  CHECK(side_failures == 0);
  CHECK(statuses > 0);
  CHECK(pings > 0);

  // The idle clients are still connected and were never answered.
  for (int fd : idle) {
    line_reader in{fd};
    CHECK(in.quiet());
  }
  auto after = status(path);
  REQUIRE(after.contains("tree"));
  std::map<std::string, int> pids_after;
  int restarts_after = 0;
  collect_workers(after["tree"], pids_after, restarts_after);
  CHECK(pids_after == pids_before);
  CHECK(restarts_after == restarts_before);
  auto p = ping(path);
  CHECK(p.value("ok", false));
  for (int fd : idle)
    ::close(fd);
}

TEST_CASE_FIXTURE(control_fixture, "an idle client gets the deadline reply and never holds up status") {
  // A long deadline: while this client idles, status must answer (the old
  // server served it only after the idle one).
  cli::control_options slow;
  slow.read_deadline = 120s;
  cli::control_server srv(*n, path, slow);
  int idle = connect_to(path);
  line_reader idle_in{idle};
  auto s = status(path);
  CHECK(s.contains("pools"));
  CHECK(ping(path).value("ok", false));
  CHECK(idle_in.quiet());
  ::close(idle);

  // A short deadline: silent clients, and one that sends half a line and
  // waits, get the deadline reply and are closed.
  cli::control_options quick;
  quick.read_deadline = 300ms;
  auto path2 = dir + "/d.sock";
  cli::control_server srv2(*n, path2, quick);
  for (auto partial : {"", "{\"op\": \"stat"}) {
    int fd = connect_to(path2);
    send_all(fd, partial);
    line_reader in{fd};
    auto reply = parse(in.next());
    CHECK(is_class(reply, "invalid_request"));
    CHECK(reply["error"].value("message", "") == "no complete request within 300 ms");
    CHECK(in.next().empty());  // then closed
    ::close(fd);
  }
  // A request in time is served, and one connection may carry several.
  int fd = connect_to(path2);
  line_reader in{fd};
  send_all(fd, "{\"op\": \"status\"}\n{\"op\": \"exec\", \"command\": \"ping\"}\n");
  CHECK(parse(in.next()).contains("pools"));
  CHECK(parse(in.next()).value("ok", false));
  ::close(fd);
}

TEST_CASE_FIXTURE(control_fixture, "a client over the connection bound gets a refusal line") {
  cli::control_options o;
  o.max_connections = 3;
  o.read_deadline = 120s;
  cli::control_server srv(*n, path, o);
  std::vector<int> held;
  for (int i = 0; i < 3; ++i)
    held.push_back(connect_to(path));
  int extra = connect_to(path);
  line_reader in{extra};
  auto reply = parse(in.next());
  CHECK(is_class(reply, "unavailable"));
  CHECK(reply["error"].value("message", "") == "too many control connections (3)");
  CHECK(in.next().empty());
  ::close(extra);
  // control_call reports the refusal as a classified error too.
  CHECK(is_class(status(path), "unavailable"));
  // Once one of them leaves, there is room again.
  ::close(held.back());
  held.pop_back();
  CHECK(wait_until([&] { return status(path).contains("pools"); }));
  for (int fd : held)
    ::close(fd);
}

TEST_CASE_FIXTURE(control_fixture, "a client that never reads its replies is cut off and frees its slot") {
  cli::control_options o;
  o.max_connections = 1;
  o.read_deadline = 3s;  // long enough that the refusal below comes first
  cli::control_server srv(*n, path, o);
  int fd = connect_to(path);
  // Large replies, pipelined, never read: the server's writes stall.
  std::string payload(256 * 1024, 'x');
  auto line = json{{"op", "exec"}, {"command", "echo"}, {"args", {{"payload", payload}}}}.dump() + "\n";
  for (int i = 0; i < 4; ++i)
    if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
      break;
  // Meanwhile the one slot is taken: others are refused, not left hanging.
  CHECK(is_class(status(path), "unavailable"));
  // Cut off: our writes fail once the server has closed its end.
  CHECK(wait_until([&] {
    return ::send(fd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE;
  }));
  ::close(fd);
  CHECK(wait_until([&] { return status(path).contains("pools"); }));
}

TEST_CASE_FIXTURE(control_fixture, "a slow exec does not delay status or other execs") {
  cli::control_server srv(*n, path);
  int slow = connect_to(path);
  line_reader slow_in{slow};
  send_all(slow, json{{"op", "exec"}, {"command", "fault_sleep"}, {"args", {{"seconds", 10}}}}.dump() + "\n");
  // The sleep has reached a worker once only one worker is free.
  REQUIRE(wait_until([&] {
    auto s = status(path);
    return s.contains("pools") && s["pools"]["default"].value("busy", -1) == 1;
  }));
  for (int i = 0; i < 5; ++i) {
    CHECK(status(path).contains("pools"));
    CHECK(ping(path).value("ok", false));
  }
  CHECK(slow_in.quiet());  // all of the above came back while the sleep runs
  auto reply = parse(slow_in.next(60s));
  CHECK(reply.value("ok", false));
  CHECK(reply["result"].value("slept_s", 0) == 10);
  ::close(slow);
}

TEST_CASE("a node with the bridge disabled: exec is unavailable, status answers") {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  auto j = default_config();
  j["mode"] = "disabled";
  auto tc = parse_config(j);
  REQUIRE(tc);
  auto n = node::start(sys, *tc);
  REQUIRE(n);
  auto dir = temp_dir();
  {
    cli::control_server srv(**n, dir + "/c.sock");
    auto r = cli::control_call(dir + "/c.sock", {{"op", "exec"}, {"command", "ping"}}, 30s);
    CHECK(is_class(r, "unavailable"));
    CHECK(r["error"].value("message", "").find("disabled") != std::string::npos);
    CHECK(cli::control_call(dir + "/c.sock", {{"op", "status"}}, 30s).value("mode", "") == "disabled");
  }
  (*n)->stop();
  remove_dir(dir);
}

TEST_CASE("control_socket: one claim per path, stale sockets replaced, others' files kept") {
  auto dir = temp_dir();
  auto path = dir + "/c.sock";
  struct stat st {};
  {
    auto first = cli::control_socket::claim(path);
    REQUIRE(first.listening());
    auto second = cli::control_socket::claim(path);
    CHECK_FALSE(second.listening());
    CHECK(second.in_use());
    CHECK(second.error() == "another node is serving " + path + " (pid " + std::to_string(::getpid()) + ")");
    CHECK(::stat(path.c_str(), &st) == 0);  // the loser removed nothing
  }
  CHECK(::stat(path.c_str(), &st) != 0);  // the owner removed its socket

  // A dead node's socket: bound, nobody listening, no lock held.
  {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::close(fd);
    auto s = cli::control_socket::claim(path);
    CHECK(s.listening());
    // Someone replaces the file by hand: on exit we leave theirs alone.
    ::unlink(path.c_str());
    std::ofstream(path) << "theirs";
  }
  CHECK(::stat(path.c_str(), &st) == 0);
  // A file that is no socket is never replaced.
  auto s = cli::control_socket::claim(path);
  CHECK_FALSE(s.listening());
  CHECK_FALSE(s.in_use());
  CHECK(s.error().find("not a socket") != std::string::npos);
  CHECK(::stat(path.c_str(), &st) == 0);
  ::unlink(path.c_str());
  remove_dir(dir);
}

TEST_CASE("dspex run: a second node on a live path gives up; a dead node's socket is replaced") {
  bridge::io_loop loop;
  auto dir = temp_dir();
  auto path = dir + "/c.sock";
  auto config = dir + "/tree.json";
  auto j = default_config();
  j["root"]["children"][1]["size"] = 1;
  std::ofstream(config) << j.dump(2);
  auto run_args = std::vector<std::string>{"run", config, "--control", path};

  auto first = std::make_unique<cli_process>(loop, run_args);
  REQUIRE(wait_until([&] { return serving(path); }, 60s));
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  auto inode = st.st_ino;

  {
    cli_process second(loop, run_args);
    REQUIRE(second.exited.wait(60s));
    CHECK_FALSE(second.exited.get().clean());
    auto msg = "another node is serving " + path + " (pid " + std::to_string(first->proc->pid()) + ")";
    CHECK_MESSAGE(second.output().find(msg) != std::string::npos, second.output());
  }
  CHECK(::stat(path.c_str(), &st) == 0);
  CHECK(st.st_ino == inode);  // untouched, and the first node still answers
  CHECK(serving(path));
  std::map<std::string, int> pids;
  int restarts = 0;
  collect_workers(cli::control_call(path, {{"op", "status"}}, 30s)["tree"], pids, restarts);
  REQUIRE(pids.size() == 1);

  // SIGKILL: the socket file stays behind, nobody listening on it.
  first->proc->kill();
  REQUIRE(first->exited.wait(30s));
  CHECK(wait_until([&] { return process_gone(pids.begin()->second); }));
  CHECK(::stat(path.c_str(), &st) == 0);
  CHECK(is_class(cli::control_call(path, {{"op", "status"}}, 30s), "unavailable"));

  auto third = std::make_unique<cli_process>(loop, run_args);
  REQUIRE(wait_until([&] { return serving(path); }, 60s));
  auto s = cli::control_call(path, {{"op", "status"}}, 30s);
  CHECK(s.value("run_id", "").find("h" + std::to_string(third->proc->pid()) + "-") == 0);
  third->proc->signal(SIGTERM);
  REQUIRE(third->exited.wait(60s));
  CHECK(third->exited.get().clean());
  CHECK(::stat(path.c_str(), &st) != 0);  // it removed its own socket

  // Two nodes started at once: exactly one serves.
  {
    cli_process a(loop, run_args), b(loop, run_args);
    REQUIRE(wait_until([&] { return a.exited.wait(0ms) || b.exited.wait(0ms); }, 60s));
    auto& loser = a.exited.wait(0ms) ? a : b;
    auto& winner = &loser == &a ? b : a;
    CHECK_FALSE(loser.exited.get().clean());
    CHECK_MESSAGE(loser.output().find("another node is") != std::string::npos, loser.output());
    CHECK(wait_until([&] { return serving(path); }, 60s));
    CHECK_FALSE(winner.exited.wait(0ms));
    winner.proc->signal(SIGTERM);
    REQUIRE(winner.exited.wait(60s));
    CHECK(winner.exited.get().clean());
  }
  remove_dir(dir);
}

TEST_CASE("a node that refuses and closes before the request went out: the refusal is the answer") {
  // A stand-in node: accepts, writes its one error line, closes without
  // reading. The request is larger than the socket buffer, so the client's
  // send is still under way when the connection closes (EPIPE).
  std::string dir = temp_dir();
  std::string path = dir + "/refuse.sock";
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(lfd >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.data(), path.size());
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(lfd, 4) == 0);
  std::thread refuser([lfd] {
    int c = ::accept(lfd, nullptr, nullptr);
    if (c < 0)
      return;
    std::string line =
      "{\"ok\": false, \"error\": {\"class\": \"unavailable\", \"message\": \"too many control connections (1)\"}}\n";
    (void)::send(c, line.data(), line.size(), MSG_NOSIGNAL);
    ::close(c);
  });
  auto r = cli::control_call(path, {{"op", "status"}, {"pad", std::string(4 << 20, 'x')}}, 10s);
  refuser.join();
  ::close(lfd);
  CHECK(r["ok"] == false);
  CHECK(r["error"]["class"] == "unavailable");
  CHECK(r["error"]["message"].get<std::string>().find("too many control connections") != std::string::npos);
  remove_dir(dir);
}

} // TEST_SUITE
