// The router port against hostile clients (actors/remote/router_guard.*): a real
// `dspex run --listen` node, raw TCP clients that send a BASP header
// announcing gigabytes, random headers, or nothing at all, and a real
// `dspex exec --node` that must be served throughout. Nothing asserts
// wall-clock time: a connection the node must close is awaited with a
// generous bound, and the node's memory is read from /proc.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>
#include <dspex/cli/control.hpp>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp/header.hpp>

#include "support/cli_process.hpp"
#include "support/wait.hpp"
#include "support/loopback.hpp"
#include "support/proc_status.hpp"
#include "test_paths.hpp"

#include <arpa/inet.h>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <random>
#include <sstream>
#include <thread>
#include <sys/socket.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

struct guarded_node {
  bridge::io_loop loop;
  std::string dir, sock, cfg;
  int port = free_port();
  std::unique_ptr<cli_process> p;

  /// `nofile`: the node runs under `prlimit --nofile=N:N` (0: as the test).
  explicit guarded_node(json extra = json::object(), int nofile = 0) {
    char tmpl[] = "/tmp/dspex-guard-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    sock = dir + "/n.sock";
    cfg = dir + "/n.json";
    auto j = default_config();
    j["root"]["children"][1]["size"] = 1;
    j["root"]["children"][1]["worker"]["fault_injection"] = true;
    j["listen"] = "127.0.0.1:" + std::to_string(port);
    j.update(extra);
    std::ofstream(cfg) << j.dump(2);
    std::vector<std::string> args{"run", cfg, "--control", sock};
    if (nofile > 0) {
      args.insert(args.begin(), {"--nofile=" + std::to_string(nofile) + ":" + std::to_string(nofile),
                                 DSPEX_TEST_CLI});
      std::vector<std::pair<std::string, std::string>> env;
#if defined(__SANITIZE_ADDRESS__)
      // UBSan's vptr check reads memory through a pipe it cannot make
      // without a spare descriptor, and then reports valid CAF objects as
      // having an invalid vptr: under ASan such a node reports, not halts.
      env.emplace_back("UBSAN_OPTIONS", "halt_on_error=0:print_stacktrace=0");
#endif
      p = std::make_unique<cli_process>(loop, args, env, "/usr/bin/prlimit");
    } else {
      p = std::make_unique<cli_process>(loop, args);
    }
    REQUIRE_MESSAGE(wait_until([&] { return status().contains("listen"); }, 60s), p->output());
  }
  ~guarded_node() {
    p->stop();
    std::system(("rm -rf " + dir).c_str());
  }
  json status() { return cli::control_call(sock, {{"op", "status"}}, 30s); }
  json guard() { return status()["listen"]["guard"]; }
  bool remote_ping() {
    cli_process c(loop, {"exec", "ping", "--node", "127.0.0.1:" + std::to_string(port),
                         "--timeout-ms", "20000"});
    if (!c.exited.wait(60s)) {
      MESSAGE("exec --node did not exit: " << c.output());
      return false;
    }
    if (c.exited.get().code() != 0)
      MESSAGE("exec --node failed: " << c.output());
    return c.exited.get().code() == 0;
  }
  int pid() { return p->proc->pid(); }
};

// This test as a BASP peer of the nodes: an actor system of its own, with
// a middleman, and an actor to speak from.
struct peer {
  caf::actor_system_config cc;
  caf::actor_system sys{with_middleman(cc)};
  caf::scoped_actor self{sys};

