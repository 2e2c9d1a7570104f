#include <dspex/bench/stream_bench.hpp>

#include <dspex/bench/dspex_bench.hpp>
#include <dspex/bench/subprocess.hpp>
#include <dspex/bench/targets.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/pool/call.hpp>
#include <dspex/actors/pool/worker.hpp>
#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/protocol.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unistd.h>

namespace dspex::bench {

using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;
constexpr double nan_ratio = std::numeric_limits<double>::quiet_NaN();

double ratio(double a, double b) { return b > 0 && a > 0 ? a / b : nan_ratio; }

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

constexpr auto deadline = std::chrono::seconds(10);  // every request's, in the request

// What a driver actor reports to the thread waiting for it.
struct tally {
  std::mutex mx;
  std::condition_variable cv;
  bool done = false;
  std::uint64_t errors = 0;
  std::string first_error;
  latency_recorder a, b;   // the driver's two kinds of sample
  std::uint64_t odd = 0;   // out-of-order chunks, missing finally times

  void error(const std::string& what) {
    ++errors;
    if (first_error.empty())
      first_error = what;
  }
  void finish() {
    {
      std::lock_guard<std::mutex> g(mx);
      done = true;
    }
    cv.notify_all();
  }
  bool wait(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> g(mx);
    return cv.wait_for(g, limit, [&] { return done; });
  }
};

// -- drivers: one request (or stream) at a time, as call.hpp shows ---------------------------

struct driver_state {
  caf::actor pool;
  std::shared_ptr<tally> out;
  int total = 0, warmup = 0, i = 0;
  std::int64_t t0 = 0;
  std::uint64_t ref = 0;
  std::uint64_t next_seq = 0;  // chunks: the seq expected next; first-chunk: 1 once it came
  std::int64_t cancel_at = 0;
  command_request a, b;        // the requests a driver alternates or chains
  static inline const char* name = "dspex.bench.stream_driver";
};

using driver = caf::stateful_actor<driver_state>;

bool measured(driver* self) { return self->state.i >= self->state.warmup; }

void init(driver* self, caf::actor pool, int warmup, int samples, std::shared_ptr<tally> out) {
  auto& st = self->state;
  st.pool = std::move(pool);
  st.warmup = warmup;
  st.total = warmup + samples;
  st.out = std::move(out);
}

void stop_with(driver* self, const std::string& err) {
  self->state.out->error(err);
  self->state.out->finish();
  self->quit();
}

bool end_of_run(driver* self) {
  if (self->state.i < self->state.total)
    return false;
  self->state.out->finish();
  self->quit();
  return true;
}

// first-chunk: a unary call, then a stream whose first chunk is timed; repeat.
void first_chunk_pair(driver* self);

void first_chunk_stream(driver* self) {
  auto& st = self->state;
  st.next_seq = 0;
  st.t0 = steady_ns();
  call_stream(self, st.pool, st.b, ++st.ref)
    .then(
      [self](json&) {
        auto& st = self->state;
        if (st.next_seq == 0)
          st.out->error("a stream answered without its chunk");
        ++st.i;
        first_chunk_pair(self);
      },
      [self](caf::error& e) { stop_with(self, "first chunk: " + describe(e)); });
}

void first_chunk_pair(driver* self) {
  if (end_of_run(self))
    return;
  auto& st = self->state;
  st.t0 = steady_ns();
  call(self, st.pool, st.a)
    .then(
      [self](json&) {
        auto& st = self->state;
        if (measured(self))
          st.out->a.add_ns(steady_ns() - st.t0);
        first_chunk_stream(self);
      },
      [self](caf::error& e) { stop_with(self, "unary: " + describe(e)); });
}

caf::behavior first_chunk_driver(driver* self, caf::actor pool, command_request unary, command_request first,
                                 int warmup, int samples, std::shared_ptr<tally> out) {
  init(self, std::move(pool), warmup, samples, std::move(out));
  self->state.a = std::move(unary);
  self->state.b = std::move(first);
  first_chunk_pair(self);
  return {
    [self](chunk_atom, stream_chunk& c) {
      auto& st = self->state;
      if (c.ref == st.ref && st.next_seq == 0) {
        st.next_seq = 1;
        if (measured(self))
          st.out->b.add_ns(steady_ns() - st.t0);
      }
      ack_chunk(self, c);
    },
  };
}

// chunks: one stream of n chunks at a time, each chunk taken and acked.
void chunk_stream(driver* self) {
  if (end_of_run(self))
    return;
  auto& st = self->state;
  st.next_seq = 0;
  st.t0 = steady_ns();
  call_stream(self, st.pool, st.a, ++st.ref)
    .then(
      [self](json&) {
        auto& st = self->state;
        const auto n = st.a.args.at("n").get<std::uint64_t>();
        if (st.next_seq != n)
          st.out->error("a stream of " + std::to_string(n) + " chunks delivered " + std::to_string(st.next_seq));
        else if (measured(self))
          st.out->a.add_ns(steady_ns() - st.t0);
        ++st.i;
        chunk_stream(self);
      },
      [self](caf::error& e) { stop_with(self, "chunks: " + describe(e)); });
}

caf::behavior chunk_driver(driver* self, caf::actor pool, command_request req, int warmup, int streams,
                           std::shared_ptr<tally> out) {
  init(self, std::move(pool), warmup, streams, std::move(out));
  self->state.a = std::move(req);
  chunk_stream(self);
  return {
    [self](chunk_atom, stream_chunk& c) {
      auto& st = self->state;
      if (c.ref == st.ref) {
        if (c.seq != st.next_seq)
          ++st.out->odd;
        st.next_seq = c.seq + 1;
      }
      ack_chunk(self, c);
    },
  };
}

// cancel: a spinning generator, cancelled at its first chunk; then the time
// its finally ran, asked of the same worker (it runs once the spin ended).
void cancel_sample(driver* self);

void cancel_read_back(driver* self, std::uint64_t token) {
  auto& st = self->state;
  call(self, st.pool, make_command("bench_finally_at", json{{"token", token}}, std::nullopt, deadline))
    .then(
      [self](json& at) {
        auto& st = self->state;
        if (at.is_number_integer()) {
          if (measured(self))
            st.out->a.add_ns(at.get<std::int64_t>() - st.cancel_at);
        } else {
          ++st.out->odd;
        }
        ++st.i;
        cancel_sample(self);
      },
      [self](caf::error& e) { stop_with(self, "bench_finally_at: " + describe(e)); });
}

void cancel_sample(driver* self) {
  if (end_of_run(self))
    return;
  auto& st = self->state;
  st.next_seq = 0;
  st.cancel_at = 0;
  const auto token = static_cast<std::uint64_t>(st.i);
  call_stream(self, st.pool, make_command("bench_spin", json{{"token", token}}, std::nullopt, deadline), ++st.ref)
    .then([self](json& j) { stop_with(self, "bench_spin was not cancelled: " + j.dump()); },
          [self, token](caf::error& e) {
            if (!is(e, errc::cancelled)) {
              stop_with(self, "bench_spin: expected cancelled, got " + describe(e));
              return;
            }
            cancel_read_back(self, token);
          });
}

caf::behavior cancel_driver(driver* self, caf::actor pool, int warmup, int samples, std::shared_ptr<tally> out) {
  init(self, std::move(pool), warmup, samples, std::move(out));
  cancel_sample(self);
  return {
    [self](chunk_atom, stream_chunk& c) {
      auto& st = self->state;
      ack_chunk(self, c);
      if (c.ref == st.ref && st.cancel_at == 0) {
        st.cancel_at = steady_ns();
        cancel(self, st.pool, st.ref);
      }
    },
  };
}

// -- the chunk floor: chunk_floor.py through a pipe, read by one blocking thread -------------

// One chunk_floor.py process; stream() sends it one request and reads the
// stream back on the calling thread, parsed as dspex parses every frame
// from a worker. Kept between streams, so the floor's streams can alternate
// with dspex's (on a shared machine both then see the same load).
class chunk_floor {
public:
  explicit chunk_floor(const stream_bench_options& o) : o_(o) {
    const auto script = locate_peer_file("chunk_floor.py");
    if (script.empty()) {
      error_ = "chunk_floor.py not found (set DSPEX_BENCH_PEERS_DIR)";
      return;
    }
    spawn_spec spec;
    spec.argv = {o.python, "-u", script};
    spec.batch_scheduling = o.sched_batch;
    proc_ = child_process::spawn(spec);
    buf_.resize(256 * 1024);
  }
  ~chunk_floor() {
    if (proc_.pid() > 0)
      proc_.stop(2000ms);
  }
  chunk_floor(const chunk_floor&) = delete;
  chunk_floor& operator=(const chunk_floor&) = delete;

