#include <dspex/bench/bare_loop.hpp>

#include <dspex/actors/pool/worker.hpp>
#include <dspex/bench/subprocess.hpp>

#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/bridge/protocol.hpp>


#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <sched.h>
#include <stdexcept>
#include <system_error>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace dspex::bench {

namespace {

using clock_type = std::chrono::steady_clock;


// One worker process and the blocking ends of its pipes.
struct bare_conn {
  child_process proc;
  bridge::frame_decoder decoder;
  std::vector<std::string> ready;  // decoded, not yet returned
  std::size_t next = 0;
  std::vector<char> buf = std::vector<char>(256 * 1024);

  bool send(const std::string& frame) { return write_all(proc.in_fd(), frame.data(), frame.size()); }

  // Blocks until one whole frame arrived; false on EOF or a broken stream.
  bool receive(std::string& body, std::string& why) {
    while (next >= ready.size()) {
      ready.clear();
      next = 0;
      ssize_t n = ::read(proc.out_fd(), buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR)
          continue;
        why = std::string("read: ") + std::strerror(errno);
        return false;
      }
      if (n == 0) {
        why = decoder.mid_frame() ? "worker closed its output inside a frame" : "worker exited";
        return false;
      }
      if (decoder.feed(buf.data(), static_cast<std::size_t>(n), ready) != bridge::frame_decoder::status::ok) {
        why = "reply frame too large";
        return false;
      }
    }
    body = std::move(ready[next++]);
    return true;
  }
};

std::vector<std::string> worker_argv(const worker_launch& l, int n) {
  std::string run_id = l.run_id.empty() ? bridge::host_run_id() : l.run_id;
  std::vector<std::string> argv{l.python, "-u"};
  if (l.script.empty()) {
    argv.insert(argv.end(), {"-m", "dspex_worker"});
  } else {
    argv.push_back(l.script);
  }
  argv.insert(argv.end(), {"--worker-id", l.id_prefix + "-" + std::to_string(n), "--run-id", run_id, "--mode", "pool"});
  return argv;
}

// Same environment as actors/pool/worker: PYTHONPATH first, unbuffered.
std::unique_ptr<bare_conn> spawn_worker(const worker_launch& l, int n) {
  spawn_spec spec;
  spec.argv = worker_argv(l, n);
  std::string dir = l.python_dir.empty() ? locate_python_dir() : l.python_dir;
  std::string pythonpath = dir;
  if (auto old = std::getenv("PYTHONPATH"); old && *old)
    pythonpath += std::string(":") + old;
  spec.env = {{"PYTHONPATH", pythonpath}, {"PYTHONUNBUFFERED", "1"}};
  for (auto& kv : l.env)
    spec.env.push_back(kv);
  spec.batch_scheduling = l.batch_scheduling;
  auto c = std::make_unique<bare_conn>();
  c->proc = child_process::spawn(spec);
  return c;
}

const std::string& ping_frame() {
  static const std::string f = bridge::encode_frame(
    bridge::encode_request(bridge::request{1, "ping", bridge::json::object(), std::nullopt}));
  return f;
}

// Closes every stdin first so the workers exit in parallel, then reaps each.
void stop_all(std::vector<std::unique_ptr<bare_conn>>& conns) {
  for (auto& c : conns)
    if (c)
      c->proc.close_stdin();
  for (auto& c : conns)
    if (c)
      c->proc.stop(std::chrono::milliseconds(2000));
  conns.clear();
}

// A barrier for the threads and the coordinator.
struct start_gate {
  std::mutex mx;
  std::condition_variable cv;
  int ready = 0;
  int finished = 0;
  bool go = false;
  clock_type::time_point start, deadline;
};

// Pins the calling thread (and so the threads and processes it creates
// from now on, which inherit its mask) to `cpus`; restores it at scope end.
class affinity_scope {
public:
  explicit affinity_scope(const std::vector<int>& cpus) {
    if (cpus.empty())
      return;
    if (int rc = ::pthread_getaffinity_np(::pthread_self(), sizeof old_, &old_); rc != 0)
      throw std::system_error(rc, std::generic_category(), "pthread_getaffinity_np");
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus)
      if (c >= 0 && c < CPU_SETSIZE)
        CPU_SET(c, &set);
    int rc = ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
    if (rc != 0)
      throw std::system_error(rc, std::generic_category(), "pthread_setaffinity_np (bad --cpus?)");
    active_ = true;
  }
  ~affinity_scope() {
    if (active_)
      ::pthread_setaffinity_np(::pthread_self(), sizeof old_, &old_);
  }
  affinity_scope(const affinity_scope&) = delete;
  affinity_scope& operator=(const affinity_scope&) = delete;

private:
  cpu_set_t old_;
  bool active_ = false;
};

struct thread_result {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  clock_type::time_point last_reply;
  latency_recorder latency;
};

} // namespace