  static caf::actor_system_config& with_middleman(caf::actor_system_config& c) {
    c.load<caf::io::middleman>();
    return c;
  }
  // The router a node publishes on `port`.
  caf::actor connect(int port) {
    auto r = sys.middleman().remote_actor("127.0.0.1", static_cast<std::uint16_t>(port));
    REQUIRE(r);
    return *r;
  }
  // Whether a down message comes (an actor `self` monitors went down).
  bool down_within(std::chrono::seconds limit) {
    bool down = false;
    self->receive([&](caf::down_msg&) { down = true; }, caf::after(limit) >> [] {});
    return down;
  }
  // Whether `router` answers a hello with a valid reply.
  bool hello(const caf::actor& router) {
    std::string text;
    self->request(router, 10s, remote::rhello_atom::value, remote::hello_text(false))
      .receive([&](std::string& t) { text = t; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
    return static_cast<bool>(remote::parse_reply(text));
  }
};

} // namespace

TEST_SUITE("router_guard") {

TEST_CASE("the guard is bound in this executable and in dspex") {
  guarded_node n;
  CHECK(n.guard()["guard_active"] == true);
}

TEST_CASE("a BASP header announcing 4 GiB closes that connection alone, before any allocation") {
  guarded_node n;
  auto before = rss_kb(n.pid());
  REQUIRE(before > 0);
  for (int i = 0; i < 3; ++i) {
    int fd = connect_loopback(n.port);
    // operation client_handshake, padding, flags, payload_len 0xfffffff0
    // (huge in either byte order), then operation data and actor ids.
    unsigned char hdr[32] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0xf0};
    REQUIRE(::send(fd, hdr, sizeof hdr, MSG_NOSIGNAL) == 32);
    CHECK(closed_by_peer(fd, 20s));
    ::close(fd);
  }
  CHECK(n.guard()["oversized_messages"].get<int>() >= 3);
  // A 4 GiB zero-filled buffer would show; a few MB of noise will not.
  CHECK(rss_kb(n.pid()) < before + 256 * 1024);
  CHECK(n.remote_ping());
}

TEST_CASE("random headers from many clients: the node survives, bounded, and serves on") {
  guarded_node n;
  auto before = rss_kb(n.pid());
  std::mt19937 rng(29);
  for (int i = 0; i < 300; ++i) {
    int fd = connect_loopback(n.port);
    unsigned char hdr[32];
    for (auto& b : hdr)
      b = static_cast<unsigned char>(rng());
    hdr[0] = static_cast<unsigned char>(rng() % 8);  // mostly valid operations
    ::send(fd, hdr, sizeof hdr, MSG_NOSIGNAL);
    ::close(fd);
  }
  CHECK(rss_kb(n.pid()) < before + 256 * 1024);
  CHECK(n.remote_ping());
}

TEST_CASE("connections that never handshake are shut after the timeout; over the cap one is refused") {
  guarded_node n({{"listen_max_connections", 8}, {"listen_handshake_timeout_ms", 300}});
  std::vector<int> idle;
  for (int i = 0; i < 8; ++i)
    idle.push_back(connect_loopback(n.port));
  // Each one is in the node's count before the next test step.
  REQUIRE(wait_until([&] { return n.guard()["connections"] == 8; }, 20s));
  int extra = connect_loopback(n.port);  // the kernel accepts; the node refuses it
  CHECK(closed_by_peer(extra, 20s));
  ::close(extra);
  for (int fd : idle) {
    CHECK(closed_by_peer(fd, 20s));
    ::close(fd);
  }
  auto g = n.guard();
  CHECK(g["refused"].get<int>() >= 1);
  CHECK(g["handshake_timeouts"].get<int>() >= 8);
  // A real client handshakes in time and is served once slots are free.
  CHECK(wait_until([&] { return n.remote_ping(); }, 20s));
}

TEST_CASE("an idle client after its handshake is dropped by the connection timeout") {
  // The BASP handshake done by a real client that then stops (SIGSTOP): the
  // node's connection timeout drops it, and its slot is free again.
  // (Above the exec client's own heartbeat interval, 1 s by default.)
  guarded_node n({{"listen_max_connections", 4},
                  {"heartbeat_interval_ms", 100},
                  {"connection_timeout_ms", 2500}});
  cli_process stuck(n.loop, {"exec", "fault_sleep", R"({"seconds": 3})", "--node",
                             "127.0.0.1:" + std::to_string(n.port), "--timeout-ms", "60000"});
  REQUIRE(wait_until([&] { return n.guard()["connections"] == 1; }, 30s));
  stuck.proc->signal(SIGSTOP);
  CHECK(wait_until([&] { return n.guard()["connections"] == 0; }, 30s));
  stuck.proc->signal(SIGCONT);
  stuck.proc->kill();
  CHECK(n.remote_ping());
}

long cpu_ticks(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto rest = text.substr(text.rfind(')') + 2);  // after "pid (comm) "
  std::istringstream fields(rest);
  std::string f;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14)
      utime = std::stol(f);
    if (i == 15)
      stime = std::stol(f);
  }
  return utime + stime;
}

