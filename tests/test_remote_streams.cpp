// Streams and cancellation through a remote_pool: the remote node is a real
// `dspex run` on loopback with the stream handlers
// (tests/handlers/stream_cmds.py) and small stream windows, the calling
// node runs in this process (node::stream, node::call, an actor's call).
// The router is also spoken to directly, as a peer would: its window holds
// without acks, and bad stream messages are dropped. Nothing asserts
// wall-clock time.
#include <doctest/doctest.h>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/pool/call.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>
#include <dspex/actors/remote/detail/request_link.hpp>
#include <dspex/actors/remote/network.hpp>
#include <dspex/actors/remote/remote_pool.hpp>
#include <dspex/cli/control.hpp>

#include "support/cli_process.hpp"
#include "support/loopback.hpp"
#include "support/system_config.hpp"
#include "support/test_node.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;

namespace {

constexpr int window = 4;  // the remote pool's worker.stream_window
constexpr int window_bytes = 1024;  // ... and its worker.stream_window_bytes

std::string read_file(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string temp_dir() {
  char tmpl[] = "/tmp/dspex-rs-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

json network_timing(json j) {
  j["heartbeat_interval_ms"] = 250;
  j["connection_timeout_ms"] = 4000;
  return j;
}

/// An answer, set once by a callback.
using answer_box = promise_box<std::optional<caf::expected<json>>>;

/// What a stream delivered to its callbacks.
struct collected {
  std::mutex mx;
  std::vector<json> chunks;
  std::size_t chunks_at_result = 0;
  int results = 0;
  answer_box result;

  chunk_callback on_chunk() {
    return [this](json c) {
      std::lock_guard<std::mutex> g(mx);
      chunks.push_back(std::move(c));
    };
  }
  result_callback on_result() {
    return [this](caf::expected<json> r) {
      {
        std::lock_guard<std::mutex> g(mx);
        chunks_at_result = chunks.size();
        ++results;
      }
      result.set(std::move(r));
    };
  }
  std::size_t count() {
    std::lock_guard<std::mutex> g(mx);
    return chunks.size();
  }
};

struct remote_streams_fixture {
  bridge::io_loop loop;
  std::string dir;
  int port = free_port();
  std::string b_sock, b_cfg, marker;
  std::unique_ptr<cli_process> b;
  test::system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::shared_ptr<node> n;

  remote_streams_fixture() : dir(temp_dir()), b_sock(dir + "/b.sock"), b_cfg(dir + "/b.json"),
                             marker(dir + "/marker") {
    std::ofstream(marker).flush();
    // The remote node: one worker with the stream handlers.
    auto bj = network_timing(default_config());
    auto& pool = bj["root"]["children"][1];
    pool["size"] = 1;
    pool["worker"]["handler_paths"] = json::array({std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"});
    pool["worker"]["handlers"] = json::array({"stream_cmds"});
    pool["worker"]["stream_window"] = window;
    pool["worker"]["stream_window_bytes"] = window_bytes;
    bj["listen"] = "127.0.0.1:" + std::to_string(port);
    std::ofstream(b_cfg) << bj.dump(2);
    b = std::make_unique<cli_process>(loop, std::vector<std::string>{"run", b_cfg, "--control", b_sock});
    REQUIRE_MESSAGE(wait_until([&] {
      auto s = remote_status();
      return s.contains("pools") && s["pools"]["default"].value("idle", 0) >= 1;
    }, 60s), b->output());
    // The calling node, here: a remote_pool `far` beside its own pool.
    auto aj = network_timing(small_tree("pool", 1));
    aj["root"]["children"].push_back({{"id", "far"},
                                      {"type", "remote_pool"},
                                      {"host", "127.0.0.1"},
                                      {"port", port},
                                      {"connect_timeout_ms", 3000},
                                      {"reconnect_min_ms", 50},
                                      {"reconnect_max_ms", 400}});
    auto tree = parse_config(aj);
    REQUIRE_MESSAGE(tree, why(tree));
    REQUIRE_FALSE(network_settings(cfg, *tree));
    sys = std::make_unique<caf::actor_system>(cfg);
    n = start_test_node(*sys, aj);
    REQUIRE(wait_until([&] { return far().value("state", "") == "connected"; }));
  }
  ~remote_streams_fixture() {
    if (n)
      n->stop();
    n.reset();
    sys.reset();
    b->stop();
    std::system(("rm -rf " + dir).c_str());
  }

  json remote_status() { return cli::control_call(b_sock, {{"op", "status"}}, 30s); }
  json remote_requests() { return remote_status()["pools"]["default"]["requests"]; }
  json far() {
    auto s = n->status();
    return s.contains("remotes") ? s["remotes"]["far"] : json::object();
  }
  bool marked(const std::string& what) { return read_file(marker).find(what) != std::string::npos; }
  static call_options on_far() { return call_options{"far", std::nullopt, 0ms}; }
};

} // namespace

TEST_SUITE("remote streams") {

TEST_CASE("a reply text: the fast path for a plain success gives what the full parse gives") {
  // What parse_reply must equal: the text parsed whole, its result taken.
  auto whole = [](const std::string& text) -> std::optional<json> {
    auto j = json::parse(text, nullptr, false);
    if (!j.is_object() || j.value("ok", false) != true || !j.contains("result"))
      return std::nullopt;
    return j["result"];
  };
  std::vector<std::string> texts;
  for (const json& v : {json::object(), json{{"status", "ok"}, {"pid", 12}, {"uptime_s", 0.25}},
                        json("pl\"ain\\ \u00e9 \n"), json(""), json(-3), json(1.5e300), json(nullptr),
                        json(true), json::array({1, json::array(), json::object()}),
                        json{{"}", "{"}, {"a", json::array({"}"})}}})
    texts.push_back(remote::reply_text(v));
  const std::string head = R"({"app":"dspex","protocol":1,"ok":true,"result":)";
  for (const char* tail : {R"(1,"extra":2})", R"(1,"result":2})", R"({"a":1}  )", R"(})", R"("a"}x)",
                           R"("a"}})", R"([1,2})", R"("\u0041"})", R"("a\x"})", "\"\xff\"}", R"(01})",
                           R"(nul})", R"(1 })", R"( 1})"})
    texts.push_back(head + tail);
  texts.push_back(remote::reply_text(make_error(errc::unavailable, "gone")));
  for (const auto& t : texts) {
    CAPTURE(t);
    auto fast = remote::parse_reply(t);
    auto expected = whole(t);
    REQUIRE(static_cast<bool>(fast) == expected.has_value());
    if (expected)
      CHECK(*fast == *expected);
  }
}

TEST_CASE("a hello says whether its caller wants a request link; without the field it does") {
  bool wants = false;
  CHECK(remote::check_hello(remote::hello_text(), &wants).empty());
  CHECK(wants);
  CHECK(remote::check_hello(remote::hello_text(false), &wants).empty());
  CHECK_FALSE(wants);
  CHECK(remote::check_hello(R"({"app":"dspex","protocol":1,"link":"no"})", &wants).empty());
  CHECK(wants);  // only false declines
  CHECK_FALSE(remote::check_hello(R"({"app":"other","protocol":1})", &wants).empty());
  CHECK_FALSE(wants);
}

TEST_CASE("a request link whose owner does not take its frames stops reading, and reads on once they are taken") {
  // The owner: an actor that does not receive until told, so every frame
  // the link reads waits in its mailbox (link_unread_bound).
  caf::actor_system_config cc;
  caf::actor_system sys{cc};
  caf::scoped_actor owner{sys};
  auto loop = std::make_shared<bridge::io_loop>();
  boost::asio::ip::tcp::acceptor acc(loop->context(), {boost::asio::ip::make_address("127.0.0.1"), 0});
  int peer = connect_loopback(acc.local_endpoint().port());
  boost::asio::ip::tcp::socket sock(loop->context());
  acc.accept(sock);
  auto link = std::make_shared<remote::request_link>(loop, std::move(sock), 1 << 20);
  link->start(owner->address(), 0, false);
  // The peer writes cancels until the kernel takes no more for a second.
  std::string flood;
  for (std::uint64_t id = 1; flood.size() < (1u << 20); ++id)
    remote::append_link_frame(flood, remote::link_kind::cancel, id);
  auto push = [&](std::chrono::milliseconds stall) {
    std::size_t sent = 0;
    auto quiet_since = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - quiet_since < stall && sent < (256u << 20)) {
      auto n = ::send(peer, flood.data(), flood.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        quiet_since = std::chrono::steady_clock::now();
        flood = flood.substr(static_cast<std::size_t>(n)) + flood.substr(0, static_cast<std::size_t>(n));
      } else {
        std::this_thread::sleep_for(5ms);
      }
    }
    return sent;
  };
  const auto sent = push(1000ms);
  // What waits in the mailbox: about link_unread_bound (one read past it),
  // not what was sent; the rest waits in the kernel, and the peer stalled.
  // Held here, the events keep their credit: the link stays paused.
  std::size_t frames = 0;
  std::vector<remote::link_event> held;
  constexpr std::uint64_t given_back = 99;  // (the link's own tag is 0)
  auto receive_all = [&](bool hold) {
    bool more = true;
    while (more)
      owner->receive(
        [&](remote::link_event& ev) {
          if (ev.generation != given_back)
            frames += ev.bodies.size();
          if (hold)
            held.push_back(std::move(ev));
        },
        caf::after(std::chrono::milliseconds(200)) >> [&] { more = false; });
  };
  receive_all(true);
  MESSAGE("sent " << sent / 1024 << " KiB before the peer stalled; " << held.size() << " events waiting");
  CHECK(sent < (256u << 20));
  CHECK(held.size() <= 64);
  // Taken: the link reads on, and what the peer could not send goes.
  const auto first = frames;
  CHECK(first > 0);
  // Given back through the mailbox, so that their credit returns inside
  // CAF, as in the node (tsan.supp: CAF's own handover is invisible to TSan).
  for (auto& ev : held) {
    ev.generation = given_back;
    owner->send(owner, std::move(ev));
  }
  held.clear();
  auto take_all = [&] { receive_all(false); };
  take_all();
  CHECK(frames > first);  // what the kernel held
  const auto second = frames;
  push(1000ms);
  take_all();
  CHECK(frames > second);  // and what the peer sends now
  // The link goes before the loop it holds (its last handler must not be
  // the one that destroys the loop, on the loop's own thread).
  link->close();
  std::weak_ptr<remote::request_link> gone = link;
  link.reset();
  take_all();
  ::close(peer);
  CHECK(wait_until([&] { return gone.expired(); }, 10s));
}

TEST_CASE("a request link frame: each kind reads back as written; a bad one is a protocol_error") {
  std::string out;
  remote::append_link_frame(out, remote::link_kind::hello, 0, "token");
  remote::append_link_frame(out, remote::link_kind::exec, 7, R"({"op":"exec"})");
  remote::append_link_frame(out, remote::link_kind::chunk, 9, "[1,2]", 3, true);
  remote::append_link_frame(out, remote::link_kind::ack, 9, {}, 3);
  remote::append_link_frame(out, remote::link_kind::cancel, 1ull << 40);
  bridge::frame_decoder dec;
  std::vector<std::string> bodies;
  REQUIRE(dec.feed(out.data(), out.size(), bodies) == bridge::frame_decoder::status::ok);
  REQUIRE(bodies.size() == 5);
  auto hello = remote::parse_link_frame(bodies[0]);
  REQUIRE(hello);
  CHECK((hello->kind == remote::link_kind::hello && hello->id == 0 && hello->text == "token"));
  auto exec = remote::parse_link_frame(bodies[1]);
  REQUIRE(exec);
  CHECK((exec->kind == remote::link_kind::exec && exec->id == 7 && exec->text == R"({"op":"exec"})"));
  auto chunk = remote::parse_link_frame(bodies[2]);
  REQUIRE(chunk);
  CHECK((chunk->kind == remote::link_kind::chunk && chunk->id == 9 && chunk->seq == 3 && chunk->ack
         && chunk->text == "[1,2]"));
  auto ack = remote::parse_link_frame(bodies[3]);
  REQUIRE(ack);
  CHECK((ack->kind == remote::link_kind::ack && ack->seq == 3 && ack->text.empty()));
  auto cancel = remote::parse_link_frame(bodies[4]);
  REQUIRE(cancel);
  CHECK((cancel->kind == remote::link_kind::cancel && cancel->id == (1ull << 40)));
  auto is_protocol_error = [](const std::string& body) {
    auto f = remote::parse_link_frame(body);
    return !f && code_of(f.error()) == errc::protocol_error;
  };
  CHECK(is_protocol_error(""));
  CHECK(is_protocol_error(std::string("\x02\0\0\0", 4)));          // shorter than its head
  CHECK(is_protocol_error(std::string(1, '\x07') + std::string(8, '\x01')));  // unknown kind
  CHECK(is_protocol_error(std::string(1, '\x02') + std::string(8, '\0')));    // exec with id 0
  CHECK(is_protocol_error(std::string(1, '\x01') + std::string(7, '\0') + "\x01"));  // hello with an id
  CHECK(is_protocol_error(std::string(1, '\x04') + std::string(7, '\0') + "\x01" + "abc"));  // chunk, no seq
}

TEST_CASE("a batch head: read in any spelling, refused unless it names one positive id per text") {
  auto h = remote::parse_batch_head(remote::batch_head_text({3, 18446744073709551615ULL, 7}, 4096), 3);
  REQUIRE(h);
  CHECK(h->ids == std::vector<std::uint64_t>{3, 18446744073709551615ULL, 7});
  CHECK(h->reply_bytes == 4096);
  auto spaced = remote::parse_batch_head(R"({ "ids": [5], "protocol": 1, "app": "dspex" })", 1);
  REQUIRE(spaced);
  CHECK(spaced->ids == std::vector<std::uint64_t>{5});
  CHECK(spaced->reply_bytes == 0);
  CHECK_FALSE(remote::parse_batch_head(remote::batch_head_text({3, 4}), 3));      // count
  CHECK_FALSE(remote::parse_batch_head(remote::batch_head_text({3, 4}), 1));
  CHECK_FALSE(remote::parse_batch_head(remote::batch_head_text({0}), 1));         // not positive
  CHECK_FALSE(remote::parse_batch_head(remote::batch_head_text({}), 0));
  CHECK(remote::parse_batch_head(remote::batch_head_text({1}) + " ", 1));
  CHECK_FALSE(remote::parse_batch_head(R"({"app":"dspex","protocol":2,"ids":[1]})", 1));
  CHECK_FALSE(remote::parse_batch_head(R"({"app":"dspex","protocol":1,"ids":[01]})", 1));
  CHECK_FALSE(remote::parse_batch_head(R"({"app":"dspex","protocol":1,"ids":[1],"batch":-1})", 1));
  CHECK_FALSE(remote::parse_batch_head(R"({"app":"dspex","protocol":1,"ids":[1,]})", 1));
}

TEST_CASE_FIXTURE(remote_streams_fixture, "a stream through a remote_pool: every chunk in order, then the result") {
  // 100 chunks through a window of 4: the acks cross back, or it stalls.
  collected c;
  n->stream("count", {{"n", 100}}, on_far(), c.on_chunk(), c.on_result());
  REQUIRE(c.result.wait());
  auto r = *c.result.get();
  REQUIRE_MESSAGE(r, why(r));
  CHECK(*r == json{{"total", 100}});
  std::lock_guard<std::mutex> g(c.mx);
  CHECK(c.chunks_at_result == 100);
  REQUIRE(c.chunks.size() == 100);
  for (int i = 0; i < 100; ++i)
    CHECK(c.chunks[i] == json{{"i", i}});
  auto f = far();
  CHECK(f["chunks"] == 100);
  CHECK(f["in_flight"] == 0);
  CHECK(f["bad_messages"] == 0);
  // The same generator called without a sink: its result, no chunks.
  auto plain = n->call("count", {{"n", 3}}, on_far()).get();
  REQUIRE(plain);
  CHECK(*plain == json{{"total", 3}});
  CHECK(far()["chunks"] == 100);
}

TEST_CASE_FIXTURE(remote_streams_fixture, "the byte window through a remote_pool: chunks past it, and each larger than it") {
  // Chunks of about 440 bytes: the worker stops at 3 outstanding (bytes),
  // before the chunk window (4); chunks of 3000: one at a time. The acks
  // the host asks for cross back through the router either way.
  struct run {
    std::string command;
    int n, size;
  };
  for (auto& r : {run{"blobs", 60, 400}, run{"blobs", 10, 3000}, run{"ablobs", 60, 400}}) {
    CAPTURE(r.command);
    CAPTURE(r.size);
    collected c;
    n->stream(r.command, {{"n", r.n}, {"size", r.size}}, on_far(), c.on_chunk(), c.on_result());
    REQUIRE(c.result.wait());
    auto res = *c.result.get();
    REQUIRE_MESSAGE(res, why(res));
    CHECK(*res == (r.command == "blobs" ? json{{"total", r.n}} : json(nullptr)));
    std::lock_guard<std::mutex> g(c.mx);
    CHECK(c.chunks_at_result == static_cast<std::size_t>(r.n));
    REQUIRE(c.chunks.size() == static_cast<std::size_t>(r.n));
    CHECK(r.n * r.size > 2 * window_bytes);
    for (auto& chunk : c.chunks)
      CHECK(chunk == std::string(static_cast<std::size_t>(r.size), 'x'));
  }
  auto f = far();
  CHECK(f["chunks"] == 130);
  CHECK(f["in_flight"] == 0);
  CHECK(f["bad_messages"] == 0);
}

TEST_CASE_FIXTURE(remote_streams_fixture, "cancel through a remote_pool reaches the remote handler") {
  answer_box got;
  auto h = n->call("spin", {{"marker", marker}}, on_far(), [&got](caf::expected<json> r) { got.set(std::move(r)); });
  REQUIRE(wait_until([&] { return marked("started"); }));
  h.cancel();
  REQUIRE(got.wait());
  auto r = *got.get();
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::cancelled));
  REQUIRE(wait_until([&] { return marked("finally"); }));
  REQUIRE(wait_until([&] { return remote_requests().value("cancelled", 0) == 1; }));
  CHECK(far()["cancelled"] == 1);
  // The remote worker serves on.
  auto p = n->call("pid", json::object(), on_far()).get();
  CHECK(p);
  CHECK(far()["in_flight"] == 0);
}

TEST_CASE_FIXTURE(remote_streams_fixture, "the calling actor dying cancels its remote request") {
  auto target = n->resolve("far");
  REQUIRE(target);
  auto caller = sys->spawn([far = *target, m = marker](caf::event_based_actor* s) {
    call(s, far, make_command("spin", {{"marker", m}}), 5).then([](json&) {}, [](caf::error&) {});
    return caf::behavior{[](int) {}};
  });
  REQUIRE(wait_until([&] { return marked("started"); }));
  caf::anon_send_exit(caller, caf::exit_reason::kill);
  REQUIRE(wait_until([&] { return marked("finally"); }));
  REQUIRE(wait_until([&] { return remote_requests().value("cancelled", 0) == 1; }));
  CHECK(far()["in_flight"] == 0);
}

TEST_CASE_FIXTURE(remote_streams_fixture, "a request cancelled in the turn it came never leaves: no cancel overtakes it") {
  // The caller runs on the node's one scheduler thread: its request and its
  // cancel are both in the remote_pool's mailbox before that runs, so the
  // request still waits in the batch when the cancel comes.
  auto target = n->resolve("far");
  REQUIRE(target);
  answer_box got;
  auto caller = sys->spawn([far = *target, m = marker, &got](caf::event_based_actor* s) {
    call(s, far, make_command("spin", {{"marker", m}}), 5)
      .then([&got](json& j) { got.set(caf::expected<json>(std::move(j))); },
            [&got](caf::error& e) { got.set(caf::expected<json>(std::move(e))); });
    cancel(s, far, 5);
    return caf::behavior{[](int) {}};
  });
  REQUIRE(got.wait());
  auto r = *got.get();
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::cancelled));
  // Had the spin reached the remote worker (its only one) uncancelled, this
  // would wait behind it until its deadline.
  auto p = n->call("pid", json::object(), call_options{"far", std::nullopt, 20000ms}).get();
  CHECK(p);
  CHECK_FALSE(marked("started"));
  CHECK(far()["in_flight"] == 0);
  caf::anon_send_exit(caller, caf::exit_reason::kill);
}

