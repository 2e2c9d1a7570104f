#include <dspex/bench/chaos.hpp>
#include <dspex/bench/chaos_nodes.hpp>
#include <dspex/bench/dspex_bench.hpp>
#include <dspex/bench/python_peer.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/actors/pool/call.hpp>
#include <dspex/supervision/events.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

namespace dspex::bench {

using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;
using next_atom = caf::atom_constant<caf::atom("next")>;
using inject_atom = caf::atom_constant<caf::atom("inject")>;
using poll_atom = caf::atom_constant<caf::atom("poll")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;

// -- determinism -------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t fnv1a(const std::string& s, std::uint64_t h = 0xcbf29ce484222325ULL) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

// A seed per (run seed, scenario, stream): stable across runs and builds.
std::uint64_t derive(std::uint64_t seed, const std::string& scenario, std::uint64_t stream) {
  std::uint64_t x = seed ^ fnv1a(scenario) ^ (stream * 0x9e3779b97f4a7c15ULL);
  splitmix64(x);
  return splitmix64(x);
}

// Uniform in [0, 1) from 53 bits.
double unit(std::uint64_t& state) { return static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53; }

std::string hex(std::uint64_t v) {
  std::ostringstream os;
  os << std::hex;
  os.width(16);
  os.fill('0');
  os << v;
  return os.str();
}

double to_us(std::int64_t ns) { return static_cast<double>(ns) / 1e3; }

clock_type::time_point at_ns(std::int64_t ns) {
  return clock_type::time_point(std::chrono::duration_cast<clock_type::duration>(std::chrono::nanoseconds(ns)));
}

std::int64_t sys_ns(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::string error_class(const caf::error& e) {
  if (auto c = code_of(e))
    return to_string(*c);
  // A worker that died as the pool handed it the request: worker_crashed
  // (dspex::classify); the caller's own deadline stays "never answered".
  if (e.category() == caf::atom("system")
      && e.code() == static_cast<std::uint8_t>(caf::sec::request_receiver_down))
    return to_string(*code_of(classify(e)));
  if (e.category() == caf::atom("system"))
    return "unclassified:" + caf::to_string(static_cast<caf::sec>(e.code()));
  return "unclassified:" + caf::to_string(e);
}

bool is_request_timeout(const caf::error& e) {
  return e.category() == caf::atom("system") && e.code() == static_cast<std::uint8_t>(caf::sec::request_timeout);
}

// -- shared state of a scenario ------------------------------------------------------------

// The node's current pool; clients and the watcher ask it per request, as a
// pool restarted by its supervisor is a new actor.
struct target_source {
  std::mutex mx;
  std::shared_ptr<node> n;
  caf::actor get() {
    std::lock_guard<std::mutex> g(mx);
    return n ? n->target() : caf::actor{};
  }
};

enum class outcome : std::uint8_t { pending, ok, error, timed_out };

struct request_record {
  std::int64_t sent_ns = 0;
  std::int64_t reply_ns = 0;
  std::uint8_t replies = 0;  // saturating
  outcome out = outcome::pending;
  bool fault = false;        // a fault_* command (not an echo)
  bool stream = false;       // a bench_stream (stream scenario)
  std::uint32_t chunks = 0;  // chunks of it received
  std::string fault_kind;    // for injected faults only
};

struct client_ledger {
  std::vector<request_record> recs;  // index: sequence number
  std::map<std::string, std::uint64_t> errors;
  std::vector<std::uint64_t> foreign_keys;  // replies carrying another client's key
  std::uint64_t wrong_reply = 0;
  std::uint64_t stray = 0;
  std::uint64_t chunks = 0, out_of_order = 0, foreign_chunks = 0, after_answer = 0, incomplete = 0;
};

struct load_control {
  std::atomic<bool> stop{false};
  std::mutex mx;
  std::condition_variable cv;
  int running = 0;
};

struct client_config {
  std::uint32_t index = 0;
  bool injector = false;          // sends only what it is told (inject)
  std::uint64_t rng = 0;          // the client's seeded stream
  double slow_fraction = 0;       // fault_sleep share (slow scenario)
  int slow_max_ms = 0;
  int stream_chunks = 0;          // > 0: streams of this many chunks (stream scenario)
  double stream_pause_s = 0;
  std::string pad;                // echo padding after the key
  std::chrono::milliseconds deadline{10000};  // the client's own request timeout
  std::chrono::milliseconds backoff{5};
};

struct chaos_client_state {
  client_config cfg;
  std::shared_ptr<target_source> src;
  std::shared_ptr<load_control> ctl;
  std::shared_ptr<client_ledger> ledger;
  bool finished = false;
  static inline const char* name = "dspex.chaos.client";
};

using chaos_client = caf::stateful_actor<chaos_client_state>;

void client_done(chaos_client* self) {
  auto& st = self->state;
  if (st.finished)
    return;
  st.finished = true;
  {
    std::lock_guard<std::mutex> g(st.ctl->mx);
    --st.ctl->running;
  }
  st.ctl->cv.notify_all();
  if (!st.cfg.injector)
    self->quit();
}

void on_result(chaos_client* self, std::uint32_t seq, const json& result) {
  auto& st = self->state;
  auto& led = *st.ledger;
  auto& rec = led.recs[seq];
  if (rec.fault) {
    // fault_sleep and friends do not echo: counted on the request's own key.
    rec.replies = static_cast<std::uint8_t>(std::min(255, rec.replies + 1));
    return;
  }
  // echo: the payload starts with "k<key>:"; count the reply on that key.
  std::uint64_t key = ~0ULL;
  if (result.is_object()) {
    auto it = result.find("payload");
    if (it != result.end() && it->is_string()) {
      const auto& s = it->get_ref<const std::string&>();
      if (s.size() > 1 && s[0] == 'k')
        key = std::strtoull(s.c_str() + 1, nullptr, 10);
    }
  }
  const std::uint64_t own = (static_cast<std::uint64_t>(st.cfg.index) << 32) | seq;
  if (key == own) {
    rec.replies = static_cast<std::uint8_t>(std::min(255, rec.replies + 1));
    return;
  }
  ++led.wrong_reply;
  if (key != ~0ULL && (key >> 32) != st.cfg.index) {
    led.foreign_keys.push_back(key);
  } else if (key != ~0ULL && (key & 0xffffffffULL) < led.recs.size()) {
    auto& other = led.recs[key & 0xffffffffULL];
    other.replies = static_cast<std::uint8_t>(std::min(255, other.replies + 1));
  }
}

void client_send(chaos_client* self, command_request req, bool fault, std::string fault_kind);

void client_next(chaos_client* self) {
  auto& st = self->state;
  if (st.ctl->stop.load()) {
    client_done(self);
    return;
  }
  auto& c = st.cfg;
  const auto seq = static_cast<std::uint32_t>(st.ledger->recs.size());
  const std::uint64_t key = (static_cast<std::uint64_t>(c.index) << 32) | seq;
  if (c.slow_fraction > 0 && unit(c.rng) < c.slow_fraction) {
    double seconds = (10 + unit(c.rng) * std::max(0, c.slow_max_ms - 10)) / 1000.0;
    client_send(self, make_command("fault_sleep", json{{"seconds", seconds}}), true, {});
    return;
  }
  if (c.stream_chunks > 0) {
    client_send(self,
                make_command("bench_stream",
                             json{{"key", key}, {"n", c.stream_chunks}, {"pause_s", c.stream_pause_s}}),
                false, {});
    return;
  }
  client_send(self, make_command("echo", json{{"payload", "k" + std::to_string(key) + ":" + c.pad}}), false, {});
}

// A stream's result: {"k": key, "n": n}, after all n chunks.
void on_stream_result(chaos_client* self, std::uint32_t seq, const json& result) {
  auto& st = self->state;
  auto& led = *st.ledger;
  auto& rec = led.recs[seq];
  const std::uint64_t own = (static_cast<std::uint64_t>(st.cfg.index) << 32) | seq;
  if (!result.is_object() || result.value("k", ~0ULL) != own) {
    ++led.wrong_reply;
    return;
  }
  rec.replies = static_cast<std::uint8_t>(std::min(255, rec.replies + 1));
  if (rec.chunks != static_cast<std::uint32_t>(st.cfg.stream_chunks))
    ++led.incomplete;
}

void on_chunk(chaos_client* self, const stream_chunk& c) {
  auto& st = self->state;
  auto& led = *st.ledger;
  ++led.chunks;
  ack_chunk(self, c);
  // ref = seq + 1 (refs are never 0)
  if (c.ref == 0 || c.ref > led.recs.size()) {
    ++led.foreign_chunks;
    return;
  }
  const auto seq = static_cast<std::uint32_t>(c.ref - 1);
  auto& rec = led.recs[seq];
  if (!rec.stream) {
    ++led.foreign_chunks;
    return;
  }
  if (rec.out != outcome::pending)
    ++led.after_answer;
  const std::uint64_t own = (static_cast<std::uint64_t>(st.cfg.index) << 32) | seq;
  if (!c.data.is_object() || c.data.value("k", ~0ULL) != own || c.data.value("i", ~0ULL) != c.seq)
    ++led.foreign_chunks;
  if (c.seq != rec.chunks)
    ++led.out_of_order;
  ++rec.chunks;
}

void client_send(chaos_client* self, command_request req, bool fault, std::string fault_kind) {
  auto& st = self->state;
  auto& led = *st.ledger;
  const auto seq = static_cast<std::uint32_t>(led.recs.size());
  request_record rec;
  rec.sent_ns = steady_ns();
  rec.fault = fault;
  rec.fault_kind = std::move(fault_kind);
  rec.stream = req.command == "bench_stream";
  led.recs.push_back(std::move(rec));
  auto target = st.src->get();
  if (!target) {
    // No pool to ask (the node is gone): answered here, as node::execute would.
    auto& r = led.recs.back();
    r.reply_ns = steady_ns();
    r.out = outcome::error;
    r.replies = 1;
    ++led.errors["unavailable (no pool)"];
    if (!st.cfg.injector)
      self->delayed_send(self, st.cfg.backoff, next_atom::value);
    return;
  }
  if (led.recs.back().stream) {
    // As call_stream (call.hpp) does, with the client's own deadline kept
    // as the guard that tells a hung stream.
    req.sink = caf::actor_cast<caf::actor>(self);
    req.ref = seq + 1;
  }
  self->request(target, st.cfg.deadline, exec_atom::value, std::move(req))
    .then(
      [self, seq](json& result) {
        auto& rec = self->state.ledger->recs[seq];
        rec.reply_ns = steady_ns();
        rec.out = outcome::ok;
        if (rec.stream)
          on_stream_result(self, seq, result);
        else
          on_result(self, seq, result);
        if (!self->state.cfg.injector)
          client_next(self);
      },
      [self, seq](caf::error& err) {
        auto& st = self->state;
        auto& rec = st.ledger->recs[seq];
        rec.reply_ns = steady_ns();
        if (is_request_timeout(err)) {
          rec.out = outcome::timed_out;  // never answered by dspex
        } else {
          rec.out = outcome::error;
          rec.replies = static_cast<std::uint8_t>(std::min(255, rec.replies + 1));
          ++st.ledger->errors[error_class(err)];
        }
        if (!st.cfg.injector)
          self->delayed_send(self, st.cfg.backoff, next_atom::value);
      });
}

caf::behavior chaos_client_impl(chaos_client* self, client_config cfg, std::shared_ptr<target_source> src,
                                std::shared_ptr<load_control> ctl, std::shared_ptr<client_ledger> ledger) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.src = std::move(src);
  st.ctl = std::move(ctl);
  st.ledger = std::move(ledger);
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view&) -> caf::result<caf::message> {
    ++self->state.ledger->stray;
    return caf::message{};
  });
  if (!st.cfg.injector)
    client_next(self);
  return {
    [self](next_atom) { client_next(self); },
    [self](chunk_atom, stream_chunk& c) { on_chunk(self, c); },
    [self](inject_atom, command_request& req, std::string& kind) { client_send(self, std::move(req), true, kind); },
    // The injector ends when its outstanding faults are answered.
    [self](finish_atom) {
      auto& recs = self->state.ledger->recs;
      bool open = std::any_of(recs.begin(), recs.end(), [](const request_record& r) { return r.out == outcome::pending; });
      if (open) {
        self->delayed_send(self, 10ms, finish_atom::value);
        return;
      }
      client_done(self);
      self->quit();
    },
  };
}