std::string locate_python_dir() {
  return dspex::locate_python_dir();  // the workers' own lookup, so both run the same package
}

std::string echo_request_body(std::uint64_t id, std::size_t payload_bytes) {
  bridge::json args = {{"payload", std::string(payload_bytes, 'x')}};
  return bridge::encode_request(bridge::request{id, "echo", std::move(args), std::nullopt});
}

bare_result run_bare_loop(const bare_options& opts) {
  if (opts.workers < 1)
    throw std::invalid_argument("run_bare_loop: workers must be >= 1");
  bare_result res;
  res.workers = opts.workers;
  res.script = opts.launch.script;
  res.payload_bytes = opts.payload_bytes;
  res.parse_replies = opts.parse_replies;
  res.cpus = opts.cpus;
  affinity_scope pinned(opts.cpus);

  const bool counted = opts.requests_per_worker > 0;
  const auto t_spawn = clock_type::now();
  std::vector<std::unique_ptr<bare_conn>> conns;
  try {
    for (int i = 0; i < opts.workers; ++i)
      conns.push_back(spawn_worker(opts.launch, i + 1));
  } catch (...) {
    stop_all(conns);
    throw;
  }

  start_gate gate;
  std::vector<thread_result> results(static_cast<std::size_t>(opts.workers));
  std::vector<std::thread> threads;
  // Reserved up front so no measured request pays for a reallocation: all
  // threads together stay well below 200k requests/s on the machines we know.
  const std::size_t expected_samples =
    counted ? opts.requests_per_worker
            : static_cast<std::size_t>(
                std::min<std::int64_t>(opts.duration.count() * 200 / opts.workers + 1024, 4'000'000));

  for (int i = 0; i < opts.workers; ++i) {
    threads.emplace_back([&, i] {
      sigpipe_block no_sigpipe;  // a dead worker is an error to count, not a host crash
      bare_conn& c = *conns[static_cast<std::size_t>(i)];
      thread_result& r = results[static_cast<std::size_t>(i)];
      r.latency.reserve(expected_samples);
      echo_frames frames(opts.payload_bytes);
      std::string body, why;
      std::uint64_t id = 0;
      bool alive = true;

      // One request: false when the worker is gone (stop this thread).
      auto call = [&](bool measured) {
        const std::uint64_t want = ++id;
        const std::string& f = frames.frame(want);
        auto t0 = clock_type::now();
        if (!c.send(f)) {
          why = std::string("write: ") + std::strerror(errno);
          return false;
        }
        if (!c.receive(body, why))
          return false;
        bool ok = !body.empty();
        if (opts.parse_replies) {
          auto parsed = bridge::parse_reply(body);
          auto* rep = std::get_if<bridge::reply>(&parsed);
          ok = rep && rep->success && rep->id == want;
          if (!ok && r.first_error.empty())
            r.first_error = rep ? (rep->success ? "reply id mismatch" : rep->error.type + ": " + rep->error.message)
                                : std::string("bad reply: ") + std::get<bridge::protocol_error>(parsed).detail;
        }
        // After the parse: a dspex client gets its reply only once parsed.
        auto t1 = clock_type::now();
        if (measured) {
          if (ok) {
            ++r.requests;
            r.latency.add(t1 - t0);
          } else {
            ++r.errors;
          }
          r.last_reply = t1;
        }
        return true;
      };

      for (std::uint64_t w = 0; w < opts.warmup_requests && alive; ++w)
        alive = call(false);
      {
        std::unique_lock<std::mutex> g(gate.mx);
        ++gate.ready;
        gate.cv.notify_all();
        gate.cv.wait(g, [&] { return gate.go; });
      }
      if (alive) {
        if (counted) {
          for (std::uint64_t k = 0; k < opts.requests_per_worker && alive; ++k)
            alive = call(true);
        } else {
          while (alive && clock_type::now() < gate.deadline)
            alive = call(true);
        }
      }
      if (!alive) {
        ++r.errors;
        if (r.first_error.empty())
          r.first_error = why;
      }
      std::lock_guard<std::mutex> g(gate.mx);
      ++gate.finished;
      gate.cv.notify_all();
    });
  }

  host_usage use_start;
  {
    std::unique_lock<std::mutex> g(gate.mx);
    gate.cv.wait(g, [&] { return gate.ready == opts.workers; });
    res.startup_seconds = std::chrono::duration<double>(clock_type::now() - t_spawn).count();
    use_start = host_usage_now();
    gate.start = clock_type::now();
    gate.deadline = gate.start + opts.duration;
    gate.go = true;
    gate.cv.notify_all();
    // Watchdog: a worker that stops answering would block its thread in
    // read() forever; past a generous limit its process group is killed,
    // which turns the read into an EOF.
    auto limit = std::chrono::seconds(30) +
                 (counted ? std::chrono::milliseconds(opts.requests_per_worker * 5) : opts.duration);
    if (!gate.cv.wait_for(g, limit, [&] { return gate.finished == opts.workers; })) {
      for (auto& c : conns)
        c->proc.signal_group(SIGKILL);
    }
  }
  const auto use_end = host_usage_now();
  for (auto& t : threads)
    t.join();
  stop_all(conns);

  clock_type::time_point last = gate.start;
  for (auto& r : results) {
    res.requests += r.requests;
    res.errors += r.errors;
    if (res.first_error.empty() && !r.first_error.empty())
      res.first_error = r.first_error;
    if (r.requests > 0)
      last = std::max(last, r.last_reply);
    res.latency.merge(r.latency);
    r.latency.clear();
  }
  res.seconds = std::chrono::duration<double>(last - gate.start).count();
  res.requests_per_s = res.seconds > 0 ? static_cast<double>(res.requests) / res.seconds : 0;
  if (res.requests + res.errors > 0) {
    auto per = per_request(use_start, use_end, res.requests + res.errors);
    res.host_cpu_us_per_request = per.cpu_us;
    res.host_switches_per_request = per.switches;
  }
  res.summary = res.latency.summary();
  return res;
}