  const std::string& error() const { return error_; }

  /// One stream of o.chunks chunks: its duration, or nothing (error() says why).
  std::optional<clock_type::duration> stream() {
    if (!error_.empty())
      return std::nullopt;
    const std::uint64_t id = ++id_;
    const json args{{"n", o_.chunks}, {"data", std::string(o_.chunk_bytes, 'x')}};
    const auto frame = bridge::encode_frame(bridge::encode_request(bridge::request{id, "bench_chunks", args, std::nullopt}));
    const auto t0 = clock_type::now();
    if (!write_all(proc_.in_fd(), frame.data(), frame.size())) {
      error_ = std::string("chunk floor: write: ") + std::strerror(errno);
      return std::nullopt;
    }
    std::uint64_t seq = 0;
    for (bool final = false; !final && error_.empty();) {
      while (next_ >= ready_.size()) {
        ready_.clear();
        next_ = 0;
        ssize_t n = ::read(proc_.out_fd(), buf_.data(), buf_.size());
        if (n < 0 && errno == EINTR)
          continue;
        if (n <= 0) {
          error_ = "chunk floor: the script exited";
          return std::nullopt;
        }
        decoder_.feed(buf_.data(), static_cast<std::size_t>(n), ready_);
      }
      auto parsed = bridge::parse_reply(ready_[next_++]);
      auto* rep = std::get_if<bridge::reply>(&parsed);
      if (!rep || rep->id != id) {
        error_ = "chunk floor: a bad frame";
      } else if (rep->is_chunk()) {
        if (rep->seq != seq++)
          error_ = "chunk floor: a chunk out of order";
      } else {
        final = true;
        if (seq != static_cast<std::uint64_t>(o_.chunks))
          error_ = "chunk floor: " + std::to_string(seq) + " chunks";
      }
    }
    if (!error_.empty())
      return std::nullopt;
    return clock_type::now() - t0;
  }

private:
  const stream_bench_options& o_;
  sigpipe_block no_sigpipe_;
  child_process proc_;
  bridge::frame_decoder decoder_;
  std::vector<std::string> ready_;
  std::size_t next_ = 0;
  std::vector<char> buf_;
  std::uint64_t id_ = 0;
  std::string error_;
};

// -- one runner per part ------------------------------------------------------------------------

class runner : public bench_steps {
public:
  runner(const stream_bench_options& o, stream_bench_result& r, progress_line* p, caf::actor_system& sys)
    : bench_steps("bench streams", r.failures, p), o_(o), r_(r), sys_(sys) {}