// -- the watcher: supervision events and pool status -------------------------------------

struct exit_record {
  std::string worker_id;
  std::int64_t exit_ns = 0;   // steady: when its supervisor saw it exit
  std::int64_t recv_ns = 0;   // steady: when we got the event
  std::int64_t replaced_ns = -1;
  std::string reason;
  bool matched = false;
};

struct size_sample {
  std::int64_t at_ns = 0;
  int workers = -1;
};

struct watch_data {
  std::mutex mx;
  std::int64_t offset_ns = 0;  // system_clock - steady_clock
  std::vector<exit_record> exits;
  std::vector<size_sample> sizes;
  std::vector<std::pair<std::int64_t, std::string>> marks;  // escalation events
  std::map<std::string, int> escalation;
  bool root_stopped = false;
  bool supervisor_restarted = false;  // a supervisor above the workers restarted a child supervisor
  bool ignore = false;  // set before the node is stopped on purpose
};

struct watcher_state {
  std::shared_ptr<target_source> src;
  std::shared_ptr<watch_data> data;
  bool polling = false;
  bool stopped = false;
  static inline const char* name = "dspex.chaos.watcher";
};

using watcher = caf::stateful_actor<watcher_state>;

bool any_pending(watch_data& d) {
  return std::any_of(d.exits.begin(), d.exits.end(), [](const exit_record& e) { return e.replaced_ns < 0; });
}

