// Two real `dspex run` processes on loopback: a local node whose
// remote_pool forwards to a pool of a remote node through CAF's middleman.
// The remote node is SIGKILLed, SIGSTOPped and restarted under the local
// one; a TLS pair uses a CA made here by the openssl command. Nothing
// asserts wall-clock time: a request that can only end by node_down
// (fault_hang never returns) shows that node_down came.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/request_link.hpp>
#include <dspex/cli/control.hpp>

#include "support/system_config.hpp"
#include "support/cli_process.hpp"
#include "support/wait.hpp"
#include "support/loopback.hpp"
#include "support/proc_status.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>

#include <functional>
#include <mutex>

#include <arpa/inet.h>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <netinet/in.h>
#include <filesystem>
#include <poll.h>
#include <random>
#include <set>
#include <sstream>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

std::set<int> worker_pids(const json& status) {
  auto v = tree_os_pids(status["tree"], "/workers/");
  return {v.begin(), v.end()};
}

bool is_class(const json& r, const std::string& cls) {
  return r.is_object() && r.value("ok", true) == false && r.contains("error")
         && r["error"].value("class", "") == cls;
}

struct remote_fixture {
  bridge::io_loop loop;
  std::string dir;
  int port = free_port();
  std::string a_sock, b_sock, a_cfg, b_cfg;
  std::unique_ptr<cli_process> a, b;

  remote_fixture() {
    char tmpl[] = "/tmp/dspex-rm-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    a_sock = dir + "/a.sock";
    b_sock = dir + "/b.sock";
    a_cfg = dir + "/a.json";
    b_cfg = dir + "/b.json";
  }
  ~remote_fixture() {
    for (auto* p : {&a, &b})
      if (*p)
        (*p)->stop();
    std::system(("rm -rf " + dir).c_str());
  }

  // Short heartbeats so that a hung peer is noticed soon; a timeout loose
  // enough for a loaded CI machine.
  static json base(int size) {
    auto j = default_config();
    j["root"]["children"][1]["size"] = size;
    j["root"]["children"][1]["worker"]["fault_injection"] = true;
    j["heartbeat_interval_ms"] = 250;
    j["connection_timeout_ms"] = 4000;
    return j;
  }

  void write_configs(json remote_extra = json::object(), json local_extra = json::object(),
                     json pool_extra = json::object()) {
    auto bj = base(2);
    bj["listen"] = "127.0.0.1:" + std::to_string(port);
    bj.update(remote_extra);
    std::ofstream(b_cfg) << bj.dump(2);
    auto aj = base(1);
    json far = {{"id", "far"},
                {"type", "remote_pool"},
                {"host", "127.0.0.1"},
                {"port", port},
                {"connect_timeout_ms", 3000},
                {"request_timeout_ms", 600000},
                {"reconnect_min_ms", 50},
                {"reconnect_max_ms", 400}};
    far.update(pool_extra);
    aj["root"]["children"].insert(aj["root"]["children"].begin() + 2, far);
    aj.update(local_extra);
    std::ofstream(a_cfg) << aj.dump(2);
  }

  json status(const std::string& sock) { return cli::control_call(sock, {{"op", "status"}}, 30s); }

  void sh(const std::string& cmd) {
    auto full = "cd " + dir + " && " + cmd + " >/dev/null 2>&1";
    REQUIRE_MESSAGE(std::system(full.c_str()) == 0, cmd);
  }
  // A CA with the two nodes' certificates, and a stranger of another CA.
  void make_pki() {
    auto make_ca = [&](const std::string& name) {
      sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "
         + name + ".key -out " + name + ".pem -days 2 -subj /CN=" + name);
    };
    auto make_cert = [&](const std::string& name, const std::string& ca) {
      sh("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout " + name
         + ".key -out " + name + ".csr -subj /CN=" + name);
      sh("openssl x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca
         + ".key -CAcreateserial -out " + name + ".pem -days 2");
    };
    make_ca("ca");
    make_cert("remote", "ca");
    make_cert("local", "ca");
    make_ca("other_ca");
    make_cert("stranger", "other_ca");
  }
  json tls(const std::string& who) {
    return json{{"certificate", dir + "/" + who + ".pem"}, {"key", dir + "/" + who + ".key"},
                {"cafile", dir + "/ca.pem"}};
  }

  std::unique_ptr<cli_process> start(const std::string& cfg, const std::string& sock,
                                     std::vector<std::pair<std::string, std::string>> env = {}) {
    auto p = std::make_unique<cli_process>(loop, std::vector<std::string>{"run", cfg, "--control", sock},
                                           std::move(env));
    REQUIRE_MESSAGE(wait_until([&] {
      auto s = status(sock);
      return s.contains("pools") && worker_pids(s).size() >= 1;
    }, 60s), p->output());
    return p;
  }
  void start_remote() { b = start(b_cfg, b_sock); }
  void start_local() { a = start(a_cfg, a_sock); }

  std::string far_state() {
    auto s = status(a_sock);
    return s.contains("remotes") ? s["remotes"]["far"].value("state", "") : "";
  }
  json far() { return status(a_sock)["remotes"]["far"]; }
  // What both nodes said, for a failure's message.
  std::string outputs() {
    return "far: " + status(a_sock)["remotes"]["far"].dump() + "\nremote node:\n"
           + (b ? b->output() : "") + "\nlocal node:\n" + (a ? a->output() : "");
  }

  json exec_far(const std::string& cmd, json args = json::object()) {
    return cli::control_call(
      a_sock, {{"op", "exec"}, {"command", cmd}, {"args", args}, {"pool", "far"}}, 120s);
  }
};

