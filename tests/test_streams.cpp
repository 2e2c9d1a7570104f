// Streams and cancellation through a real pool of real Python workers
// (protocol 2): chunks in order with a credit window, cancellation by the
// caller, by its death and by the deadline (soft, then hard), a worker
// killed mid-stream, and chunks that break the protocol.
#include <doctest/doctest.h>

#include "support/pool_fixture.hpp"

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/pool/call.hpp>
#include <dspex/actors/pool/detail/stream_credit.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;

namespace {

// What a sink actor saw, for the test thread to read.
struct sink_log {
  std::mutex mx;
  std::vector<stream_chunk> chunks;
  bool acking = true;
  std::size_t size() {
    std::lock_guard<std::mutex> g(mx);
    return chunks.size();
  }
};

// Collects chunks; acks them while the log says so. (ack, go) makes it ack
// the last chunk it holds and from then on.
caf::behavior sink_actor(caf::event_based_actor* self, std::shared_ptr<sink_log> log) {
  return {
    [self, log](chunk_atom, stream_chunk& c) {
      bool ack;
      {
        std::lock_guard<std::mutex> g(log->mx);
        log->chunks.push_back(c);
        ack = log->acking;
      }
      if (ack)
        ack_chunk(self, c);
    },
    [self, log](ack_atom, caf::actor& worker) {
      std::lock_guard<std::mutex> g(log->mx);
      log->acking = true;
      if (!log->chunks.empty())
        self->send(worker, ack_atom::value, log->chunks.back().wire, log->chunks.back().seq);
    },
  };
}

std::string handlers_dir() { return std::string(DSPEX_TEST_SOURCE_DIR) + "/tests/handlers"; }

pool_config stream_pool(std::size_t size = 1) {
  auto c = pool_fixture::test_pool_config(size);
  c.worker.handler_paths = {handlers_dir()};
  c.worker.handler_modules = {"stream_cmds"};
  c.worker.timeout_grace = 3s;
  return c;
}

std::string temp_marker() {
  char path[] = "/tmp/dspex-stream-XXXXXX";
  int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  return path;
}

std::string read_file(const std::string& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json pool_status(pool_fixture& f) {
  json out;
  f.self->request(f.pool(), caf::infinite, status_atom::value)
    .receive([&](json& j) { out = std::move(j); }, [](caf::error&) {});
  return out;
}

int worker_pid(pool_fixture& f) {
  int pid = -1;
  f.self->request(f.pool(), caf::infinite, exec_atom::value, make_command("pid"))
    .receive([&](json& j) { pid = j.get<int>(); }, [](caf::error& e) { FAIL(describe(e)); });
  return pid;
}

// A chunk frame's body as the worker wrote it: what the byte window counts
// (bridge::reply::bytes). nlohmann orders the keys otherwise; for these
// ASCII chunks the length is the same.
std::size_t frame_bytes(const stream_chunk& c) {
  return json{{"id", c.wire}, {"type", "chunk"}, {"seq", c.seq}, {"data", c.data}}.dump().size();
}

caf::actor only_worker(pool_fixture& f) {
  std::vector<caf::actor> workers;
  f.self->request(f.pool(), caf::infinite, workers_atom::value)
    .receive([&](std::vector<caf::actor>& ws) { workers = std::move(ws); }, [](caf::error&) {});
  REQUIRE(workers.size() == 1);
  return workers[0];
}

// Streams `command` to a new sink; the answer (or the error, failed).
json stream_to(pool_fixture& f, const caf::actor& sink, const std::string& command, json args,
               std::uint64_t ref) {
  auto req = make_command(command, std::move(args));
  req.sink = sink;
  req.ref = ref;
  json result;
  f.self->request(f.pool(), caf::infinite, exec_atom::value, req)
    .receive([&](json& j) { result = std::move(j); }, [](caf::error& e) { FAIL(describe(e)); });
  return result;
}

} // namespace

TEST_SUITE("streams") {

TEST_CASE("stream_credit: an ack asked once half of either window came, then counted anew") {
  stream_credit by_chunks{stream_limits{8, 1 << 20}};
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 3; ++i)
      CHECK_FALSE(by_chunks.take(100));
    CHECK(by_chunks.take(100));  // the 4th chunk: half of 8
  }
  stream_credit by_bytes{stream_limits{1024, 1000}};
  CHECK_FALSE(by_bytes.take(300));
  CHECK(by_bytes.take(200));     // 500: half of 1000
  CHECK_FALSE(by_bytes.take(499));
  CHECK(by_bytes.take(1));
  CHECK(by_bytes.take(5000));    // one chunk larger than the window
  CHECK(by_bytes.take(5000));
  stream_credit no_bytes{stream_limits{4, 0}};  // no byte window: chunks only
  CHECK_FALSE(no_bytes.take(1u << 30));
  CHECK(no_bytes.take(1u << 30));
  stream_credit one{stream_limits{1, 0}};       // window 1: every chunk
  CHECK(one.take(1));
  CHECK(one.take(1));
}