void watcher_poll(watcher* self) {
  auto& st = self->state;
  if (st.stopped)
    return;
  bool pending;
  {
    std::lock_guard<std::mutex> g(st.data->mx);
    pending = any_pending(*st.data);
  }
  self->delayed_send(self, pending ? 2ms : 20ms, poll_atom::value);
  if (st.polling)
    return;
  auto pool = st.src->get();
  if (!pool)
    return;
  st.polling = true;
  const auto sent = steady_ns();
  self->request(pool, 1s, status_atom::value)
    .then(
      [self, sent](json& s) {
        auto& st = self->state;
        st.polling = false;
        const auto now = steady_ns();
        std::vector<std::string> ids;
        if (auto it = s.find("worker_list"); it != s.end() && it->is_array())
          for (auto& w : *it)
            ids.push_back(w.value("id", ""));
        std::lock_guard<std::mutex> g(st.data->mx);
        st.data->sizes.push_back({now, s.value("workers", 0)});
        // A status asked after we heard of an exit is answered after the
        // pool's own down message for it (both were sent when the worker
        // died; ours went through the supervisor first): a worker of that
        // id in it is the replacement, registered and ready.
        for (auto& e : st.data->exits)
          if (e.replaced_ns < 0 && e.recv_ns < sent && std::find(ids.begin(), ids.end(), e.worker_id) != ids.end())
            e.replaced_ns = now;
      },
      [self](caf::error&) {
        auto& st = self->state;
        st.polling = false;
        std::lock_guard<std::mutex> g(st.data->mx);
        st.data->sizes.push_back({steady_ns(), 0});
      });
}

caf::behavior watcher_impl(watcher* self, std::shared_ptr<target_source> src, std::shared_ptr<watch_data> data) {
  self->state.src = std::move(src);
  self->state.data = std::move(data);
  self->delayed_send(self, 2ms, poll_atom::value);
  return {
    [self](supervision::supervision_event& ev) {
      using supervision::event_kind;
      auto& d = *self->state.data;
      const auto now = steady_ns();
      std::lock_guard<std::mutex> g(d.mx);
      if (d.ignore)
        return;
      const auto when = sys_ns(ev.ts) - d.offset_ns;
      const bool worker_path = ev.path.find("/workers/") != std::string::npos;
      if (ev.kind == event_kind::child_exited && worker_path) {
        exit_record e;
        e.worker_id = ev.child_id;
        e.exit_ns = when;
        e.recv_ns = now;
        e.reason = ev.reason;
        d.exits.push_back(std::move(e));
      } else if (ev.kind == event_kind::intensity_reached || ev.kind == event_kind::supervisor_stopped ||
                 (ev.kind == event_kind::child_restarted && !worker_path)) {
        // intensity_reached carries the path of the child that tipped it:
        // name the supervisor instead.
        std::string where = ev.path;
        const std::string tail = "/" + ev.child_id;
        if (ev.kind == event_kind::intensity_reached && !ev.child_id.empty() && where.size() > tail.size() &&
            where.compare(where.size() - tail.size(), tail.size(), tail) == 0)
          where.resize(where.size() - tail.size());
        auto label = supervision::to_string(ev.kind) + " " + where;
        ++d.escalation[label];
        if (ev.kind == event_kind::child_restarted)
          d.supervisor_restarted = true;
        d.marks.emplace_back(when, label);
        if (ev.kind == event_kind::supervisor_stopped && ev.path == "root")
          d.root_stopped = true;
      }
    },
    [self](poll_atom) { watcher_poll(self); },
    [self](finish_atom) {
      self->state.stopped = true;
      self->quit();
    },
  };
}

// -- helpers -------------------------------------------------------------------------------

int count_leftovers() {
  int n = 0;
  for (auto& p : worker_processes())
    if (p.worker_id.rfind("bare", 0) != 0)
      ++n;
  return n + zombie_children();
}

latency_summary summary_of(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  return summarize_sorted_us(us);
}

std::string describe_scenario(const std::string& s, const chaos_options& o, int workers) {
  const std::string w = std::to_string(workers) + " workers";
  if (s == "kill")
    return "SIGKILL a random worker every " + std::to_string(o.kill_every.count()) + " ms under load (" + w + ")";
  if (s == "hang")
    return "fault_hang every ~" + std::to_string(o.hang_every.count()) + " ms, request_timeout_ms " +
           std::to_string(o.hang_request_timeout_ms) + " (" + w + ")";
  if (s == "garbage")
    return "fault_garbage (non-frame bytes) every ~" + std::to_string(o.garbage_every.count()) + " ms (" + w + ")";
  if (s == "slow")
    return std::to_string(static_cast<int>(o.slow_fraction * 100)) + "% of requests are fault_sleep 10-" +
           std::to_string(o.slow_max_ms) + " ms (" + w + ")";
  if (s == "stream")
    return "streams of " + std::to_string(o.stream_chunks) + " chunks (" + std::to_string(o.stream_pause.count()) +
           " ms apart), SIGKILL a random worker every " + std::to_string(o.kill_every.count()) + " ms (" + w + ")";
  if (s == "crashloop")
    return "pool of 2, worker_intensity 1: SIGKILL every " + std::to_string(o.crashloop_kill_every.count()) +
           (o.crashloop_until == "root" ? " ms until the root supervisor gives up"
                                        : " ms until the worker supervisor escalates");
  return s;
}

} // namespace

// -- options, schedules -----------------------------------------------------------------------