/// Shuts (both ways) every established TCP socket of process `pid` whose
/// local port is `port`, through a duplicate of its descriptor
/// (pidfd_getfd): a link cut from outside, the other connections left as
/// they are. How many it shut.
int shut_tcp_sockets(int pid, int port) {
  std::set<std::string> inodes;
  std::ifstream tcp("/proc/" + std::to_string(pid) + "/net/tcp");
  std::string line;
  std::getline(tcp, line);  // the header
  while (std::getline(tcp, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, st, queues, timer, retr, uid, timeout, inode;
    f >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> inode;
    auto colon = local.find(':');
    if (colon == std::string::npos || st != "01")
      continue;
    if (std::stoi(local.substr(colon + 1), nullptr, 16) == port)
      inodes.insert("socket:[" + inode + "]");
  }
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  REQUIRE(pidfd >= 0);
  int shut = 0;
  auto dir = "/proc/" + std::to_string(pid) + "/fd";
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec).string();
    if (ec || inodes.count(target) == 0)
      continue;
    int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, std::stoi(e.path().filename().string()), 0));
    if (fd < 0)
      continue;
    if (::shutdown(fd, SHUT_RDWR) == 0)
      ++shut;
    ::close(fd);
  }
  ::close(pidfd);
  return shut;
}

} // namespace

TEST_SUITE("remote") {

TEST_CASE_FIXTURE(remote_fixture, "requests through a remote_pool reach the remote node's workers") {
  write_configs();
  start_remote();
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }), outputs());
  auto remote_pids = worker_pids(status(b_sock));
  auto local_pids = worker_pids(status(a_sock));
  REQUIRE(remote_pids.size() == 2);
  for (int i = 0; i < 10; ++i) {
    auto r = exec_far("ping");
    REQUIRE_MESSAGE(r.value("ok", false), r.dump());
    CHECK(remote_pids.count(r["result"]["pid"].get<int>()) == 1);
    auto l = cli::control_call(a_sock, {{"op", "exec"}, {"command", "ping"}}, 30s);
    REQUIRE(l.value("ok", false));
    CHECK(local_pids.count(l["result"]["pid"].get<int>()) == 1);
  }
  // The remote's classified errors come back as they are.
  auto bad = exec_far("no_such_command");
  CHECK(is_class(bad, "python_error"));
  CHECK(bad["error"].value("message", "").find("UnknownCommand") != std::string::npos);
  CHECK(far()["forwarded"] == 11);
  CHECK(far()["in_flight"] == 0);
  // They went by the request link (request_link.hpp), one link so far.
  CHECK(far()["link"] == "up");
  CHECK(far()["links"] == 1);
  CHECK(status(b_sock)["listen"]["request_link"]["port"].is_number());

  // The CLI: exec --pool through the local node, exec/status --node direct.
  int code = 0;
  auto out = run_cli(loop, {"exec", "ping", "--pool", "far", "--control", a_sock}, &code);
  CHECK(code == 0);
  CHECK(remote_pids.count(json::parse(out)["result"]["pid"].get<int>()) == 1);
  auto endpoint = "127.0.0.1:" + std::to_string(port);
  out = run_cli(loop, {"exec", "ping", "--node", endpoint}, &code);
  CHECK(code == 0);
  CHECK(remote_pids.count(json::parse(out)["result"]["pid"].get<int>()) == 1);
  out = run_cli(loop, {"exec", "ping", "--node", endpoint, "--pool", "nope"}, &code);
  CHECK(code == 1);
  CHECK(out.find("known pools: default") != std::string::npos);
  out = run_cli(loop, {"status", "--json", "--node", endpoint}, &code);
  CHECK(code == 0);
  auto st = json::parse(out, nullptr, false);
  REQUIRE(st.is_object());
  CHECK(st["listen"]["port"] == port);
  CHECK(worker_pids(st) == remote_pids);
  out = run_cli(loop, {"status", "--control", a_sock}, &code);
  CHECK(out.find("remote far -> 127.0.0.1:" + std::to_string(port) + ": connected by the request link")
        != std::string::npos);
  CHECK(far()["connects"] == 1);  // heartbeats kept the one connection
}