TEST_CASE_FIXTURE(pool_fixture, "a generator streams its chunks in order, then its result") {
  REQUIRE_FALSE(start(stream_pool()));
  REQUIRE_FALSE(await_pool_ready());
  auto log = std::make_shared<sink_log>();
  auto sink = sys.spawn(sink_actor, log);
  auto req = make_command("count", {{"n", 100}});
  req.sink = sink;
  req.ref = 1;
  json result;
  self->request(pool(), caf::infinite, exec_atom::value, req)
    .receive([&](json& j) { result = std::move(j); }, [](caf::error& e) { FAIL(describe(e)); });
  CHECK(result == json{{"total", 100}});
  // Every chunk was enqueued at the sink before the answer was sent.
  REQUIRE(wait_until([&] { return log->size() == 100; }));
  for (std::size_t i = 0; i < 100; ++i) {
    CHECK(log->chunks[i].seq == i);
    CHECK(log->chunks[i].data == json{{"i", i}});
    CHECK(log->chunks[i].ref == 1);
  }
  // A unary caller of the same generator gets its return value.
  self->request(pool(), caf::infinite, exec_atom::value, make_command("count", {{"n", 2}}))
    .receive([&](json& j) { CHECK(j == json{{"total", 2}}); },
             [](caf::error& e) { FAIL(describe(e)); });
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
}

TEST_CASE_FIXTURE(pool_fixture, "a sink that takes nothing holds the stream at the window") {
  auto c = stream_pool();
  c.worker.stream_window = 8;
  REQUIRE_FALSE(start(c));
  REQUIRE_FALSE(await_pool_ready());
  auto log = std::make_shared<sink_log>();
  log->acking = false;
  auto sink = sys.spawn(sink_actor, log);
  auto req = make_command("count", {{"n", 50}});
  req.sink = sink;
  req.ref = 9;
  auto h = self->request(pool(), caf::infinite, exec_atom::value, req);
  REQUIRE(wait_until([&] { return log->size() == 8; }));
  // The worker waits for credit: nothing beyond the window arrives.
  std::this_thread::sleep_for(300ms);
  CHECK(log->size() == 8);
  // Credit from the sink (acking its last chunk to the worker) lets the
  // rest through.
  std::vector<caf::actor> workers;
  self->request(pool(), caf::infinite, workers_atom::value)
    .receive([&](std::vector<caf::actor>& ws) { workers = std::move(ws); }, [](caf::error&) {});
  REQUIRE(workers.size() == 1);
  self->send(sink, ack_atom::value, workers[0]);
  json result;
  h.receive([&](json& j) { result = std::move(j); }, [](caf::error& e) { FAIL(describe(e)); });
  CHECK(result == json{{"total", 50}});
  REQUIRE(wait_until([&] { return log->size() == 50; }));
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
}