chaos_options chaos_options::quick_defaults() {
  chaos_options o;
  o.quick = true;
  o.warmup = 200ms;
  o.fault_phase = 2000ms;
  o.recovery = 500ms;
  o.settle_limit = 8000ms;
  o.hang_every = 300ms;
  o.garbage_every = 150ms;
  return o;
}

std::vector<chaos_fault> chaos_schedule(const std::string& scenario, std::uint64_t seed, const chaos_options& o) {
  std::vector<chaos_fault> s;
  std::uint64_t rng = derive(seed, scenario, 0);
  const auto phase = o.fault_phase.count();
  auto periodic = [&](std::chrono::milliseconds every, const std::string& kind, bool jitter) {
    const auto step = std::max<std::int64_t>(1, every.count());
    for (std::int64_t t = step; t < phase; t += step) {
      chaos_fault f;
      f.kind = kind;
      // +-25% jitter keeps request faults from lining up with anything periodic.
      std::int64_t j = jitter ? static_cast<std::int64_t>((unit(rng) - 0.5) * 0.5 * static_cast<double>(step)) : 0;
      f.at = std::chrono::milliseconds(std::clamp<std::int64_t>(t + j, 0, phase));
      f.pick = splitmix64(rng);
      if (kind == "fault_garbage")
        f.bytes = 16 + static_cast<int>(splitmix64(rng) % 4096);
      s.push_back(f);
    }
  };
  if (scenario == "kill" || scenario == "stream")
    periodic(o.kill_every, "kill", false);
  else if (scenario == "crashloop")
    periodic(o.crashloop_kill_every, "kill", false);
  else if (scenario == "hang")
    periodic(o.hang_every, "fault_hang", true);
  else if (scenario == "garbage")
    periodic(o.garbage_every, "fault_garbage", true);
  std::stable_sort(s.begin(), s.end(), [](const chaos_fault& a, const chaos_fault& b) { return a.at < b.at; });
  return s;
}

std::string schedule_digest(const std::vector<chaos_fault>& s, std::uint64_t client_seed) {
  std::uint64_t h = fnv1a(std::to_string(client_seed));
  for (auto& f : s)
    h = fnv1a(std::to_string(f.at.count()) + "/" + f.kind + "/" + std::to_string(f.pick) + "/" +
                std::to_string(f.bytes) + ";",
              h);
  return hex(h);
}

std::vector<std::string> chaos_result::violations() const {
  std::vector<std::string> v;
  if (!started)
    v.push_back(scenario + ": did not run (" + error + ")");
  if (never_answered)
    v.push_back(scenario + ": never answered " + std::to_string(never_answered));
  if (answered_twice)
    v.push_back(scenario + ": answered twice " + std::to_string(answered_twice));
  if (wrong_reply)
    v.push_back(scenario + ": replies carrying another request's key " + std::to_string(wrong_reply));
  if (leftover_processes != 0)
    v.push_back(scenario + ": leftover processes " + std::to_string(leftover_processes));
  auto must_be_0 = [&](std::uint64_t n, const char* what) {
    if (n)
      v.push_back(scenario + ": " + what + " " + std::to_string(n));
  };
  must_be_0(chunks_out_of_order, "chunks out of order");
  must_be_0(chunks_foreign, "chunks of another stream");
  must_be_0(chunks_after_answer, "chunks after the answer");
  must_be_0(streams_incomplete, "streams answered with a result but missing chunks");
  if (slots_in_flight > 0 || slots_busy > 0)
    v.push_back(scenario + ": leaked slots: in_flight " + std::to_string(slots_in_flight) + ", busy " +
                std::to_string(slots_busy) + " after the load stopped");
  return v;
}

// -- one scenario -------------------------------------------------------------------------------