TEST_CASE_FIXTURE(remote_streams_fixture, "the remote node SIGKILLed mid-stream: the chunks, then node_down once") {
  collected c;
  n->stream("count", {{"n", 100000}, {"pause_s", 0.005}}, on_far(), c.on_chunk(), c.on_result());
  REQUIRE(wait_until([&] { return c.count() >= 10; }));
  b->proc->kill();
  REQUIRE(c.result.wait());
  auto r = *c.result.get();
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::node_down));
  std::this_thread::sleep_for(300ms);  // anything late would show now
  std::lock_guard<std::mutex> g(c.mx);
  CHECK(c.results == 1);
  CHECK(c.chunks.size() == c.chunks_at_result);
  CHECK(c.chunks.size() >= 10);
  for (std::size_t i = 0; i < c.chunks.size(); ++i)
    CHECK(c.chunks[i] == json{{"i", i}});
}

TEST_CASE_FIXTURE(remote_streams_fixture, "the router as a peer sees it: a bounded window, bad stream messages dropped") {
  auto router = sys->middleman().remote_actor("127.0.0.1", static_cast<std::uint16_t>(port));
  REQUIRE(router);
  caf::scoped_actor self{*sys};
  // It speaks to the router as a remote_pool does: this process screens
  // what its peers send (a remote_pool runs in it) and lets them answer it.
  auto as_client = router_guard::screening(sys->node(), self->id());
  auto next_chunk = [&](remote::stream_head& h, json& data) {
    bool got = false;
    self->receive(
      [&](remote::rchunk_atom, std::string& head, std::string& text) {
        auto parsed = remote::parse_head(head);
        REQUIRE(parsed);
        h = *parsed;
        auto d = remote::parse_data(text);
        REQUIRE(d);
        data = *d;
        got = true;
      },
      caf::after(std::chrono::milliseconds(700)) >> [] {});
    return got;
  };
  auto req = make_command("count", {{"n", 50}});
  auto pending = self->request(*router, caf::infinite, remote::rexec_atom::value,
                               remote::exec_text(req, "", 7, true));
  // No ack: the worker stops a whole window ahead.
  remote::stream_head h;
  json data;
  for (int i = 0; i < window; ++i) {
    REQUIRE(next_chunk(h, data));
    CHECK(h.id == 7);
    CHECK(h.seq == static_cast<std::uint64_t>(i));
    CHECK(data == json{{"i", i}});
  }
  CHECK_FALSE(next_chunk(h, data));
  // Bad input, dropped: an ack beyond what came, for another id,
  // unreadable; a cancel for an unknown id; requests with a bad id.
  self->send(*router, remote::rack_atom::value, remote::head_text({7, 40, false}));
  self->send(*router, remote::rack_atom::value, remote::head_text({8, 1, false}));
  self->send(*router, remote::rack_atom::value, std::string("{\"id\": "));
  self->send(*router, remote::rack_atom::value,
             std::string(R"({"app":"dspex","protocol":1,"id":-3,"seq":0})"));
  self->send(*router, remote::rcancel_atom::value, remote::head_text({99, 0, false}));
  self->send(*router, remote::rchunk_atom::value, std::string("{}"), std::string("[["));
  CHECK_FALSE(next_chunk(h, data));
  // A kind the router does not take is counted, not printed (CAF's default
  // would write it whole into the node's log).
  CHECK(remote_status()["listen"]["dropped_messages"] == 1);
  CHECK(b->output().find("[[") == std::string::npos);
  auto bad_exec = [&](const std::string& text) {
    std::string reply;
    self->request(*router, 10s, remote::rexec_atom::value, text)
      .receive([&](std::string& t) { reply = t; }, [&](caf::error& e) { reply = sys->render(e); });
    auto r = remote::parse_reply(reply);
    REQUIRE_FALSE(r);
    CHECK_MESSAGE(is(r.error(), errc::invalid_request), reply.substr(0, 300));
    return detail_of(r.error());
  };
  CHECK(bad_exec(remote::exec_text(req, "", 7, false)).find("in flight already") != std::string::npos);
  CHECK(bad_exec(R"({"app":"dspex","protocol":1,"command":"count","id":0})").find("id:") == 0);
  CHECK(bad_exec(R"({"app":"dspex","protocol":1,"command":"count","stream":true})").find("needs an id")
        != std::string::npos);
  // An ack for chunk 1 lets two more come (seq <= 1 + window).
  self->send(*router, remote::rack_atom::value, remote::head_text({7, 1, false}));
  for (int i = window; i < window + 2; ++i) {
    REQUIRE(next_chunk(h, data));
    CHECK(h.seq == static_cast<std::uint64_t>(i));
  }
  CHECK_FALSE(next_chunk(h, data));
  // Cancelled: the answer says so, and the worker serves on.
  self->send(*router, remote::rcancel_atom::value, remote::head_text({7, 0, false}));
  std::string reply;
  pending.receive([&](std::string& t) { reply = t; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  auto r = remote::parse_reply(reply);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::cancelled));
  auto p = n->call("pid", json::object(), on_far()).get();
  CHECK(p);
  // The remote_pool drops what does not come from its peer.
  auto far_actor = n->resolve("far");
  REQUIRE(far_actor);
  caf::anon_send(*far_actor, remote::rchunk_atom::value, remote::head_text({1, 0, false}), std::string("1"));
  self->send(*far_actor, ack_atom::value, std::uint64_t{12345}, std::uint64_t{0});
  self->send(*far_actor, cancel_atom::value, std::uint64_t{77});
  caf::anon_send(*far_actor, remote::rack_atom::value, std::string("of no kind it takes"));
  REQUIRE(wait_until([&] { return far()["bad_messages"] == 2; }));
  CHECK(far()["in_flight"] == 0);
}