TEST_CASE_FIXTURE(pool_fixture, "small chunks past the byte window: in order, an ack asked each half window") {
  // worker.stream_window_bytes 1024: chunks of 45 to 120 bytes, tens of
  // KiB in all. The host asks for an ack once half of either window came
  // (stream_credit.hpp), or worker and host wait for each other.
  auto c = stream_pool();
  c.worker.stream_window_bytes = 1024;
  REQUIRE_FALSE(start(c));
  REQUIRE_FALSE(await_pool_ready());
  struct run {
    std::string command;
    json args;
    json result;
    std::size_t n;
  };
  for (auto& r : {run{"count", {{"n", 1000}}, {{"total", 1000}}, 1000},
                  run{"blobs", {{"n", 300}, {"size", 64}}, {{"total", 300}}, 300},
                  run{"ablobs", {{"n", 300}, {"size", 64}}, nullptr, 300}}) {
    CAPTURE(r.command);
    auto log = std::make_shared<sink_log>();
    auto sink = sys.spawn(sink_actor, log);
    CHECK(stream_to(*this, sink, r.command, r.args, 5) == r.result);
    REQUIRE(wait_until([&] { return log->size() == r.n; }));
    std::size_t total = 0, since = 0, flagged = 0;
    for (std::size_t i = 0; i < r.n; ++i) {
      auto& ch = log->chunks[i];
      CHECK(ch.seq == i);
      if (r.command == "count")
        CHECK(ch.data == json{{"i", i}});
      else
        CHECK(ch.data == std::string(64, 'x'));
      total += frame_bytes(ch);
      since += frame_bytes(ch);
      CHECK(ch.ack == (since >= 512));  // 512 bytes come long before 512 chunks
      if (ch.ack) {
        since = 0;
        ++flagged;
      }
    }
    CHECK(total > 20 * 1024);
    CHECK(flagged >= total / 1024);
    caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  }
}

TEST_CASE_FIXTURE(pool_fixture, "chunks each larger than the byte window go one at a time, and complete") {
  auto c = stream_pool();
  c.worker.stream_window_bytes = 1024;
  REQUIRE_FALSE(start(c));
  REQUIRE_FALSE(await_pool_ready());
  for (std::string command : {"blobs", "ablobs"}) {
    CAPTURE(command);
    auto log = std::make_shared<sink_log>();
    auto sink = sys.spawn(sink_actor, log);
    auto result = stream_to(*this, sink, command, {{"n", 30}, {"size", 5000}}, 6);
    CHECK(result == (command == "blobs" ? json{{"total", 30}} : json(nullptr)));
    REQUIRE(wait_until([&] { return log->size() == 30; }));
    for (std::size_t i = 0; i < 30; ++i) {
      CHECK(log->chunks[i].seq == i);
      CHECK(log->chunks[i].data == std::string(5000, 'x'));
      CHECK(log->chunks[i].ack);  // each is more than half the window
    }
    caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  }
}

TEST_CASE_FIXTURE(pool_fixture, "a sink that takes nothing holds at most the byte window plus one chunk") {
  // The chunk window (1024, the default) is far off: bytes bound it.
  constexpr std::size_t window_bytes = 4096;
  auto c = stream_pool();
  c.worker.stream_window_bytes = window_bytes;
  REQUIRE_FALSE(start(c));
  REQUIRE_FALSE(await_pool_ready());
  auto worker = only_worker(*this);
  for (int size : {100, 300, 5000}) {
    CAPTURE(size);
    auto log = std::make_shared<sink_log>();
    log->acking = false;
    auto sink = sys.spawn(sink_actor, log);
    auto req = make_command("blobs", {{"n", 200}, {"size", size}});
    req.sink = sink;
    req.ref = 10 + static_cast<std::uint64_t>(size);
    auto h = self->request(pool(), caf::infinite, exec_atom::value, req);
    // Until the worker waits for credit: no chunk for 300 ms.
    REQUIRE(wait_until([&] { return log->size() > 0; }));
    for (std::size_t before = 0; before != log->size();) {
      before = log->size();
      std::this_thread::sleep_for(300ms);
    }
    std::size_t held = 0, largest = 0, n = 0;
    {
      std::lock_guard<std::mutex> g(log->mx);
      n = log->chunks.size();
      for (auto& ch : log->chunks) {
        held += frame_bytes(ch);
        largest = std::max(largest, frame_bytes(ch));
      }
    }
    CAPTURE(n);
    CHECK(n < 200);
    CHECK(held <= window_bytes + largest);
    CHECK(held >= window_bytes);  // it stopped at the window, not before
    if (size > static_cast<int>(window_bytes))
      CHECK(n == 1);
    // Credit from the sink lets the rest through.
    self->send(sink, ack_atom::value, worker);
    h.receive([&](json& j) { CHECK(j == json{{"total", 200}}); }, [](caf::error& e) { FAIL(describe(e)); });
    REQUIRE(wait_until([&] { return log->size() == 200; }));
    for (std::size_t i = 0; i < 200; ++i)
      CHECK(log->chunks[i].seq == i);
    caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  }
}