chaos_result run_chaos_scenario(const std::string& scenario, const chaos_options& o, progress_line* progress) {
  chaos_result r;
  r.scenario = scenario;
  const auto t_start = clock_type::now();
  const bool crashloop = scenario == "crashloop";
  const int workers = crashloop ? 2 : o.workers;
  const int clients = o.clients > 0 ? o.clients : 2 * workers;
  r.workers = workers;
  r.clients = clients;
  r.pool_full = workers;
  r.seed = derive(o.seed, scenario, 0);
  r.description = describe_scenario(scenario, o, workers);
  const auto schedule = chaos_schedule(scenario, o.seed, o);
  r.digest = schedule_digest(schedule, derive(o.seed, scenario, 1));
  r.faults_scheduled = static_cast<int>(schedule.size());
  auto say = [&](const std::string& what) {
    if (progress)
      progress->update("chaos " + scenario + " [" +
                       format_fixed(std::chrono::duration<double>(clock_type::now() - t_start).count(), 1) + " s] " +
                       what + " ...");
  };

  pool_setup s;
  s.size = workers;
  s.python = o.python;
  s.fault_injection = true;
  s.circuit = false;
  s.checkout_timeout_ms = o.checkout_timeout_ms;
  s.request_timeout_ms = scenario == "hang" ? o.hang_request_timeout_ms : o.request_timeout_ms;
  s.worker_intensity = crashloop ? 1 : 100000;
  s.max_consecutive_failures = 0;  // only the injected faults replace workers
  s.max_concurrency = o.max_concurrency;
  const bool streams = scenario == "stream";
  if (streams) {
    const auto cmds = locate_peer_file("bench_cmds.py");
    if (cmds.empty()) {
      r.error = "bench_cmds.py not found (set DSPEX_BENCH_PEERS_DIR)";
      return r;
    }
    s.handler_paths = {cmds.substr(0, cmds.rfind('/'))};
    s.handlers = {"bench_cmds"};
  }
  const auto deadline = std::chrono::milliseconds(s.request_timeout_ms + s.checkout_timeout_ms + 5000);

  caf::actor_system_config cfg;

  dspex::recommended_settings(cfg);
  apply_caf_args(cfg, o.caf_args);
  caf::actor_system sys{cfg};
  auto src = std::make_shared<target_source>();
  auto watch = std::make_shared<watch_data>();
  watch->offset_ns = sys_ns(std::chrono::system_clock::now()) - steady_ns();
  auto watcher_actor = sys.spawn(watcher_impl, src, watch);
  auto opts = bench_node_options();
  opts.subscribers.push_back(watcher_actor);

  say("starting " + std::to_string(workers) + " workers");
  auto started = start_pool_node(sys, s, opts);
  if (!started) {
    r.error = "the node did not start: " + describe(started.error());
    caf::anon_send(watcher_actor, finish_atom::value);
    r.leftover_processes = count_leftovers();
    return r;
  }
  r.started = true;
  auto n = *started;
  {
    std::lock_guard<std::mutex> g(src->mx);
    src->n = n;
  }

  // -- load --
  const auto t0 = steady_ns();
  availability_timeline timeline(100ms, at_ns(t0));
  auto ctl = std::make_shared<load_control>();
  std::vector<std::shared_ptr<client_ledger>> ledgers;
  const std::string pad(o.payload_bytes, 'x');
  ctl->running = clients + 1;
  for (int i = 0; i < clients; ++i) {
    client_config c;
    c.index = static_cast<std::uint32_t>(i);
    c.rng = derive(o.seed, scenario, 1000 + static_cast<std::uint64_t>(i));
    if (scenario == "slow") {
      c.slow_fraction = o.slow_fraction;
      c.slow_max_ms = o.slow_max_ms;
    }
    c.pad = pad;
    c.deadline = deadline;
    if (streams) {
      c.stream_chunks = o.stream_chunks;
      c.stream_pause_s = static_cast<double>(o.stream_pause.count()) / 1000.0;
    }
    ledgers.push_back(std::make_shared<client_ledger>());
    sys.spawn(chaos_client_impl, c, src, ctl, ledgers.back());
  }
  client_config ic;
  ic.index = static_cast<std::uint32_t>(clients);
  ic.injector = true;
  ic.deadline = deadline;
  ledgers.push_back(std::make_shared<client_ledger>());
  auto injector = sys.spawn(chaos_client_impl, ic, src, ctl, ledgers.back());

  say("warm-up");
  std::this_thread::sleep_for(o.warmup);

  // -- faults --
  struct kill_record {
    std::string worker_id;
    std::int64_t at_ns = 0;
  };
  std::vector<kill_record> kills;
  std::int64_t last_injection = -1;
  const auto t_faults = steady_ns();
  timeline.event("faults start", at_ns(t_faults));
  std::size_t next_say = 0;
  for (auto& f : schedule) {
    std::this_thread::sleep_until(at_ns(t_faults) + f.at);
    {
      std::lock_guard<std::mutex> g(watch->mx);
      if (watch->root_stopped) {
        r.notes.push_back("the root supervisor stopped after " + std::to_string(r.faults_injected) +
                          " faults: the remaining " +
                          std::to_string(r.faults_scheduled - r.faults_injected - r.faults_skipped) +
                          " were not injected");
        break;
      }
      if (crashloop && o.crashloop_until == "pool" && watch->supervisor_restarted) {
        // Escalated: the worker supervisor gave up and its parent restarted
        // it. Stop here and watch the pool come back.
        r.notes.push_back("escalation seen after " + std::to_string(r.faults_injected) + " kills; kills stopped");
        break;
      }
    }
    if (++next_say % 10 == 1)
      say(std::to_string(r.faults_injected) + "/" + std::to_string(r.faults_scheduled) + " faults");
    if (f.kind == "kill") {
      auto procs = worker_processes();
      procs.erase(std::remove_if(procs.begin(), procs.end(),
                                 [](const worker_process& p) { return p.worker_id.rfind("bare", 0) == 0; }),
                  procs.end());
      if (procs.empty()) {
        ++r.faults_skipped;  // every worker is down already
        continue;
      }
      auto& victim = procs[f.pick % procs.size()];
      const auto at = steady_ns();
      if (::kill(victim.pid, SIGKILL) != 0) {
        ++r.faults_skipped;  // it was exiting on its own
        continue;
      }
      kills.push_back({victim.worker_id, at});
      last_injection = at;
      ++r.faults_injected;
    } else {
      json args{{"key", "fault-" + std::to_string(r.faults_injected)}};
      if (f.kind == "fault_garbage")
        args["bytes"] = f.bytes;
      last_injection = steady_ns();
      caf::anon_send(injector, inject_atom::value, make_command(f.kind, std::move(args)), f.kind);
      ++r.faults_injected;
    }
  }
  // The phase lasts its full length even when the last fault came early.
  std::this_thread::sleep_until(at_ns(t_faults) + o.fault_phase);
  const auto t_faults_end = steady_ns();
  timeline.event("faults end", at_ns(t_faults_end));

  // -- recovery: the load goes on; wait for a full pool (unless the tree is gone) --
  say("recovery");
  std::this_thread::sleep_for(o.recovery);
  const auto settle_deadline = clock_type::now() + o.settle_limit;
  while (clock_type::now() < settle_deadline) {
    {
      std::lock_guard<std::mutex> g(watch->mx);
      if (watch->root_stopped)
        break;
      if (!watch->sizes.empty() && watch->sizes.back().workers >= workers && !any_pending(*watch))
        break;
    }
    std::this_thread::sleep_for(10ms);
  }

  // -- stop the load: every client ends after its outstanding reply --
  say("draining the load");
  ctl->stop = true;
  caf::anon_send(injector, finish_atom::value);
  {
    std::unique_lock<std::mutex> g(ctl->mx);
    if (!ctl->cv.wait_for(g, deadline + 10s, [&] { return ctl->running == 0; }))
      r.notes.push_back(std::to_string(ctl->running) + " clients still waiting for a reply at the end");
  }

  // -- slots: once the load stopped, the pool must hold nothing in flight --
  if (streams) {
    say("checking the pool's slots");
    caf::scoped_actor self{sys};
    const auto until = clock_type::now() + 5s;
    do {
      if (auto pool = src->get())
        self->request(pool, 2s, status_atom::value)
          .receive(
            [&](json& st) {
              r.slots_in_flight = st.value("in_flight", -1);
              r.slots_busy = st.value("busy", -1);
            },
            [](caf::error&) {});
      if (r.slots_in_flight == 0 && r.slots_busy == 0)
        break;
      std::this_thread::sleep_for(20ms);
    } while (clock_type::now() < until);
  }

  // -- stop the node, count what is left --
  say("stopping the node");
  {
    std::lock_guard<std::mutex> g(watch->mx);
    watch->ignore = true;
  }
  caf::anon_send(watcher_actor, finish_atom::value);
  {
    std::lock_guard<std::mutex> g(src->mx);
    src->n.reset();
  }
  n->stop();
  n.reset();
  const auto t_stopped = clock_type::now();
  r.leftover_processes = count_leftovers();
  // A tree that died on its own reaps its processes asynchronously: allow
  // it a moment, and say how long it took.
  if (r.leftover_processes != 0) {
    while (r.leftover_processes != 0 && clock_type::now() - t_stopped < 3s) {
      std::this_thread::sleep_for(20ms);
      r.leftover_processes = count_leftovers();
    }
    r.leftover_wait_ms = std::chrono::duration<double, std::milli>(clock_type::now() - t_stopped).count();
  }
  caf::anon_send_exit(injector, caf::exit_reason::user_shutdown);

  // -- tally --
  std::lock_guard<std::mutex> wg(watch->mx);
  // Foreign replies: credit the key's owner.
  for (auto& l : ledgers)
    for (auto key : l->foreign_keys) {
      auto owner = key >> 32;
      auto seq = key & 0xffffffffULL;
      if (owner < ledgers.size() && seq < ledgers[owner]->recs.size()) {
        auto& rec = ledgers[owner]->recs[seq];
        rec.replies = static_cast<std::uint8_t>(std::min(255, rec.replies + 1));
      }
    }
  std::vector<double> success_us;
  struct fault_reply {
    std::string kind;
    std::int64_t sent_ns, reply_ns;
    outcome out;
  };
  std::vector<fault_reply> fault_replies;
  for (auto& l : ledgers) {
    r.wrong_reply += l->wrong_reply;
    r.stray_messages += l->stray;
    r.chunks += l->chunks;
    r.chunks_out_of_order += l->out_of_order;
    r.chunks_foreign += l->foreign_chunks;
    r.chunks_after_answer += l->after_answer;
    r.streams_incomplete += l->incomplete;
    for (auto& [cls, count] : l->errors)
      r.errors_by_class[cls] += count;
    for (auto& rec : l->recs) {
      ++r.sent;
      if (rec.out == outcome::ok)
        ++r.answered_ok;
      if (rec.replies == 0)
        ++r.never_answered;
      if (rec.replies >= 2)
        ++r.answered_twice;
      if (rec.out == outcome::ok || rec.out == outcome::error)
        timeline.record(rec.out == outcome::ok, at_ns(rec.reply_ns));
      if (!rec.fault && rec.out == outcome::ok && rec.sent_ns >= t_faults && rec.sent_ns < t_faults_end)
        success_us.push_back(to_us(rec.reply_ns - rec.sent_ns));
      if (!rec.fault_kind.empty())
        fault_replies.push_back({rec.fault_kind, rec.sent_ns, rec.reply_ns, rec.out});
    }
  }
  r.success_latency = summary_of(success_us);

  // Detection and replacement.
  auto& exits = watch->exits;
  r.exits = static_cast<int>(exits.size());
  for (auto& e : exits)
    if (e.replaced_ns >= 0)
      ++r.replaced;
  if (!kills.empty()) {
    r.detection_means = "SIGKILL -> its supervisor saw the worker exit";
    r.replacement_means = "SIGKILL -> a worker of that id registered with the pool again (status polled every 2 ms)";
    for (auto& k : kills) {
      for (auto& e : exits) {
        if (e.matched || e.worker_id != k.worker_id || e.exit_ns < k.at_ns - 1000000)
          continue;
        e.matched = true;
        r.detection_us.push_back(to_us(e.exit_ns - k.at_ns));
        if (e.replaced_ns >= 0)
          r.replacement_us.push_back(to_us(e.replaced_ns - k.at_ns));
        break;
      }
    }
  } else if (!fault_replies.empty()) {
    r.detection_means = "fault request sent -> its caller's error (includes waiting in the pool's queue" +
                        std::string(scenario == "hang" ? ", and request_timeout_ms)" : ")");
    r.replacement_means = "fault request sent -> the replaced worker registered with the pool again";
    std::sort(fault_replies.begin(), fault_replies.end(),
              [](const fault_reply& a, const fault_reply& b) { return a.sent_ns < b.sent_ns; });
    for (auto& f : fault_replies) {
      if (f.out != outcome::error)
        continue;
      r.detection_us.push_back(to_us(f.reply_ns - f.sent_ns));
      for (auto& e : exits) {
        if (e.matched || e.exit_ns < f.sent_ns)
          continue;
        e.matched = true;
        if (e.replaced_ns >= 0)
          r.replacement_us.push_back(to_us(e.replaced_ns - f.sent_ns));
        break;
      }
    }
  }

  // Pool size: the timeline, the end, and when it was full again.
  for (auto& sz : watch->sizes)
    timeline.pool_size(sz.workers, at_ns(sz.at_ns));
  if (!watch->sizes.empty())
    r.pool_at_end = watch->sizes.back().workers;
  const auto last_fault = last_injection >= 0 ? last_injection : t_faults_end;
  for (auto it = watch->sizes.rbegin(); it != watch->sizes.rend(); ++it) {
    // The start of the last run of full samples that reaches the end.
    if (it->workers < workers)
      break;
    if (it->at_ns >= last_fault)
      r.back_to_full_ms = static_cast<double>(it->at_ns - last_fault) / 1e6;
  }
  if (r.pool_at_end < workers || last_injection < 0)
    r.back_to_full_ms = -1;
  r.escalation = watch->escalation;
  r.root_stopped = watch->root_stopped;

  // Events for the plot: kills when few enough to read, escalations always.
  if (kills.size() <= 40)
    for (auto& k : kills)
      timeline.event("kill " + k.worker_id, at_ns(k.at_ns));
  for (auto& [at, label] : watch->marks)
    if (label.rfind("intensity_reached", 0) == 0 || label.rfind("supervisor_stopped", 0) == 0)
      timeline.event(label, at_ns(at));
  r.timeline = timeline.buckets();
  r.events = timeline.events();
  r.seconds = std::chrono::duration<double>(clock_type::now() - t_start).count();
  return r;
}