TEST_CASE_FIXTURE(remote_fixture, "SIGKILL of the remote node: node_down for every caller, then back after a restart") {
  write_configs();
  start_remote();
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }), outputs());
  auto local_pid = a->proc->pid();

  // Requests that only node_down can end: fault_hang never answers and the
  // remote_pool's request_timeout is ten minutes.
  constexpr int n = 4;
  std::vector<json> replies(n);
  std::vector<std::thread> callers;
  for (int i = 0; i < n; ++i)
    callers.emplace_back([&, i] { replies[i] = exec_far("fault_hang"); });
  REQUIRE(wait_until([&] { return far()["in_flight"] == n; }));
  b->proc->kill();
  REQUIRE(b->exited.wait(30s));
  for (auto& t : callers)
    t.join();
  for (auto& r : replies)
    CHECK_MESSAGE(is_class(r, "node_down"), r.dump());
  auto f = far();
  CHECK(f["in_flight"] == 0);
  CHECK(f["state"] != "connected");
  // While it is away: node_down at once, never a hang.
  for (int i = 0; i < 3; ++i)
    CHECK(is_class(exec_far("ping"), "node_down"));
  auto text = run_cli(loop, {"status", "--control", a_sock});
  CHECK(text.find("remote far -> 127.0.0.1:" + std::to_string(port) + ": down since")
        != std::string::npos);

  // A new remote node on the same port: the local node reconnects by itself.
  start_remote();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }, 60s), outputs());
  auto remote_pids = worker_pids(status(b_sock));
  auto r = exec_far("ping");
  REQUIRE_MESSAGE(r.value("ok", false), r.dump());
  CHECK(remote_pids.count(r["result"]["pid"].get<int>()) == 1);
  CHECK(a->proc->pid() == local_pid);
  CHECK(!a->exited.wait(0ms));
  CHECK(far()["connects"] == 2);
}

TEST_CASE_FIXTURE(remote_fixture, "a hung remote node (SIGSTOP) is dropped by the heartbeat timeout") {
  write_configs();
  start_remote();
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }), outputs());
  json reply;
  std::thread caller([&] { reply = exec_far("fault_hang"); });
  REQUIRE(wait_until([&] { return far()["in_flight"] == 1; }));
  // The socket stays open: only the missing heartbeats show the peer is gone.
  b->proc->signal(SIGSTOP);
  caller.join();
  CHECK_MESSAGE(is_class(reply, "node_down"), reply.dump());
  CHECK(far()["in_flight"] == 0);
  b->proc->signal(SIGCONT);
}

TEST_CASE_FIXTURE(remote_fixture, "TLS with a CA made here: mutual authentication, a client without a certificate is refused") {
  make_pki();
  write_configs({{"tls", tls("remote")}}, {{"tls", tls("local")}}, {{"tls", true}});
  start_remote();
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }, 30s), outputs());
  auto remote_pids = worker_pids(status(b_sock));
  auto r = exec_far("ping");
  REQUIRE_MESSAGE(r.value("ok", false), r.dump());
  CHECK(remote_pids.count(r["result"]["pid"].get<int>()) == 1);
  CHECK(status(b_sock)["listen"]["tls"] == true);
  // Over TLS the requests stay on the authenticated BASP connection.
  CHECK(far()["link"] == "none");
  CHECK(status(b_sock)["listen"]["request_link"].is_null());
  for (int i = 0; i < 5; ++i)
    CHECK(exec_far("ping").value("ok", false));
  CHECK(far()["connects"] == 1);  // heartbeats keep it
  // The node speaks TLS 1.3 (OpenSSL's own client, with a valid identity).
  auto s13 = "openssl s_client -connect 127.0.0.1:" + std::to_string(port)
             + " -tls1_3 -cert local.pem -key local.key -CAfile ca.pem </dev/null";
  std::system(("cd " + dir + " && " + s13 + " >s13.log 2>&1").c_str());
  std::ifstream s13log(dir + "/s13.log");
  std::string s13text((std::istreambuf_iterator<char>(s13log)), std::istreambuf_iterator<char>());
  CHECK_MESSAGE(s13text.find("TLSv1.3") != std::string::npos, s13text);

  auto endpoint = "127.0.0.1:" + std::to_string(port);
  int code = 0;
  // dspex with the right identity, directly.
  auto out = run_cli(loop, {"exec", "ping", "--node", endpoint, "--tls-certificate",
                            dir + "/local.pem", "--tls-key", dir + "/local.key", "--tls-cafile",
                            dir + "/ca.pem"}, &code);
  CHECK_MESSAGE(code == 0, out);
  // A TLS client with no certificate at all (OpenSSL's own client).
  auto s_client = "openssl s_client -connect " + endpoint + " -tls1_2 </dev/null";
  CHECK(std::system(("cd " + dir + " && " + s_client + " >s_client.log 2>&1").c_str()) != 0);
  // A dspex client without TLS, and one whose certificate another CA signed.
  out = run_cli(loop, {"exec", "ping", "--node", endpoint}, &code);
  CHECK(code == 1);
  CHECK(out.find("node_down") != std::string::npos);
  out = run_cli(loop, {"exec", "ping", "--node", endpoint, "--tls-certificate",
                       dir + "/stranger.pem", "--tls-key", dir + "/stranger.key", "--tls-cafile",
                       dir + "/other_ca.pem"}, &code);
  CHECK(code == 1);
  CHECK(out.find("node_down") != std::string::npos);
  // The node serves on, on the same link (actors/remote/router_guard.cpp keeps
  // another client's failed handshake from failing it).
  CHECK(exec_far("ping").value("ok", false));
  CHECK(far()["connects"] == 1);
}