TEST_CASE_FIXTURE(remote_streams_fixture, "batches: the router answers each request of an (rbatch) once, by its id") {
  auto router = sys->middleman().remote_actor("127.0.0.1", static_cast<std::uint16_t>(port));
  REQUIRE(router);
  caf::scoped_actor self{*sys};
  // It speaks to the router as a remote_pool does: this process screens
  // what its peers send (a remote_pool runs in it) and lets them answer it.
  auto as_client = router_guard::screening(sys->node(), self->id());
  std::string hello;
  self->request(*router, 10s, remote::rhello_atom::value, remote::hello_text())
    .receive([&](std::string& t) { hello = t; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  auto h = remote::parse_reply(hello);
  REQUIRE(h);
  CHECK((*h)["batch"].get<std::size_t>() > 0);
  CHECK((*h)["link"]["token"].is_string());
  // A caller that says it cannot use a request link is handed no token.
  self->request(*router, 10s, remote::rhello_atom::value, remote::hello_text(false))
    .receive([&](std::string& t) { hello = t; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  auto declined = remote::parse_reply(hello);
  REQUIRE(declined);
  CHECK_FALSE(declined->contains("link"));
  // Three requests: one good, one refused (no command), one whose text
  // names another id than the batch gives it.
  auto good = make_command("pid", json::object());
  auto other = remote::exec_text(good, "", 14);
  std::vector<std::string> texts{remote::exec_text(good, "", 11),
                                 R"({"app":"dspex","protocol":1,"command":"","id":12})", other};
  self->send(*router, remote::rbatch_atom::value, remote::batch_head_text({11, 12, 13}, 1 << 20), texts);
  std::map<std::uint64_t, caf::expected<json>> got;
  int messages = 0;
  while (got.size() < 3) {
    bool more = false;
    self->receive(
      [&](remote::rreplies_atom, std::string& head, std::vector<std::string>& replies) {
        auto ids = remote::parse_batch_head(head, replies.size());
        REQUIRE(ids);
        for (std::size_t i = 0; i < replies.size(); ++i) {
          CHECK(got.count(ids->ids[i]) == 0);  // once each
          got.emplace(ids->ids[i], remote::parse_reply(replies[i]));
        }
        ++messages;
        more = true;
      },
      caf::after(std::chrono::seconds(10)) >> [] {});
    REQUIRE(more);
  }
  REQUIRE(got.at(11));
  CHECK(got.at(11)->is_number_integer());
  REQUIRE_FALSE(got.at(12));
  CHECK(is(got.at(12).error(), errc::invalid_request));
  REQUIRE_FALSE(got.at(13));
  CHECK(detail_of(got.at(13).error()).find("batch's id") != std::string::npos);
  CHECK(messages <= 3);
  // A head that does not match its texts names nothing to answer: dropped.
  self->send(*router, remote::rbatch_atom::value, remote::batch_head_text({21, 22}), std::vector<std::string>{remote::exec_text(good, "", 21)});
  self->send(*router, remote::rbatch_atom::value, std::string("{\"ids\":[1]}"), std::vector<std::string>{remote::exec_text(good, "", 1)});
  bool anything = false;
  self->receive([&](remote::rreplies_atom, std::string&, std::vector<std::string>&) { anything = true; },
                caf::after(std::chrono::milliseconds(700)) >> [] {});
  CHECK_FALSE(anything);
  // The remote_pool batches (it said so in its status) and drops replies
  // that do not come from its peer.
  for (int i = 0; i < 5; ++i)
    CHECK(n->call("pid", json::object(), on_far()).get());
  auto f = far();
  CHECK(f["batches"].get<std::uint64_t>() >= 1);
  CHECK(f["batches"].get<std::uint64_t>() <= f["forwarded"].get<std::uint64_t>());
  auto far_actor = n->resolve("far");
  REQUIRE(far_actor);
  caf::anon_send(*far_actor, remote::rreplies_atom::value, remote::batch_head_text({1}),
                 std::vector<std::string>{remote::reply_text(json(1))});
  REQUIRE(wait_until([&] { return far()["bad_messages"] == 1; }));
  CHECK(far()["in_flight"] == 0);
}

TEST_CASE_FIXTURE(remote_streams_fixture, "a batched request past the remote_pool's request_timeout: command_timeout, cancelled there") {
  remote_pool_config rc;
  rc.name = "short";
  rc.host = "127.0.0.1";
  rc.port = static_cast<std::uint16_t>(port);
  rc.request_timeout = 300ms;
  caf::scoped_actor self{*sys};
  // It speaks to the router as a remote_pool does: this process screens
  // what its peers send (a remote_pool runs in it) and lets them answer it.
  auto as_client = router_guard::screening(sys->node(), self->id());
  auto rp = spawn_remote_pool(self.ptr(), rc);
  REQUIRE(rp);
  REQUIRE(wait_until([&] {
    json st;
    self->request(*rp, 5s, status_atom::value).receive([&](json& j) { st = j; }, [](caf::error&) {});
    return st.value("state", "") == "connected";
  }));
  caf::error err;
  self->request(*rp, caf::infinite, exec_atom::value, make_command("spin", {{"marker", marker}}))
    .receive([](json&) { FAIL("spin answered"); }, [&](caf::error& e) { err = std::move(e); });
  CHECK(is(err, errc::command_timeout));
  REQUIRE(wait_until([&] { return marked("finally"); }));
  json st;
  self->request(*rp, 5s, status_atom::value).receive([&](json& j) { st = j; }, [](caf::error&) {});
  CHECK(st["in_flight"] == 0);
  CHECK(st["batches"] == 1);
  // It serves on.
  bool ok = false;
  self->request(*rp, caf::infinite, exec_atom::value, make_command("pid", json::object()))
    .receive([&](json&) { ok = true; }, [](caf::error& e) { FAIL(caf::to_string(e)); });
  CHECK(ok);
  self->send_exit(*rp, caf::exit_reason::user_shutdown);
}

} // TEST_SUITE