// -- report -------------------------------------------------------------------------------------

json to_json(const chaos_result& r) {
  auto lat = [](const std::vector<double>& v) { return to_json(summary_of(v)); };
  json timeline = json::array();
  for (auto& b : r.timeline)
    timeline.push_back({{"t_s", b.t_s}, {"ok", b.ok}, {"failed", b.failed}, {"pool_size", b.pool_size}});
  json events = json::array();
  for (auto& e : r.events)
    events.push_back({{"t_s", e.t_s}, {"label", e.label}});
  return json{{"scenario", r.scenario},
              {"description", r.description},
              {"seed", r.seed},
              {"schedule_digest", r.digest},
              {"workers", r.workers},
              {"clients", r.clients},
              {"started", r.started},
              {"error", r.error},
              {"sent", r.sent},
              {"answered_ok", r.answered_ok},
              {"errors_by_class", r.errors_by_class},
              {"never_answered", r.never_answered},
              {"answered_twice", r.answered_twice},
              {"wrong_reply", r.wrong_reply},
              {"stray_messages", r.stray_messages},
              {"chunks", r.chunks},
              {"chunks_out_of_order", r.chunks_out_of_order},
              {"chunks_foreign", r.chunks_foreign},
              {"chunks_after_answer", r.chunks_after_answer},
              {"streams_incomplete", r.streams_incomplete},
              {"slots_in_flight", r.slots_in_flight},
              {"slots_busy", r.slots_busy},
              {"faults", {{"scheduled", r.faults_scheduled}, {"injected", r.faults_injected}, {"skipped", r.faults_skipped}}},
              {"success_latency_during_faults", to_json(r.success_latency)},
              {"detection", {{"means", r.detection_means}, {"summary", lat(r.detection_us)}, {"samples_us", r.detection_us}}},
              {"replacement",
               {{"means", r.replacement_means}, {"summary", lat(r.replacement_us)}, {"samples_us", r.replacement_us}}},
              {"worker_exits", r.exits},
              {"worker_exits_replaced", r.replaced},
              {"pool_full", r.pool_full},
              {"pool_at_end", r.pool_at_end},
              {"back_to_full_ms", r.back_to_full_ms},
              {"escalation", r.escalation},
              {"root_stopped", r.root_stopped},
              {"leftover_processes", r.leftover_processes},
              {"leftover_wait_ms", r.leftover_wait_ms},
              {"timeline", timeline},
              {"events", events},
              {"plot", {{"ok", r.plot.ok}, {"png", r.plot.png}, {"message", r.plot.message}}},
              {"notes", r.notes},
              {"seconds", r.seconds}};
}