TEST_CASE_FIXTURE(remote_fixture, "TLS churn: third parties of every kind come and go, the established link loses nothing") {
  make_pki();
  write_configs({{"tls", tls("remote")}}, {{"tls", tls("local")}}, {{"tls", true}});
  start_remote();
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }, 30s), outputs());
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::string first_failure;
  std::thread load([&] {
    while (!stop) {
      auto r = exec_far("ping");
      if (r.value("ok", false)) {
        ++ok;
      } else if (failed++ == 0) {
        first_failure = r.dump();
      }
    }
  });
  auto endpoint = "127.0.0.1:" + std::to_string(port);
  auto raw = [&](const std::string& bytes) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && !bytes.empty())
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ::close(fd);
  };
  for (int round = 0; round < 6; ++round) {
    raw("GET / HTTP/1.0\r\n\r\n\x16\x03\x01garbage");  // garbage, and a broken ClientHello
    raw("");                                               // connect, then close
    std::system(("openssl s_client -connect " + endpoint + " </dev/null >/dev/null 2>&1").c_str());
    run_cli(loop, {"exec", "ping", "--node", endpoint});  // no TLS at all
    run_cli(loop, {"exec", "ping", "--node", endpoint, "--tls-certificate", dir + "/stranger.pem",
                   "--tls-key", dir + "/stranger.key", "--tls-cafile", dir + "/other_ca.pem"});
    int code = -1;
    run_cli(loop, {"exec", "ping", "--node", endpoint, "--tls-certificate", dir + "/local.pem",
                   "--tls-key", dir + "/local.key", "--tls-cafile", dir + "/ca.pem"}, &code);
    CHECK(code == 0);  // a valid client comes and goes
  }
  stop = true;
  load.join();
  MESSAGE("requests on the established link during churn: " << ok.load() << " ok, " << failed.load() << " failed");
  CHECK(ok > 0);
  CHECK_MESSAGE(failed == 0, first_failure);
  CHECK(far()["connects"] == 1);
}

TEST_CASE_FIXTURE(remote_fixture, "request_link false: the same requests, streams and errors by BASP") {
  write_configs({{"request_link", false}});
  start_remote();
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }), outputs());
  CHECK(far()["link"] == "none");
  CHECK(status(b_sock)["listen"]["request_link"].is_null());
  auto remote_pids = worker_pids(status(b_sock));
  for (int i = 0; i < 5; ++i) {
    auto r = exec_far("ping");
    REQUIRE_MESSAGE(r.value("ok", false), r.dump());
    CHECK(remote_pids.count(r["result"]["pid"].get<int>()) == 1);
  }
  CHECK(is_class(exec_far("no_such_command"), "python_error"));
  CHECK(far()["batches"].get<int>() >= 1);  // (rbatch) messages
}