  pool_setup setup(int size, int concurrency = 0) const {
    pool_setup s;
    s.size = size;
    s.python = o_.python;
    s.sched_batch = o_.sched_batch;
    s.max_concurrency = concurrency;
    const auto cmds = locate_peer_file("bench_cmds.py");
    if (!cmds.empty()) {
      s.handler_paths = {cmds.substr(0, cmds.rfind('/'))};
      s.handlers = {"bench_cmds"};
    }
    return s;
  }

  std::shared_ptr<node> start(const pool_setup& s, const std::string& what) {
    if (s.handlers.empty()) {
      failed(what + ": bench_cmds.py not found (set DSPEX_BENCH_PEERS_DIR)");
      return nullptr;
    }
    return bench_steps::start(sys_, s, what);
  }

  // Spawns a driver and waits for it; false (and a failure) when it did not finish.
  template <class F, class... Ts>
  bool drive(const std::string& what, std::shared_ptr<tally> t, std::chrono::milliseconds limit, F fun, Ts&&... xs) {
    auto d = sys_.spawn(fun, std::forward<Ts>(xs)..., t);
    if (!t->wait(limit)) {
      caf::anon_send_exit(d, caf::exit_reason::user_shutdown);
      failed(what + ": did not finish within " + std::to_string(limit.count() / 1000) + " s");
      return false;
    }
    std::lock_guard<std::mutex> g(t->mx);
    if (t->errors) {
      failed(what + ": " + std::to_string(t->errors) + " errors (" + t->first_error + ")");
      return false;
    }
    return true;
  }