TEST_CASE_FIXTURE(pool_fixture, "a caller's cancel reaches the handler, and the worker serves on") {
  REQUIRE_FALSE(start(stream_pool()));
  REQUIRE_FALSE(await_pool_ready());
  auto pid = worker_pid(*this);
  auto marker = temp_marker();
  auto req = make_command("spin", {{"marker", marker}});
  req.ref = 42;
  auto h = self->request(pool(), caf::infinite, exec_atom::value, req);
  REQUIRE(wait_until([&] { return read_file(marker).find("started") != std::string::npos; }));
  self->send(pool(), cancel_atom::value, std::uint64_t{42});
  caf::error got;
  h.receive([](json&) { FAIL("a cancelled request answered"); }, [&](caf::error& e) { got = e; });
  CHECK(is(got, errc::cancelled));
  REQUIRE(wait_until([&] { return read_file(marker).find("finally") != std::string::npos; }));
  // Same process, serving again, and the pool counts it cancelled, not ok.
  CHECK(worker_pid(*this) == pid);
  REQUIRE(wait_until([&] { return pool_status(*this)["requests"]["cancelled"] == 1; }));
  ::unlink(marker.c_str());
}

TEST_CASE_FIXTURE(pool_fixture, "a caller that dies cancels its request") {
  REQUIRE_FALSE(start(stream_pool()));
  REQUIRE_FALSE(await_pool_ready());
  auto marker = temp_marker();
  auto p = pool();
  auto caller = sys.spawn([p, marker](caf::event_based_actor* s) {
    call(s, p, make_command("spin", {{"marker", marker}}), 5).then([](json&) {}, [](caf::error&) {});
  });
  REQUIRE(wait_until([&] { return read_file(marker).find("started") != std::string::npos; }));
  caf::anon_send_exit(caller, caf::exit_reason::kill);
  REQUIRE(wait_until([&] { return read_file(marker).find("finally") != std::string::npos; }));
  ::unlink(marker.c_str());
}

TEST_CASE_FIXTURE(pool_fixture, "at the deadline the handler is cancelled and the process kept (soft)") {
  REQUIRE_FALSE(start(stream_pool()));
  REQUIRE_FALSE(await_pool_ready());
  auto pid = worker_pid(*this);
  auto marker = temp_marker();
  caf::error got;
  self->request(pool(), caf::infinite, exec_atom::value,
                make_command("spin", {{"marker", marker}}, std::nullopt, 300ms))
    .receive([](json&) { FAIL("answered"); }, [&](caf::error& e) { got = e; });
  CHECK(is(got, errc::command_timeout));
  REQUIRE(wait_until([&] { return read_file(marker).find("finally") != std::string::npos; }));
  CHECK(worker_pid(*this) == pid);
  REQUIRE(wait_until([&] { return pool_status(*this)["timeouts"]["soft"] == 1; }));
  CHECK(pool_status(*this)["timeouts"]["hard"] == 0);
  ::unlink(marker.c_str());
}