bare_result run_bare_loop(int workers, std::chrono::milliseconds duration, std::size_t payload_bytes) {
  bare_options o;
  o.workers = workers;
  o.duration = duration;
  o.payload_bytes = payload_bytes;
  return run_bare_loop(o);
}

bare_result run_bare_loop_count(int workers, std::uint64_t requests_per_worker, std::size_t payload_bytes) {
  bare_options o;
  o.workers = workers;
  o.requests_per_worker = requests_per_worker;
  o.payload_bytes = payload_bytes;
  return run_bare_loop(o);
}

json to_json(const bare_result& r) {
  return json{{"workers", r.workers},
              {"clients", r.workers},
              {"worker", r.script.empty() ? std::string("dspex_worker") : r.script},
              {"payload_bytes", r.payload_bytes},
              {"parse_replies", r.parse_replies},
              {"cpus", r.cpus},
              {"requests", r.requests},
              {"errors", r.errors},
              {"first_error", r.first_error},
              {"seconds", r.seconds},
              {"requests_per_s", r.requests_per_s},
              {"host_cpu_us_per_request", r.host_cpu_us_per_request},
              {"host_switches_per_request", r.host_switches_per_request},
              {"startup_seconds", r.startup_seconds},
              {"latency", to_json(r.summary)},
              {"cdf_us", r.latency.quantiles_us(200)}};
}

// -- start-up ----------------------------------------------------------------------

std::chrono::nanoseconds spawn_all_to_first_reply(int n, const worker_launch& launch) {
  if (n < 1)
    throw std::invalid_argument("spawn_all_to_first_reply: n must be >= 1");
  sigpipe_block no_sigpipe;
  std::vector<std::unique_ptr<bare_conn>> conns;
  std::chrono::nanoseconds elapsed{0};
  try {
    auto t0 = clock_type::now();
    for (int i = 0; i < n; ++i) {
      conns.push_back(spawn_worker(launch, i + 1));
      // Queued in the pipe while Python starts.
      if (!conns.back()->send(ping_frame()))
        throw std::runtime_error("spawn_to_first_reply: worker " + std::to_string(i + 1) +
                                 " closed its input at start-up");
    }
    std::string body, why;
    for (int i = 0; i < n; ++i) {
      if (!conns[static_cast<std::size_t>(i)]->receive(body, why))
        throw std::runtime_error("spawn_to_first_reply: worker " + std::to_string(i + 1) + ": " + why);
    }
    elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - t0);
    auto parsed = bridge::parse_reply(body);
    auto* rep = std::get_if<bridge::reply>(&parsed);
    if (!rep || !rep->success)
      throw std::runtime_error("spawn_to_first_reply: ping failed: " + body.substr(0, 200));
  } catch (...) {
    stop_all(conns);
    throw;
  }
  stop_all(conns);
  return elapsed;
}

std::chrono::nanoseconds spawn_to_first_reply(const worker_launch& launch) {
  return spawn_all_to_first_reply(1, launch);
}

spawn_stats measure_spawn(int n, int repeats, const worker_launch& launch, bool warm_up_first) {
  spawn_stats s;
  s.workers = n;
  if (warm_up_first)
    spawn_all_to_first_reply(n, launch);  // discarded: page cache, __pycache__
  for (int i = 0; i < repeats; ++i)
    s.samples.add(spawn_all_to_first_reply(n, launch));
  s.summary = s.samples.summary();
  return s;
}

json to_json(const spawn_stats& s) {
  json samples = json::array();
  for (auto ns : s.samples.samples_ns())
    samples.push_back(ns / 1000.0);
  return json{{"workers", s.workers}, {"samples_us", samples}, {"summary", to_json(s.summary)}};
}

} // namespace dspex::bench