  void first_chunk() {
    announce("first chunk against a unary round trip");
    auto n = start(setup(1), "first chunk");
    if (!n)
      return;
    const json args{{"payload", std::string(o_.payload_bytes, 'x')}};
    auto t = std::make_shared<tally>();
    const auto limit = std::chrono::milliseconds(60000 + 20 * (o_.samples + o_.warmup));
    if (drive("first chunk", t, limit, first_chunk_driver, n->target(),
              make_command("bench_echo", args, std::nullopt, deadline),
              make_command("bench_first", args, std::nullopt, deadline), o_.warmup, o_.samples)) {
      r_.unary = std::move(t->a);
      r_.first_chunk = std::move(t->b);
      done("unary p50 " + format_micros(r_.unary.summary().p50_us) + ", first chunk p50 " +
           format_micros(r_.first_chunk.summary().p50_us));
    }
    n->stop();
  }

  // The floor's streams and dspex's alternate one by one (after 3 warm-up
  // streams each), so a burst of other load on the machine hits both.
  void chunks() {
    const int warmup = 3;
    announce("chunks: chunk_floor.py and dspex alternating, " + std::to_string(o_.chunks) + " chunks a stream");
    std::unique_ptr<chunk_floor> floor;
    try {
      floor = std::make_unique<chunk_floor>(o_);
    } catch (const std::exception& e) {
      failed(std::string("chunk floor: ") + e.what());
    }
    auto s = setup(1);
    s.stream_window = o_.stream_window;
    s.stream_window_bytes = o_.stream_window_bytes;
    auto n = start(s, "chunks");
    if (!n)
      return;
    const auto req = make_command("bench_chunks", json{{"n", o_.chunks}, {"data", std::string(o_.chunk_bytes, 'x')}},
                                  std::nullopt, deadline);
    const auto limit = std::chrono::milliseconds(60000 + 50 * (warmup + 1) * (o_.chunks / 100 + 1));
    // One driver per dspex stream (or per warm-up): false when it failed.
    auto dspex_streams = [&](int warm, int measured) {
      auto t = std::make_shared<tally>();
      if (!drive("chunks", t, limit, chunk_driver, n->target(), req, warm, measured))
        return false;
      r_.dspex_streams.merge(t->a);
      r_.chunks_out_of_order += t->odd;
      return true;
    };
    auto floor_stream = [&](bool measured) {
      if (!floor || !floor->error().empty())
        return;
      auto d = floor->stream();
      if (!d)
        failed(floor->error());
      else if (measured)
        r_.floor_streams.add(*d);
    };
    for (int i = 0; i < warmup; ++i)
      floor_stream(false);
    bool ok = dspex_streams(warmup, 0);
    for (int i = 0; i < o_.streams && ok; ++i) {
      floor_stream(true);
      ok = dspex_streams(0, 1);
    }
    if (r_.chunks_out_of_order)
      failed("chunks: " + std::to_string(r_.chunks_out_of_order) + " chunks out of order");
    if (ok) {
      auto per_s = [&](const latency_recorder& l) {
        return l.empty() ? 0.0 : static_cast<double>(o_.chunks) / (l.summary().p50_us / 1e6);
      };
      done("chunks/s (median stream): dspex " + format_fixed(per_s(r_.dspex_streams), 0) + ", floor " +
           format_fixed(per_s(r_.floor_streams), 0));
    }
    n->stop();
  }