TEST_CASE_FIXTURE(remote_fixture, "the request link cut under load: each request answered once, then a new link") {
  write_configs();
  start_remote();
  start_local();
  REQUIRE(wait_until([&] { return far()["link"] == "up"; }));
  const int link_port = status(b_sock)["listen"]["request_link"]["port"].get<int>();
  std::atomic<int> ok{0}, down{0}, other{0};
  std::vector<std::thread> ts;
  for (int c = 0; c < 4; ++c)
    ts.emplace_back([&] {
      for (int i = 0; i < 30; ++i) {
        auto r = exec_far("fault_sleep", {{"seconds", 0.02}});
        if (r.value("ok", false))
          ++ok;
        else if (is_class(r, "node_down"))
          ++down;
        else
          ++other;
      }
    });
  REQUIRE(wait_until([&] { return far()["forwarded"].get<int>() >= 8; }));
  // The link alone is cut (BASP stays up): the remote node's end of it,
  // shut through a duplicate of its descriptor.
  CHECK(shut_tcp_sockets(b->proc->pid(), link_port) == 1);
  for (auto& t : ts)
    t.join();
  CHECK(ok + down == 120);
  CHECK(other == 0);
  CHECK(down >= 1);
  REQUIRE_MESSAGE(wait_until([&] { return far()["link"] == "up" && far_state() == "connected"; }, 30s), outputs());
  CHECK(far()["links"] == 2);
  CHECK(far()["in_flight"] == 0);
  CHECK(exec_far("ping").value("ok", false));
  // What ran on the remote node for the cut link was cancelled or ended.
  CHECK(wait_until([&] { return status(b_sock)["pools"]["default"].value("busy", 0) == 0; }, 30s));
}

TEST_CASE_FIXTURE(remote_fixture, "a listening node whose io loop has its own thread serves the link and stops cleanly") {
  // DSPEX_IO_THREAD=1: no io scheduler, the loop on a thread of its own,
  // so the router runs on another thread than the links' sockets.
  write_configs();
  b = start(b_cfg, b_sock, {{"DSPEX_IO_THREAD", "1"}});
  start_local();
  REQUIRE(wait_until([&] { return far()["link"] == "up"; }));
  auto remote_pids = worker_pids(status(b_sock));
  for (int i = 0; i < 20; ++i) {
    auto r = exec_far("ping");
    REQUIRE_MESSAGE(r.value("ok", false), r.dump());
    CHECK(remote_pids.count(r["result"]["pid"].get<int>()) == 1);
  }
  b->stop();
  REQUIRE(b->exited.wait(0ms));
  CHECK_MESSAGE(b->exited.get().code() == 0, b->output());
  CHECK(wait_until([&] { return far_state() == "down"; }));
}

TEST_CASE_FIXTURE(remote_fixture, "a caller flooding its link with cheap frames: the node's memory stays bounded (io loop on its own thread)") {
  // With the io loop on a thread of its own (DSPEX_IO_THREAD=1, embedders
  // without the io scheduler) the link is read on one thread and its frames
  // taken by the router on another: a caller's flood of cancels for ids it
  // never used (each answered by nothing, so no write ever pushes back)
  // must not pile up in the router's mailbox when the router is the slower
  // (link_unread_bound: the link stops reading). An ASan build's router is
  // (RSS grew by 268 MiB there before the bound); its quarantine, which
  // holds freed memory back, is off so that RSS says what is live.
  write_configs();
  b = start(b_cfg, b_sock, {{"DSPEX_IO_THREAD", "1"}, {"ASAN_OPTIONS", "detect_leaks=0:quarantine_size_mb=0"}});
  // The caller: an actor system of its own, which gets a token by a hello.
  caf::actor_system_config cc;
  cc.load<caf::io::middleman>();
  cc.set("middleman.heartbeat-interval", caf::timespan{250ms});  // the node drops a silent peer
  caf::actor_system sys{cc};
  auto router = sys.middleman().remote_actor("127.0.0.1", static_cast<std::uint16_t>(port));
  REQUIRE(router);
  caf::scoped_actor self{sys};
  std::string hello;
  self->request(*router, 10s, remote::rhello_atom::value, remote::hello_text())
    .receive([&](std::string& t) { hello = t; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  auto offer = remote::parse_reply(hello);
  REQUIRE(offer);
  REQUIRE((*offer)["link"]["token"].is_string());
  int fd = connect_loopback((*offer)["link"]["port"].get<int>());
  std::string out;
  remote::append_link_frame(out, remote::link_kind::hello, 0,
                            (*offer)["link"]["token"].get<std::string>() + " 1048576");
  REQUIRE(::send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size()));
  char back[13];
  REQUIRE(::recv(fd, back, sizeof back, MSG_WAITALL) == 13);  // the router's hello
  CHECK(back[4] == static_cast<char>(remote::link_kind::hello));
  // 6 s of cancels, as fast as the node takes them.
  std::string flood;
  for (std::uint64_t id = 1; flood.size() < (1u << 20); ++id)
    remote::append_link_frame(flood, remote::link_kind::cancel, 1000000 + id);
  const long rss_before = rss_kb(b->proc->pid());
  long rss_most = rss_before;
  std::size_t sent = 0;
  const auto until = std::chrono::steady_clock::now() + 6s;
  while (std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 100) == 1) {
      auto n = ::send(fd, flood.data(), flood.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EAGAIN)
        continue;
      int err = errno;
      REQUIRE_MESSAGE(n > 0, "the link was shut after " << sent << " bytes (errno " << err << "): " << status(b_sock)["listen"].dump());
      sent += static_cast<std::size_t>(n);
      if (n < static_cast<ssize_t>(flood.size()))
        flood = flood.substr(static_cast<std::size_t>(n)) + flood.substr(0, static_cast<std::size_t>(n));
    }
    rss_most = std::max(rss_most, rss_kb(b->proc->pid()));
  }
  MESSAGE("sent " << sent / (1 << 20) << " MiB of cancels; node RSS " << rss_before / 1024 << " -> "
                  << rss_most / 1024 << " MiB at most");
  CHECK(sent > (64u << 20));
  CHECK(rss_most < rss_before + 128 * 1024);
  ::close(fd);
  // The node serves on, once it has taken what the kernel still held for the
  // link (under a sanitizer that takes seconds, in which a node connecting
  // meanwhile could miss heartbeats).
  REQUIRE_MESSAGE(wait_until([&] { return status(b_sock)["listen"]["request_link"]["open"] == 0; }, 20s), status(b_sock)["listen"].dump() << b->output());
  start_local();
  REQUIRE(wait_until([&] { return far()["link"] == "up"; }));
  auto pong = exec_far("ping");
  CHECK_MESSAGE(pong.value("ok", false), pong.dump());
}