void add_chaos_rows(report_table& t, const chaos_result& r) {
  t.section(r.scenario + ": " + r.description + "; " + std::to_string(r.clients) + " clients; schedule " + r.digest);
  if (!r.started) {
    t.add({"scenario", "-", "", "", "runs", verdict::fail, r.error});
    return;
  }
  auto pct = [&](std::uint64_t n) {
    return r.sent ? " (" + format_fixed(100.0 * static_cast<double>(n) / static_cast<double>(r.sent), 1) + "%)" : "";
  };
  auto zero = [](std::uint64_t n) { return n == 0 ? verdict::pass : verdict::fail; };
  t.add({"requests sent", std::to_string(r.sent), "", "", "", verdict::info, ""});
  t.add({"answered with a result", std::to_string(r.answered_ok) + pct(r.answered_ok), "", "", "", verdict::info, ""});
  for (auto& [cls, n] : r.errors_by_class)
    t.add({"answered with " + cls, std::to_string(n) + pct(n), "", "", "", verdict::info, ""});
  std::uint64_t unclassified = 0;
  for (auto& [cls, n] : r.errors_by_class)
    if (cls.rfind("unclassified", 0) == 0)
      unclassified += n;
  t.add({"answered with an unclassified error", std::to_string(unclassified), "", "", "0", zero(unclassified),
         unclassified ? "every request: a result or a classified error; reported, not part of --assert" : ""});
  t.add({"never answered", std::to_string(r.never_answered), "", "", "0", zero(r.never_answered), ""});
  t.add({"answered twice", std::to_string(r.answered_twice), "", "", "0", zero(r.answered_twice), ""});
  t.add({"reply carrying another request's key", std::to_string(r.wrong_reply), "", "", "0", zero(r.wrong_reply), ""});
  if (r.scenario == "stream") {
    t.add({"chunks received", std::to_string(r.chunks), "", "", "", verdict::info, ""});
    t.add({"chunks out of order", std::to_string(r.chunks_out_of_order), "", "", "0", zero(r.chunks_out_of_order), ""});
    t.add({"chunks of another stream", std::to_string(r.chunks_foreign), "", "", "0", zero(r.chunks_foreign), ""});
    t.add({"chunks after the stream's answer", std::to_string(r.chunks_after_answer), "", "", "0",
           zero(r.chunks_after_answer), ""});
    t.add({"streams with a result but missing chunks", std::to_string(r.streams_incomplete), "", "", "0",
           zero(r.streams_incomplete), ""});
    const bool drained = r.slots_in_flight == 0 && r.slots_busy == 0;
    t.add({"slots after the load: in_flight / busy",
           std::to_string(r.slots_in_flight) + " / " + std::to_string(r.slots_busy), "", "", "0 / 0",
           drained ? verdict::pass : verdict::fail, "pool status once every client had its answer"});
  }
  table_row faults{"faults injected", std::to_string(r.faults_injected) + " of " + std::to_string(r.faults_scheduled),
                   "", "", "", verdict::info, ""};
  if (r.faults_skipped)
    faults.note = std::to_string(r.faults_skipped) + " skipped (no live worker, or it was already exiting)";
  for (auto& n : r.notes)
    faults.note += (faults.note.empty() ? "" : "; ") + n;
  t.add(faults);
  if (r.success_latency.count) {
    const std::string n = " (" + std::to_string(r.success_latency.count) + " echoes)";
    t.add({"success latency during faults, p50", format_micros(r.success_latency.p50_us), "", "", "", verdict::info, ""});
    t.add({"success latency during faults, p99", format_micros(r.success_latency.p99_us), "", "", "", verdict::info, ""});
    t.add({"success latency during faults, max", format_micros(r.success_latency.max_us), "", "", "", verdict::info,
           ""});
  }
  if (!r.detection_us.empty()) {
    auto d = summary_of(r.detection_us);
    t.add({"detection p50 / max (n=" + std::to_string(d.count) + ")",
           format_micros(d.p50_us) + " / " + format_micros(d.max_us), "", "", "", verdict::info, r.detection_means});
  }
  if (!r.replacement_us.empty()) {
    auto d = summary_of(r.replacement_us);
    t.add({"replacement p50 / max (n=" + std::to_string(d.count) + ")",
           format_micros(d.p50_us) + " / " + format_micros(d.max_us), "", "", "", verdict::info, r.replacement_means});
  }
  if (r.exits)
    t.add({"worker exits replaced", std::to_string(r.replaced) + " of " + std::to_string(r.exits), "", "", "",
           verdict::info, ""});
  if (r.scenario == "crashloop") {
    auto list = [&](const std::string& kind) {
      std::string where;
      int n = 0;
      for (auto& [label, count] : r.escalation)
        if (label.rfind(kind + " ", 0) == 0) {
          n += count;
          where += (where.empty() ? "" : ", ") + label.substr(kind.size() + 1) + " x" + std::to_string(count);
        }
      return std::make_pair(n, where);
    };
    auto [intensity, at] = list("intensity_reached");
    auto [restarts, restarted] = list("child_restarted");
    t.add({"escalation: intensity_reached at", intensity ? at : "none", "", "", "seen",
           intensity ? verdict::pass : verdict::fail, ""});
    t.add({"escalation: supervisors restarted", restarts ? restarted : "none", "", "", "", verdict::info, ""});
    t.add({"root supervisor stopped", r.root_stopped ? "yes" : "no", "", "", "", verdict::info,
           r.root_stopped ? "the whole tree gave up: requests after that were answered by CAF (receiver down)" : ""});
  }
  if (!r.root_stopped) {
    std::string v = std::to_string(r.pool_at_end) + " of " + std::to_string(r.pool_full);
    if (r.back_to_full_ms >= 0)
      v += ", " + format_fixed(r.back_to_full_ms, 0) + " ms after the last fault";
    t.add({"pool size at the end", v, "", "", "full", r.pool_at_end >= r.pool_full ? verdict::pass : verdict::fail, ""});
  }
  t.add({"leftover processes", std::to_string(r.leftover_processes), "", "", "0",
         r.leftover_processes == 0 ? verdict::pass : verdict::fail,
         r.leftover_processes == 0 && r.leftover_wait_ms > 0
           ? "processes were still exiting when node::stop returned; 0 after " + format_fixed(r.leftover_wait_ms, 0) +
               " ms"
           : ""});
}