  void cancel_latency() {
    announce("cancel latency");
    auto n = start(setup(1), "cancel");
    if (!n)
      return;
    auto t = std::make_shared<tally>();
    const int warmup = std::min(10, o_.cancel_samples);
    const auto limit = std::chrono::milliseconds(60000 + 100 * (o_.cancel_samples + warmup));
    if (drive("cancel", t, limit, cancel_driver, n->target(), warmup, o_.cancel_samples)) {
      r_.cancel = std::move(t->a);
      r_.cancel_missing = t->odd;
      if (t->odd)
        failed("cancel: the finally's time was missing " + std::to_string(t->odd) + " times");
      auto s = r_.cancel.summary();
      done("cancel -> finally: p50 " + format_micros(s.p50_us) + ", p99 " + format_micros(s.p99_us));
    }
    n->stop();
  }

  void io_dspex(const std::string& system, const std::string& command) {
    const std::string what = "I/O-bound, " + system;
    announce(what + ": " + std::to_string(o_.io_clients) + " clients");
    auto s = setup(o_.io_workers, o_.io_concurrency);
    s.max_queue = std::max(1024, 2 * o_.io_clients);
    s.checkout_timeout_ms = 30000;
    stream_bench_result::io_run run;
    run.system = system;
    run.clients = o_.io_clients;
    auto n = start(s, what);
    if (!n) {
      r_.io.push_back(run);
      return;
    }
    auto req = make_command(command, json{{"seconds", o_.io_wait_ms / 1000.0}}, std::nullopt, 30s);
    auto l = run_actor_load(sys_, n->target(), req, o_.io_clients, std::chrono::milliseconds(5 * o_.io_wait_ms),
                            o_.io_duration);
    n->stop();
    run.ran = l.ok > 0;
    run.requests_per_s = l.requests_per_s;
    run.latency = l.summary;
    run.errors = l.total_errors;
    run.first_error = l.first_error;
    if (l.total_errors || l.ok == 0)
      r_.failures.push_back(what + ": " + std::to_string(l.total_errors) + " errors (" + l.first_error + ")");
    done(what + ": " + format_rate(run.requests_per_s) + ", p50 " + format_micros(run.latency.p50_us));
    r_.io.push_back(run);
  }

  void io_mp_pool() {
    const int procs = o_.mp_processes > 0 ? o_.mp_processes : o_.io_workers * o_.io_concurrency;
    stream_bench_result::io_run run;
    run.system = "mp.Pool";
    run.clients = o_.io_clients;
    run.note = "multiprocessing.Pool(" + std::to_string(procs) + "), " + std::to_string(o_.io_clients) +
               " apply_async in flight, each time.sleep(" + format_fixed(o_.io_wait_ms / 1000.0, 3) + ")";
    announce("I/O-bound, mp.Pool(" + std::to_string(procs) + ")");
    peer_options po;
    po.python = o_.python;
    po.inflight = o_.io_clients;
    po.sleep_ms = o_.io_wait_ms;
    po.warmup = std::chrono::milliseconds(5 * o_.io_wait_ms);
    auto p = run_python_peer(peer_kind::mp_pool, procs, o_.io_duration, o_.payload_bytes, po);
    run.ran = p.ok;
    if (p.ok) {
      run.requests_per_s = p.requests_per_s;
      run.latency = p.latency;
      run.errors = p.errors;
      done("I/O-bound, mp.Pool(" + std::to_string(procs) + "): " + format_rate(p.requests_per_s));
    } else {
      run.first_error = p.error;
      failed("I/O-bound, mp.Pool: " + p.error);
    }
    r_.io.push_back(run);
  }

private:
  const stream_bench_options& o_;
  stream_bench_result& r_;
  caf::actor_system& sys_;
};

std::string format_chunk_rate(double per_s) {
  auto s = format_rate(per_s);
  if (auto at = s.find("req/s"); at != std::string::npos)
    s.replace(at, 3, "chunks");
  return s;
}

std::string window_note(int window, long long window_bytes) {
  const int w = window > 0 ? window : static_cast<int>(worker_config{}.stream_window);
  const long long b = window_bytes > 0 ? window_bytes : static_cast<long long>(worker_config{}.stream_window_bytes);
  return "worker.stream_window " + std::to_string(w) + (window > 0 ? "" : " (the default)") +
         ", stream_window_bytes " + std::to_string(b) + (window_bytes > 0 ? "" : " (the default)") +
         ": an ack every " + std::to_string(std::max(1, w / 2)) + " chunks or " + std::to_string(std::max(1LL, b / 2)) +
         " frame bytes, whichever comes first";
}

double chunks_per_s(const latency_recorder& streams, int chunks) {
  if (streams.empty())
    return 0;
  return static_cast<double>(chunks) / (streams.summary().p50_us / 1e6);
}

} // namespace