TEST_CASE_FIXTURE(remote_fixture, "a hostile node a remote_pool calls cannot end it: its control messages are refused") {
  // The node `far` points at is this test: a router of its own that
  // answers the hello, then sends the remote_pool an exit with reason kill,
  // which CAF treats as fatal whatever the actor's handlers say. Were it
  // delivered, the remote_pool would be restarted after each connect, until
  // its supervisor gave up and took the tree with it.
  write_configs();
  caf::actor_system_config cc;
  cc.load<caf::io::middleman>();
  caf::actor_system sys{cc};
  std::mutex mx;
  std::vector<caf::actor> callers;
  auto fake = sys.spawn([&](caf::event_based_actor* self) -> caf::behavior {
    return {[&, self](remote::rhello_atom, const std::string&) {
      std::lock_guard<std::mutex> g(mx);
      callers.push_back(caf::actor_cast<caf::actor>(self->current_sender()));
      return remote::reply_text(json{{"pools", json::array({"default"})}});
    }};
  });
  auto published = sys.middleman().publish(fake, static_cast<std::uint16_t>(port), "127.0.0.1", true);
  REQUIRE(published);
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }, 30s), outputs());
  auto far_restarts = [&] {
    std::function<int(const json&)> find = [&](const json& n) -> int {
      if (n.value("id", "") == "far")
        return n.value("restarts", 0);
      for (auto& c : n.value("children", json::array()))
        if (int r = find(c); r >= 0)
          return r;
      return -1;
    };
    return find(status(a_sock)["tree"]);
  };
  CHECK(far_restarts() == 0);
  for (int i = 0; i < 3; ++i) {
    caf::actor target;
    {
      std::lock_guard<std::mutex> g(mx);
      target = callers.back();
    }
    caf::anon_send_exit(target, caf::exit_reason::kill);
    // The calling node closes the connection that sent it, and connects again.
    REQUIRE_MESSAGE(wait_until([&] { return far()["connects"] == i + 2 && far_state() == "connected"; }, 30s),
                    outputs());
  }
  CHECK(far_restarts() == 0);
  std::lock_guard<std::mutex> g(mx);
  CHECK(callers.size() == 4);
  for (std::size_t i = 1; i < callers.size(); ++i)
    CHECK(callers[i] == callers[0]);  // one remote_pool, never restarted
  caf::anon_send_exit(fake, caf::exit_reason::user_shutdown);
}