TEST_CASE_FIXTURE(pool_fixture, "a handler stuck in C past its grace is replaced (hard)") {
  auto c = stream_pool();
  c.worker.timeout_grace = 300ms;
  REQUIRE_FALSE(start(c));
  REQUIRE_FALSE(await_pool_ready());
  auto pid = worker_pid(*this);
  caf::error got;
  self->request(pool(), caf::infinite, exec_atom::value,
                make_command("stuck_in_c", {{"s", 30}}, std::nullopt, 300ms))
    .receive([](json&) { FAIL("answered"); }, [&](caf::error& e) { got = e; });
  CHECK(is(got, errc::command_timeout));
  REQUIRE(wait_until([&] { return pool_status(*this)["replaced"]["timeout"] == 1; }));
  CHECK(pool_status(*this)["timeouts"] == json{{"soft", 0}, {"hard", 1}});
  REQUIRE(wait_until([&] {
    int now = -1;
    self->request(pool(), caf::infinite, exec_atom::value, make_command("pid"))
      .receive([&](json& j) { now = j.get<int>(); }, [](caf::error&) {});
    return now > 0 && now != pid;
  }));
}

TEST_CASE_FIXTURE(pool_fixture, "a request held in a worker's grace is cancelled there") {
  // Straight to a worker on its own: in its grace it holds new work.
  auto wc = test_worker_config("solo");
  wc.handler_paths = {handlers_dir()};
  wc.handler_modules = {"stream_cmds"};
  wc.timeout_grace = 5s;
  auto w = spawn(wc);
  REQUIRE_FALSE(await_ready(w));
  self->request(w, caf::infinite, exec_atom::value,
                make_command("stuck_in_c", {{"s", 3}}, std::nullopt, 200ms))
    .receive([](json&) { FAIL("answered"); }, [](caf::error& e) { CHECK(is(e, errc::command_timeout)); });
  auto req = make_command("pid");
  req.ref = 11;
  auto h = self->request(w, caf::infinite, exec_atom::value, req);
  REQUIRE(wait_until([&] {
    json s;
    self->request(w, caf::infinite, stats_atom::value).receive([&](json& j) { s = j; }, [](caf::error&) {});
    return s.value("held", 0) == 1;
  }));
  self->send(w, cancel_atom::value, std::uint64_t{11});
  caf::error got;
  h.receive([](json&) { FAIL("a cancelled request answered"); }, [&](caf::error& e) { got = e; });
  CHECK(is(got, errc::cancelled));
}

TEST_CASE_FIXTURE(pool_fixture, "a worker killed mid-stream: the chunks sent, then worker_crashed") {
  REQUIRE_FALSE(start(stream_pool()));
  REQUIRE_FALSE(await_pool_ready());
  auto pid = worker_pid(*this);
  auto log = std::make_shared<sink_log>();
  auto sink = sys.spawn(sink_actor, log);
  auto req = make_command("count", {{"n", 1000}, {"pause_s", 0.05}});
  req.sink = sink;
  req.ref = 3;
  auto h = self->request(pool(), caf::infinite, exec_atom::value, req);
  REQUIRE(wait_until([&] { return log->size() >= 3; }));
  ::kill(pid, SIGKILL);
  caf::error got;
  h.receive([](json&) { FAIL("answered"); }, [&](caf::error& e) { got = e; });
  CHECK(is(got, errc::worker_crashed));
  auto n = log->size();
  CHECK(n >= 3);
  for (std::size_t i = 0; i < n; ++i)
    CHECK(log->chunks[i].seq == i);
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
}

TEST_CASE_FIXTURE(pool_fixture, "chunks that break the protocol fail their worker, classified") {
  REQUIRE_FALSE(start(stream_pool()));
  REQUIRE_FALSE(await_pool_ready());
  for (bool other : {false, true}) {
    auto pid = worker_pid(*this);
    caf::error got;
    self->request(pool(), caf::infinite, exec_atom::value, make_command("bad_chunk", {{"other_id", other}}))
      .receive([](json&) { FAIL("answered"); }, [&](caf::error& e) { got = e; });
    CHECK(is(got, errc::protocol_error));
    REQUIRE(wait_until([&] {
      int now = -1;
      self->request(pool(), caf::infinite, exec_atom::value, make_command("pid"))
        .receive([&](json& j) { now = j.get<int>(); }, [](caf::error&) {});
      return now > 0 && now != pid;
    }));
  }
}

} // TEST_SUITE