// -- the command ----------------------------------------------------------------------------------

int run_chaos(const chaos_options& o) {
  if (o.nodes > 0)
    return run_chaos_nodes(o);
  progress_line progress;
  const auto t0 = clock_type::now();
  const double load_before = load_average_1m();
  std::cerr << "dspex-bench chaos: seed " << o.seed << ", scenarios";
  for (auto& s : o.scenarios)
    std::cerr << ' ' << s;
  std::cerr << ", " << o.fault_phase.count() << " ms fault phases" << (o.quick ? " (quick)" : "") << "; load average "
            << format_fixed(load_before, 2) << "\n";

  std::vector<chaos_result> results;
  for (auto& s : o.scenarios) {
    auto r = run_chaos_scenario(s, o, &progress);
    std::ostringstream line;
    line << "  " << s << ": " << r.sent << " sent, " << r.answered_ok << " ok, ";
    std::uint64_t errs = 0;
    for (auto& [c, k] : r.errors_by_class)
      errs += k;
    line << errs << " errors, " << r.never_answered << " never answered, " << r.answered_twice << " twice, "
         << r.leftover_processes << " leftover (" << format_fixed(r.seconds, 1) << " s)";
    if (!r.started)
      line << " -- did not run: " << r.error;
    progress.finish(line.str());
    results.push_back(std::move(r));
  }
  progress.clear();
  const double load_after = load_average_1m();

  if (o.plots)
    for (auto& r : results)
      if (r.started)
        r.plot = plot_availability(o.out_dir, "chaos_" + r.scenario, r.timeline, r.events,
                                   r.scenario + ": " + r.description, 0.1);

  const json machine = machine_info(o.python);
  report_table table("dspex-bench chaos, seed " + std::to_string(o.seed) + (o.quick ? " (quick)" : "") + " (" +
                     machine.value("cpu", std::string("?")) + ", " + std::to_string(machine.value("cores", 0u)) +
                     " cores; load average " + format_fixed(load_before, 2) + " before, " +
                     format_fixed(load_after, 2) + " after)");
  for (auto& r : results)
    add_chaos_rows(table, r);
  std::cout << '\n';
  table.print(std::cout);

  std::vector<std::string> violations;
  for (auto& r : results)
    for (auto& v : r.violations())
      violations.push_back(v);

  json scen = json::array();
  for (auto& r : results)
    scen.push_back(to_json(r));
  std::vector<std::string> names = o.scenarios;
  json out{{"machine", machine},
           {"load_average_1m_before", load_before},
           {"load_average_1m_after", load_after},
           {"options",
            {{"seed", o.seed},
             {"scenarios", names},
             {"workers", o.workers},
             {"clients", o.clients > 0 ? o.clients : 2 * o.workers},
             {"payload_bytes", o.payload_bytes},
             {"warmup_ms", o.warmup.count()},
             {"fault_phase_ms", o.fault_phase.count()},
             {"recovery_ms", o.recovery.count()},
             {"kill_every_ms", o.kill_every.count()},
             {"hang_every_ms", o.hang_every.count()},
             {"garbage_every_ms", o.garbage_every.count()},
             {"crashloop_kill_every_ms", o.crashloop_kill_every.count()},
             {"crashloop_until", o.crashloop_until},
             {"slow_fraction", o.slow_fraction},
             {"slow_max_ms", o.slow_max_ms},
             {"stream_chunks", o.stream_chunks},
             {"stream_pause_ms", o.stream_pause.count()},
             {"request_timeout_ms", o.request_timeout_ms},
             {"hang_request_timeout_ms", o.hang_request_timeout_ms},
             {"checkout_timeout_ms", o.checkout_timeout_ms},
             {"quick", o.quick}}},
           {"method",
            "client actors keep one request in flight each against node::target(), backing off 5 ms after an "
            "error; every request carries a unique key, echoed back by echo; replies are counted per key. A "
            "request the client's own deadline (request + checkout timeout + 5 s) expired on is never answered."},
           {"scenarios", scen},
           {"violations", violations},
           {"table", table.to_json()},
           {"wall_seconds", std::chrono::duration<double>(clock_type::now() - t0).count()}};
  std::vector<plot_outcome> plots;
  for (auto& r : results)
    plots.push_back(r.plot);
  int rc = write_report("dspex-bench chaos", o.out_dir + "/chaos.json", out, plots,
                        std::chrono::duration<double>(clock_type::now() - t0).count())
             ? 0
             : 1;
  if (violations.empty()) {
    std::cout << "must-be-0 figures: all 0\n";
  } else {
    std::cout << "must-be-0 figures NOT 0:\n";
    for (auto& v : violations)
      std::cout << "  " << v << "\n";
    if (o.assert_zero)
      rc = 1;
  }
  return rc;
}

} // namespace dspex::bench