TEST_CASE("out of descriptors: connections are shed, the node does not spin, and serves again") {
  // 64 descriptors for the whole node; the cap is far above, so accept
  // itself fails with EMFILE once the node's table is full.
  guarded_node n({{"listen_max_connections", 10000}, {"listen_handshake_timeout_ms", 600000}}, 64);
  std::vector<int> clients;
  for (int i = 0; i < 120; ++i)
    clients.push_back(connect_loopback(n.port));
  // The node's table fills and the rest meet EMFILE (shed at once: each
  // such client sees its connection closed).
  CHECK(closed_by_peer(clients.back(), 30s));
  // With the listener readable and accept failing, CAF's loop would spin
  // at 100% of a core; shed connections leave nothing pending. (No status
  // call meanwhile: the control socket has no descriptor to spare either.)
  auto hz = ::sysconf(_SC_CLK_TCK);
  auto t0 = cpu_ticks(n.pid());
  std::this_thread::sleep_for(2s);
  auto used = cpu_ticks(n.pid()) - t0;
  CHECK_MESSAGE(used < hz, "the node used " << used << " ticks of " << 2 * hz << " in 2 s");
  for (int fd : clients)
    ::close(fd);
  CHECK(wait_until([&] { return n.remote_ping(); }, 30s));
  CHECK(n.guard()["refused"].get<int>() > 0);
}

TEST_CASE("a peer cannot reach another node through a listening node, nor speak as it") {
  // The peer (this process) is connected to both nodes. It sends to b's
  // router as c's router: CAF sends that as a routed message naming c as
  // its source, which b would believe, and answer c through the peer.
  guarded_node b, c;
  peer p;
  auto rb = p.connect(b.port);
  auto rc = p.connect(c.port);
  p.self->monitor(rb);
  caf::send_as(rc, rb, remote::rhello_atom::value, remote::hello_text(false));
  // b closes that connection: every proxy of its actors here goes down.
  CHECK(p.down_within(30s));
  CHECK_MESSAGE(b.guard()["relays_refused"] == 1, b.status().dump() << b.p->output());
  // Nothing reached c: its router dropped nothing, and serves.
  std::this_thread::sleep_for(300ms);
  CHECK(c.status()["listen"]["dropped_messages"] == 0);
  CHECK(c.remote_ping());
  // b serves the same peer again, as itself, on a new connection.
  CHECK(p.hello(p.connect(b.port)));
  CHECK(b.remote_ping());
}

TEST_CASE("a peer's control messages are refused: the router lives, and serves every other caller") {
  guarded_node b;
  peer p;
  // Each of these would end the router, cancel another caller's requests,
  // link the node's own actors or answer the router's own requests; b
  // closes the connection that sent it (every proxy here goes down).
  using send_fn = std::function<void(const caf::actor&)>;
  std::vector<std::pair<std::string, send_fn>> attacks{
    {"exit kill", [](const caf::actor& r) { caf::anon_send_exit(r, caf::exit_reason::kill); }},
    {"async error", [](const caf::actor& r) { caf::anon_send(r, caf::make_error(caf::sec::runtime_error)); }},
    {"down_msg", [](const caf::actor& r) { caf::anon_send(r, caf::down_msg{r.address(), caf::exit_reason::kill}); }},
    {"link", [](const caf::actor& r) { caf::anon_send(r, caf::link_atom::value, caf::actor_cast<caf::strong_actor_ptr>(r)); }},
    {"a handler's own atom", [](const caf::actor& r) { caf::anon_send(r, caf::atom("status")); }},
    {"response", [&](const caf::actor& r) {
       r->enqueue(caf::make_mailbox_element(p.self->ctrl(), caf::make_message_id(1).response_id(), {},
                                            caf::make_error(caf::sec::runtime_error)),
                  nullptr);
     }},
  };
  int refused = 0;
  for (auto& [what, attack] : attacks) {
    CAPTURE(what);
    auto r = p.connect(b.port);
    p.self->monitor(r);
    attack(r);
    CHECK(p.down_within(30s));
    CHECK(b.guard()["messages_refused"] == ++refused);
    CHECK(b.status()["listen"]["dropped_messages"] == 0);  // the router answers
  }
  // A message to one of CAF's named servers is dropped; the connection stays.
  auto r = p.connect(b.port);
  const int dropped = b.guard()["messages_dropped"].get<int>();
  auto basp = p.sys.middleman().named_broker<caf::io::basp_broker>(caf::atom("BASP"));
  p.self->send(basp, caf::forward_atom::value, r.node(), caf::atom("ConfigServ"),
               caf::make_message(caf::subscribe_atom::value, std::string("key")));
  REQUIRE(wait_until([&] { return b.guard()["messages_dropped"].get<int>() > dropped; }, 30s));
  CHECK(p.hello(r));
  CHECK(b.guard()["messages_refused"] == refused);
  CHECK(b.remote_ping());
}