// -- options ----------------------------------------------------------------------------------

stream_bench_options stream_bench_options::quick_defaults() {
  stream_bench_options o;
  o.quick = true;
  o.samples = 300;
  o.warmup = 50;
  o.streams = 10;
  o.cancel_samples = 60;
  o.io_duration = 2000ms;
  return o;
}

bool stream_bench_options::wants(const std::string& part) const {
  return std::find(parts.begin(), parts.end(), part) != parts.end();
}

double stream_bench_result::ideal_io_per_s() const {
  const auto& o = options;
  const double slots = std::min(static_cast<double>(o.io_workers) * o.io_concurrency, static_cast<double>(o.io_clients));
  return o.io_wait_ms > 0 ? slots * 1000.0 / o.io_wait_ms : 0;
}

// -- measurements -------------------------------------------------------------------------------

stream_bench_result measure_streams(const stream_bench_options& o, progress_line* progress) {
  stream_bench_result r;
  r.options = o;
  const auto t0 = clock_type::now();
  r.load_before = load_average_1m();
  r.machine = machine_info(o.python);
  caf::actor_system_config cfg;
  dspex::recommended_settings(cfg);
  if (auto err = apply_caf_args(cfg, o.caf_args))
    r.failures.push_back("CAF options: " + caf::to_string(err));
  caf::actor_system sys{cfg};
  runner run(o, r, progress, sys);
  run.start_clock();
  try {
    if (o.wants("first-chunk"))
      run.first_chunk();
    if (o.wants("chunks"))
      run.chunks();
    if (o.wants("cancel"))
      run.cancel_latency();
    if (o.wants("io")) {
      run.io_dspex("asyncio", "bench_async_wait");
      run.io_dspex("threads", "bench_thread_wait");
      if (o.python_peers)
        run.io_mp_pool();
    }
  } catch (const std::exception& e) {
    r.failures.push_back(std::string("dspex-bench streams aborted: ") + e.what());
  }
  r.load_after = load_average_1m();
  r.wall_seconds = seconds_since(t0);
  return r;
}

// -- the table ------------------------------------------------------------------------------------