TEST_CASE_FIXTURE(remote_fixture, "a remote_pool takes its hello's answer from the router only") {
  // CAF matches a response to a request by its id alone. Here the node
  // `far` points at answers every hello from another actor than the router
  // it published, with the id of the hello: the remote_pool does not
  // connect on it.
  write_configs();
  caf::actor_system_config cc;
  cc.load<caf::io::middleman>();
  caf::actor_system sys{cc};
  auto other = sys.spawn([](caf::event_based_actor*) { return caf::behavior{[](int) {}}; });
  std::atomic<int> hellos{0};
  auto fake = sys.spawn([&, other](caf::event_based_actor* self) -> caf::behavior {
    return {[&, self, other](remote::rhello_atom, const std::string&) -> caf::result<std::string> {
      ++hellos;
      auto* e = self->current_mailbox_element();
      e->sender->enqueue(caf::make_mailbox_element(caf::actor_cast<caf::strong_actor_ptr>(other), e->mid.response_id(),
                                                   {}, remote::reply_text(json{{"pools", json::array({"default"})}})),
                         nullptr);
      return caf::delegated<std::string>();
    }};
  });
  auto published = sys.middleman().publish(fake, static_cast<std::uint16_t>(port), "127.0.0.1", true);
  REQUIRE(published);
  start_local();
  REQUIRE(wait_until([&] { return hellos >= 2; }, 30s));
  auto f = far();
  CHECK(f["state"] != "connected");
  CHECK_MESSAGE(f.value("last_error", "").find("answered by another actor") != std::string::npos, f.dump());
  caf::anon_send_exit(fake, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(other, caf::exit_reason::user_shutdown);
}

TEST_CASE_FIXTURE(remote_fixture, "strangers shut at once free their slots at once, long handshake timeout or not") {
  write_configs({{"listen_max_connections", 4}, {"listen_handshake_timeout_ms", 600000}});
  start_remote();
  auto links = [&] { return status(b_sock)["listen"]["request_link"]; };
  const int link_port = links()["port"].get<int>();
  for (int i = 0; i < 12; ++i) {
    int fd = connect_loopback(link_port);
    std::string bad("\0\0\0\x09\x07\0\0\0\0\0\0\0\x01", 13);  // an unknown kind
    CHECK(::send(fd, bad.data(), bad.size(), MSG_NOSIGNAL) == 13);
    CHECK(closed_by_peer(fd, 20s));
    ::close(fd);
  }
  CHECK(wait_until([&] { return links()["open"] == 0; }, 20s));
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }), outputs());
  CHECK(far()["link"] == "up");
  CHECK(links()["refused"] == 0);
  CHECK(links()["bad"] == 12);
}

TEST_CASE_FIXTURE(remote_fixture, "a link the router refuses: the remote_pool serves by BASP, no reconnect loop") {
  // Strangers hold every link slot (and never say hello) when the
  // remote_pool comes: its link is shut at accept.
  write_configs({{"listen_max_connections", 3}, {"listen_handshake_timeout_ms", 600000}});
  start_remote();
  auto links = [&] { return status(b_sock)["listen"]["request_link"]; };
  const int link_port = links()["port"].get<int>();
  std::vector<int> strangers;
  for (int i = 0; i < 3; ++i)
    strangers.push_back(connect_loopback(link_port));
  REQUIRE(wait_until([&] { return links()["open"] == 3; }, 20s));
  start_local();
  REQUIRE_MESSAGE(wait_until([&] { return far_state() == "connected"; }), outputs());
  CHECK(far()["link"] == "none");
  CHECK_MESSAGE(far().value("link_note", "").find("request link") != std::string::npos, far().dump());
  for (int i = 0; i < 5; ++i)
    CHECK(exec_far("ping").value("ok", false));
  CHECK(links()["refused"].get<int>() >= 1);
  CHECK(far()["connects"] == 1);
  for (int fd : strangers)
    ::close(fd);
}