TEST_CASE("a client handshake naming the node itself is refused") {
  // BASP takes the node a client handshake names on trust: named as the
  // node itself, the peer's routed messages would pass as from the node's
  // own actors. Written by hand, as CAF would, with the node's own id.
  guarded_node b;
  peer p;  // (for CAF's serializers)
  auto& sys = p.sys;
  int fd = connect_loopback(b.port);
  auto read_exactly = [&](std::size_t n) {
    std::vector<char> buf(n);
    REQUIRE(::recv(fd, buf.data(), n, MSG_WAITALL) == static_cast<ssize_t>(n));
    return buf;
  };
  namespace basp = caf::io::basp;
  basp::header hdr;
  auto head = read_exactly(basp::header_size);
  caf::binary_deserializer hd{sys, head};
  REQUIRE_FALSE(hd(hdr));
  REQUIRE(hdr.operation == basp::message_type::server_handshake);
  auto payload = read_exactly(hdr.payload_len);
  caf::binary_deserializer pd{sys, payload};
  caf::node_id node;
  REQUIRE_FALSE(pd(node));
  std::vector<char> body, out;
  caf::binary_serializer ps{sys, body};
  REQUIRE_FALSE(ps(node));
  basp::header ch{basp::message_type::client_handshake, 0, static_cast<uint32_t>(body.size()), 0, 0, 0};
  caf::binary_serializer hs{sys, out};
  REQUIRE_FALSE(hs(ch));
  out.insert(out.end(), body.begin(), body.end());
  REQUIRE(::send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size()));
  CHECK(closed_by_peer(fd, 20s));
  ::close(fd);
  CHECK(b.guard()["relays_refused"] == 1);
  CHECK(b.remote_ping());
}

TEST_CASE("a peer speaking from more live actors than max_peer_actors is cut off; one that lets them go is not") {
  // CAF keeps a proxy for each actor a peer sends from (the router a
  // monitored caller) until the peer says it is down: a peer naming fresh
  // actor ids would grow the node without bound.
  guarded_node b;
  peer p;
  auto rb = p.connect(b.port);
  // First, twice the bound in turn, each gone before the next: down
  // messages keep the count low.
  const int bound = static_cast<int>(router_guard::max_peer_actors);
  for (int i = 0; i < 2 * bound; ++i) {
    caf::scoped_actor one{p.sys};
    one->request(rb, 10s, remote::rexec_atom::value, std::string("{}"))
      .receive([](std::string&) {}, [](caf::error& e) { FAIL(caf::to_string(e)); });
  }
  CHECK(b.guard()["actors_refused"] == 0);
  // Then as many alive at once, each sending once: cut off past the bound.
  p.self->monitor(rb);
  std::vector<caf::actor> alive;
  for (int i = 0; i < bound + 50; ++i)
    alive.push_back(p.sys.spawn([r = rb](caf::event_based_actor* a) {
      a->send(r, remote::rexec_atom::value, std::string("{}"));
      return caf::behavior{[](const std::string&) {}, [](caf::error&) {}};
    }));
  CHECK(p.down_within(30s));
  CHECK(b.guard()["actors_refused"] == 1);
  for (auto& a : alive)
    caf::anon_send_exit(a, caf::exit_reason::kill);
  CHECK(b.remote_ping());
}

TEST_CASE("listen limits are config errors when out of range") {
  auto j = default_config();
  j["listen_max_connections"] = 0;
  CHECK_FALSE(parse_config(j));
  j = default_config();
  j["listen_handshake_timeout_ms"] = 0;
  CHECK_FALSE(parse_config(j));
  j = default_config();
  j["max_remote_message_bytes"] = 10;
  CHECK_FALSE(parse_config(j));
  j = default_config();
  j["listen_max_connections"] = 16;
  j["listen_handshake_timeout_ms"] = 250;
  j["max_remote_message_bytes"] = 1 << 20;
  auto c = parse_config(j);
  REQUIRE(c);
  CHECK(c->listen_limits.max_connections == 16);
  CHECK(c->listen_limits.handshake_timeout == 250ms);
  CHECK(c->max_remote_message_bytes == (1u << 20));
}

}