void add_stream_rows(report_table& t, const stream_bench_result& r) {
  const auto& o = r.options;
  if (!r.unary.empty() && !r.first_chunk.empty()) {
    t.section("time to first chunk: 1 client actor, 1 worker, " + std::to_string(o.payload_bytes) +
              " B payload, call / call_stream with a deadline (" + std::to_string(r.unary.size()) + " pairs)");
    auto u = r.unary.summary(), f = r.first_chunk.summary();
    t.add({"unary round trip p50 (bench_echo, call)", format_micros(u.p50_us), "", "",
           "first chunk " + targets::at_most(targets::first_chunk_vs_unary, "this"), verdict::floor, ""});
    double q = ratio(f.p50_us, u.p50_us);
    t.add({"first chunk p50 (bench_first, call_stream)", format_micros(f.p50_us), "unary " + format_micros(u.p50_us),
           format_ratio(q), targets::at_most(targets::first_chunk_vs_unary, "unary"),
           judge_at_most(q, targets::first_chunk_vs_unary), ""});
    t.add({"first chunk p99", format_micros(f.p99_us), "unary " + format_micros(u.p99_us),
           format_ratio(ratio(f.p99_us, u.p99_us)), "", verdict::info, ""});
  }
  if (!r.dspex_streams.empty() || !r.floor_streams.empty()) {
    t.section("chunk throughput: 1 handler, " + std::to_string(o.chunks) + " chunks of " +
              std::to_string(o.chunk_bytes) + " B a stream (median of " +
              std::to_string(std::max(r.dspex_streams.size(), r.floor_streams.size())) + " streams)");
    const double fl = chunks_per_s(r.floor_streams, o.chunks), d = chunks_per_s(r.dspex_streams, o.chunks);
    if (fl > 0)
      t.add({"chunks/s, floor: chunk_floor.py, bare C++ reader", format_chunk_rate(fl),
             "", "", "dspex " + targets::at_least(targets::chunks_vs_bare, "this"), verdict::floor,
             "the same chunk frames through the same pipe, no flow control"});
    if (d > 0) {
      double q = ratio(d, fl);
      t.add({"chunks/s, dspex (generator, call_stream, ack_chunk)",
             format_chunk_rate(d), fl > 0 ? "floor " + format_chunk_rate(fl) : "", format_ratio(q),
             targets::at_least(targets::chunks_vs_bare, "floor"), judge_at_least(q, targets::chunks_vs_bare),
             window_note(o.stream_window, o.stream_window_bytes)});
    }
  }
  if (!r.cancel.empty()) {
    t.section("cancel latency: cancel sent -> a pure-Python loop's finally ran (" + std::to_string(r.cancel.size()) +
              " samples, CLOCK_MONOTONIC both sides)");
    auto c = r.cancel.summary();
    t.add({"cancel -> finally p50", format_micros(c.p50_us), "", "", "", verdict::info, ""});
    t.add({"cancel -> finally p99", format_micros(c.p99_us), "", "", "<= " + format_fixed(targets::cancel_p99_ms, 0) + " ms",
           c.p99_us <= targets::cancel_p99_ms * 1000 ? verdict::pass : verdict::fail, ""});
    t.add({"cancel -> finally max", format_micros(c.max_us), "", "", "", verdict::info, ""});
  }
  if (!r.io.empty()) {
    const double ideal = r.ideal_io_per_s();
    t.section("I/O-bound: W=" + std::to_string(o.io_workers) + ", max_concurrency " + std::to_string(o.io_concurrency) +
              ", " + std::to_string(o.io_clients) + " clients, each request waiting " + std::to_string(o.io_wait_ms) +
              " ms (ideal " + format_rate(ideal) + ")");
    for (auto& run : r.io) {
      const bool asyncio = run.system == "asyncio";
      std::string figure = asyncio   ? "req/s, dspex async def (asyncio.sleep)"
                           : run.system == "threads" ? "req/s, dspex sync handler on threads (time.sleep)"
                                                     : "req/s, multiprocessing.Pool";
      if (!run.ran) {
        t.add({figure, "-", "", "", asyncio ? targets::at_least(targets::asyncio_vs_ideal, "ideal") : "",
               verdict::skipped, run.first_error});
        continue;
      }
      double q = ratio(run.requests_per_s, ideal);
      t.add({figure, format_rate(run.requests_per_s), "ideal " + format_rate(ideal), format_ratio(q),
             asyncio ? targets::at_least(targets::asyncio_vs_ideal, "ideal") : "",
             asyncio ? judge_at_least(q, targets::asyncio_vs_ideal) : verdict::info,
             run.note.empty() ? "p50 " + format_micros(run.latency.p50_us) : run.note});
    }
  }
}