TEST_CASE_FIXTURE(remote_fixture, "strangers on the request link port are shut; the established link serves on") {
  write_configs({{"listen_max_connections", 6}, {"listen_handshake_timeout_ms", 300}});
  start_remote();
  start_local();
  REQUIRE(wait_until([&] { return far()["link"] == "up"; }));
  auto links = [&] { return status(b_sock)["listen"]["request_link"]; };
  const int link_port = links()["port"].get<int>();
  const long rss_before = rss_kb(b->proc->pid());
  auto frame = [](unsigned char kind, std::uint64_t id, const std::string& text) {
    std::string body(1, static_cast<char>(kind));
    for (int i = 7; i >= 0; --i)
      body.push_back(static_cast<char>((id >> (8 * i)) & 0xFF));
    body += text;
    std::string out(4, '\0');
    for (int i = 0; i < 4; ++i)
      out[i] = static_cast<char>((body.size() >> (8 * (3 - i))) & 0xFF);
    return out + body;
  };
  auto send_all = [](int fd, const std::string& bytes) {
    return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  };
  auto exchange = [&](const std::string& bytes) {
    int fd = connect_loopback(link_port);
    if (!bytes.empty())
      CHECK(send_all(fd, bytes));
    bool closed = closed_by_peer(fd, 20s);
    ::close(fd);
    return closed;
  };
  // An unknown kind, a hello with a token never handed out, an exec before
  // any hello, a first frame announcing 4 GiB, and silence.
  CHECK(exchange(frame(0x77, 1, "x")));
  CHECK(exchange(frame(1, 0, "00112233445566778899aabbccddeeff")));
  CHECK(exchange(frame(2, 1, R"({"app":"dspex","protocol":1,"op":"exec","command":"ping"})")));
  CHECK(exchange(std::string("\xff\xff\xff\xf0", 4) + std::string(64, 'a')));
  CHECK(exchange(""));
  // Over the cap (6 links, one of them the remote_pool's): 5 idle strangers
  // fill it, the next is refused at once; all are shut by the timeout.
  std::vector<int> idle;
  for (int i = 0; i < 5; ++i)
    idle.push_back(connect_loopback(link_port));
  REQUIRE(wait_until([&] { return links()["open"] == 6; }, 20s));
  int extra = connect_loopback(link_port);
  CHECK(closed_by_peer(extra, 20s));
  ::close(extra);
  for (int fd : idle) {
    CHECK(closed_by_peer(fd, 20s));
    ::close(fd);
  }
  // Random bytes from many clients.
  std::mt19937 rng(31);
  for (int i = 0; i < 100; ++i) {
    int fd = connect_loopback(link_port);
    std::string junk(static_cast<std::size_t>(rng() % 64 + 1), '\0');
    for (auto& c : junk)
      c = static_cast<char>(rng());
    ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
    ::close(fd);
  }
  auto l = links();
  CHECK(l["refused"].get<int>() >= 1);
  CHECK(l["bad"].get<int>() >= 3);
  CHECK(l["handshake_timeouts"].get<int>() >= 5);
  CHECK(l["lost"].get<int>() >= 1);  // the 4 GiB header
  CHECK(rss_kb(b->proc->pid()) < rss_before + 256 * 1024);
  // The remote_pool's own link was never touched.
  for (int i = 0; i < 5; ++i)
    CHECK(exec_far("ping").value("ok", false));
  CHECK(far()["links"] == 1);
  CHECK(far()["link"] == "up");
  CHECK(wait_until([&] { return links()["open"] == 1; }, 20s));
}

TEST_CASE_FIXTURE(remote_fixture, "listen and tls rules are config errors") {
  auto j = default_config();
  j["listen"] = "0.0.0.0:7000";
  auto r = parse_config(j);
  REQUIRE(!r);
  CHECK(detail_of(r.error()).find("config.listen: \"0.0.0.0\" is not a loopback address")
        != std::string::npos);
  j["insecure"] = true;
  CHECK(parse_config(j));
  j = default_config();
  j["listen"] = "localhost:70000";
  CHECK(detail_of(parse_config(j).error()).find("port") != std::string::npos);
  j = default_config();
  j["root"]["children"].push_back({{"id", "far"}, {"type", "remote_pool"}, {"host", "h"},
                                   {"port", 1}, {"tls", true}});
  CHECK(detail_of(parse_config(j).error()).find("root.children[3].tls: needs the node's top-level tls")
        != std::string::npos);
  j["root"]["children"][3].erase("tls");
  j["root"]["children"][3]["name"] = "default";
  CHECK(detail_of(parse_config(j).error()).find("duplicate pool name \"default\"")
        != std::string::npos);
  j = default_config();
  j["tls"] = {{"certificate", dir + "/none.pem"}, {"key", dir + "/none.key"},
              {"cafile", dir + "/none.pem"}};
  CHECK(detail_of(parse_config(j).error()).find("config.tls.certificate: cannot load")
        != std::string::npos);

  // The CLI refuses a plain listen off loopback before starting anything.
  std::ofstream(a_cfg) << default_config().dump();
  int code = 0;
  auto out = run_cli(loop, {"run", a_cfg, "--control", a_sock, "--listen", "0.0.0.0:" + std::to_string(port)},
                     &code);
  CHECK(code == 2);
  CHECK(out.find("not a loopback address") != std::string::npos);

  // An embedder's actor_system without the middleman: a clear error.
  test::system_config cfg;
  caf::actor_system sys{cfg};
  j = default_config();
  j["listen"] = "127.0.0.1:0";
  auto tc = parse_config(j);
  REQUIRE(tc);
  auto n = node::start(sys, *tc);
  REQUIRE(!n);
  CHECK(describe(n.error()).find("network_settings") != std::string::npos);
}

} // TEST_SUITE