json to_json(const stream_bench_result& r) {
  const auto& o = r.options;
  auto lat = [](const latency_recorder& l) { return l.empty() ? json(nullptr) : to_json(l.summary()); };
  json io = json::array();
  for (auto& run : r.io)
    io.push_back({{"system", run.system},
                  {"ran", run.ran},
                  {"clients", run.clients},
                  {"requests_per_s", run.requests_per_s},
                  {"ratio_to_ideal", ratio(run.requests_per_s, r.ideal_io_per_s())},
                  {"latency", to_json(run.latency)},
                  {"errors", run.errors},
                  {"first_error", run.first_error},
                  {"note", run.note}});
  const double fl = chunks_per_s(r.floor_streams, o.chunks), d = chunks_per_s(r.dspex_streams, o.chunks);
  report_table t;
  add_stream_rows(t, r);
  return json{{"machine", r.machine},
              {"load_average_1m_before", r.load_before},
              {"load_average_1m_after", r.load_after},
              {"options",
               {{"parts", o.parts},
                {"samples", o.samples},
                {"warmup", o.warmup},
                {"payload_bytes", o.payload_bytes},
                {"streams", o.streams},
                {"chunks", o.chunks},
                {"chunk_bytes", o.chunk_bytes},
                {"cancel_samples", o.cancel_samples},
                {"io_workers", o.io_workers},
                {"io_concurrency", o.io_concurrency},
                {"io_clients", o.io_clients},
                {"io_wait_ms", o.io_wait_ms},
                {"io_duration_ms", o.io_duration.count()},
                {"mp_processes", o.mp_processes > 0 ? o.mp_processes : o.io_workers * o.io_concurrency},
                {"python_peers", o.python_peers},
                {"sched_batch", o.sched_batch},
                {"caf_args", o.caf_args},
                {"quick", o.quick}}},
              {"first_chunk",
               {{"unary", lat(r.unary)},
                {"first_chunk", lat(r.first_chunk)},
                {"ratio_p50", r.unary.empty() ? json(nullptr)
                                              : json(ratio(r.first_chunk.summary().p50_us, r.unary.summary().p50_us))}}},
              {"chunks",
               {{"dspex_stream", lat(r.dspex_streams)},
                {"floor_stream", lat(r.floor_streams)},
                {"dspex_chunks_per_s", d},
                {"floor_chunks_per_s", fl},
                {"ratio", ratio(d, fl)},
                {"out_of_order", r.chunks_out_of_order}}},
              {"cancel", {{"latency", lat(r.cancel)}, {"missing", r.cancel_missing}}},
              {"io", {{"ideal_per_s", r.ideal_io_per_s()}, {"runs", io}}},
              {"failures", r.failures},
              {"plots", to_json(r.plots)},
              {"table", t.to_json()},
              {"wall_seconds", r.wall_seconds}};
}

int run_stream_bench(const stream_bench_options& o) {
  progress_line progress;
  print_bench_start("streams", o.parts, o.quick);
  auto r = measure_streams(o, &progress);
  progress.clear();
  report_table table(bench_title("streams", r.machine, r.load_before, r.load_after));
  add_stream_rows(table, r);
  std::cout << '\n';
  table.print(std::cout);
  if (o.plots) {
    std::vector<latency_series> lat;
    if (!r.unary.empty())
      lat.push_back({"unary round trip (call)", r.unary.quantiles_us(1000)});
    if (!r.first_chunk.empty())
      lat.push_back({"first chunk (call_stream)", r.first_chunk.quantiles_us(1000)});
    if (!r.cancel.empty())
      lat.push_back({"cancel -> finally", r.cancel.quantiles_us(1000)});
    if (!lat.empty())
      r.plots.push_back(plot_latency_cdf(o.out_dir, "streams_latency_cdf", lat, "Streams and cancellation (CDF)"));
  }
  return write_report("dspex-bench streams", o.out_dir + "/streams.json", to_json(r), r.plots, r.wall_seconds,
                      r.failures)
           ? 0
           : 1;
}

} // namespace dspex::bench
