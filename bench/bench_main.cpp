#include <dspex/bench/bench_main.hpp>

#include <dspex/bench/targets.hpp>

#include <algorithm>
#include <cmath>
#include <exception>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace dspex::bench {

namespace {

using clock_type = std::chrono::steady_clock;
constexpr double nan_ratio = std::numeric_limits<double>::quiet_NaN();

double ratio(double a, double b) { return b > 0 && a > 0 ? a / b : nan_ratio; }

std::string workers_list(const std::vector<int>& ws) {
  std::string s;
  for (auto w : ws)
    s += (s.empty() ? "" : ",") + std::to_string(w);
  return s;
}

std::string describe(const bare_result& b) {
  std::ostringstream os;
  os << "bare loop W=" << b.workers << ": " << format_rate(b.requests_per_s) << ", p50 "
     << format_micros(b.summary.p50_us) << ", p99 " << format_micros(b.summary.p99_us);
  if (b.errors)
    os << ", " << b.errors << " errors (" << b.first_error << ")";
  return os.str();
}

std::string describe(const peer_result& p) {
  std::ostringstream os;
  os << display_name(p.kind) << " W=" << p.workers << ": ";
  if (!p.ok)
    os << "failed: " << p.error;
  else
    os << format_rate(p.requests_per_s) << " (" << p.inflight << " in flight), p50 "
       << format_micros(p.latency.p50_us);
  return os.str();
}

std::string describe(const spawn_stats& s) {
  std::ostringstream os;
  os << s.workers << (s.workers == 1 ? " worker" : " workers") << " to first reply: median "
     << format_micros(s.summary.p50_us) << " (min " << format_micros(s.summary.min_us) << ", max "
     << format_micros(s.summary.max_us) << ", n=" << s.summary.count << ")";
  return os.str();
}

json options_json(const peer_bench_options& o) {
  return json{{"workers", o.workers},
              {"duration_ms", o.duration.count()},
              {"payload_bytes", o.payload_bytes},
              {"warmup_requests", o.warmup_requests},
              {"peer_warmup_ms", o.peer_warmup.count()},
              {"spawn_repeats", o.spawn_repeats},
              {"pool_ready_workers", o.pool_ready_workers},
              {"bare_parse_replies", o.bare_parse_replies},
              {"pinned_round_trip", o.pinned_round_trip},
              {"pin_cpu", o.pin_cpu},
              {"python_peers", o.python_peers},
              {"min_echo", o.min_echo},
              {"sched_batch", o.sched_batch},
              {"out_dir", o.out_dir},
              {"python", o.python},
              {"quick", o.quick}};
}

} // namespace

peer_bench_options peer_bench_options::quick_defaults() {
  peer_bench_options o;
  o.quick = true;
  o.duration = std::chrono::milliseconds(250);
  o.warmup_requests = 100;
  o.peer_warmup = std::chrono::milliseconds(100);
  o.spawn_repeats = 2;
  return o;
}

const bare_result* peer_bench_result::bare_for(int workers) const {
  for (auto& b : bare)
    if (b.workers == workers && b.requests > 0)
      return &b;
  return nullptr;
}

const bare_result* peer_bench_result::min_echo_for(int workers) const {
  for (auto& b : min_echo)
    if (b.workers == workers && b.requests > 0)
      return &b;
  return nullptr;
}

const peer_result* peer_bench_result::peer_for(peer_kind kind, int workers) const {
  for (auto& p : kind == peer_kind::mp_pool ? mp_pool : executor)
    if (p.workers == workers && p.ok)
      return &p;
  return nullptr;
}

peer_bench_result measure_peers(const peer_bench_options& opts, progress_line* progress) {
  peer_bench_result r;
  r.options = opts;
  const auto t0 = clock_type::now();
  r.machine = machine_info(opts.python);

  const int steps =
    static_cast<int>(opts.workers.size()) * ((opts.python_peers ? 3 : 1) + (opts.min_echo ? 1 : 0)) + 2 +
    (opts.pinned_round_trip ? 1 : 0);
  int step = 0;
  auto announce = [&](const std::string& what) {
    if (progress) {
      double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
      progress->update("bench peers [" + std::to_string(++step) + "/" + std::to_string(steps) + ", " +
                       format_fixed(elapsed, 0) + " s] " + what + " ...");
    }
  };
  auto done = [&](const std::string& line) {
    if (progress)
      progress->finish("  " + line);
  };

  worker_launch launch;
  launch.python = opts.python;
  launch.batch_scheduling = opts.sched_batch;
  peer_options popts;
  popts.python = opts.python;
  popts.warmup = opts.peer_warmup;

  // The bare loop on W workers: dspex_worker, or a script of bench/peers.
  auto run_bare = [&](int w, const std::string& script) {
    const std::string what =
      "bare loop W=" + std::to_string(w) + (script.empty() ? "" : ", minimal Python echo");
    announce(what);
    try {
      bare_options bo;
      bo.workers = w;
      bo.duration = opts.duration;
      bo.payload_bytes = opts.payload_bytes;
      bo.warmup_requests = opts.warmup_requests;
      bo.parse_replies = opts.bare_parse_replies;
      bo.launch = launch;
      if (!script.empty()) {
        bo.launch.script = locate_peer_file(script);
        if (bo.launch.script.empty())
          throw std::runtime_error(script + " not found (set DSPEX_BENCH_PEERS_DIR)");
      }
      auto& runs = script.empty() ? r.bare : r.min_echo;
      runs.push_back(run_bare_loop(bo));
      auto& b = runs.back();
      const std::string line = describe(b) + (script.empty() ? "" : " (minimal Python echo)");
      if (b.errors > 0 || b.requests == 0)
        r.failures.push_back(line);
      done(line);
    } catch (const std::exception& e) {
      r.failures.push_back(what + ": " + e.what());
      done(r.failures.back());
    }
  };

  // Interleaved by W, so drift of the machine (thermal, other load) hits
  // every system alike.
  for (int w : opts.workers) {
    run_bare(w, {});
    if (opts.min_echo)
      run_bare(w, "min_echo.py");
    if (!opts.python_peers)
      continue;
    for (auto kind : {peer_kind::mp_pool, peer_kind::process_pool_executor}) {
      announce(std::string(display_name(kind)) + " W=" + std::to_string(w));
      auto p = run_python_peer(kind, w, opts.duration, opts.payload_bytes, popts);
      if (!p.ok)
        r.failures.push_back(describe(p));
      done(describe(p));
      (kind == peer_kind::mp_pool ? r.mp_pool : r.executor).push_back(std::move(p));
    }
  }

  if (opts.pinned_round_trip) {
    announce("bare loop W=1 pinned to CPU " + std::to_string(opts.pin_cpu));
    try {
      bare_options bo;
      bo.workers = 1;
      bo.duration = opts.duration;
      bo.payload_bytes = opts.payload_bytes;
      bo.warmup_requests = opts.warmup_requests;
      bo.parse_replies = opts.bare_parse_replies;
      bo.cpus = {opts.pin_cpu};
      bo.launch = launch;
      r.pinned = run_bare_loop(bo);
      if (r.pinned.errors > 0 || r.pinned.requests == 0)
        r.failures.push_back("pinned " + describe(r.pinned));
      done("pinned to CPU " + std::to_string(opts.pin_cpu) + ": " + describe(r.pinned));
    } catch (const std::exception& e) {
      r.failures.push_back("bare loop W=1 pinned: " + std::string(e.what()));
      done(r.failures.back());
    }
  }

  announce("spawn to first reply, 1 worker");
  try {
    // The bare loops just ran the same worker: caches are warm already.
    const bool warm = r.bare.empty();
    r.spawn_one = measure_spawn(1, opts.spawn_repeats, launch, warm);
    done(describe(r.spawn_one));
  } catch (const std::exception& e) {
    r.failures.push_back(std::string("spawn to first reply: ") + e.what());
    done(r.failures.back());
  }
  if (opts.pool_ready_workers > 0) {
    announce("spawn to first reply, " + std::to_string(opts.pool_ready_workers) + " workers");
    try {
      r.spawn_many = measure_spawn(opts.pool_ready_workers, opts.spawn_repeats, launch, false);
      done(describe(r.spawn_many));
    } catch (const std::exception& e) {
      r.failures.push_back(std::string("spawn of ") + std::to_string(opts.pool_ready_workers) +
                           " workers: " + e.what());
      done(r.failures.back());
    }
  } else {
    ++step;
  }
  r.wall_seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  return r;
}

void add_peer_rows(report_table& t, const peer_bench_result& r) {
  // -- round trip --
  t.section("round trip: 1 client, 1 worker, " + std::to_string(r.options.payload_bytes) + " B echo");
  if (auto* b = r.bare_for(1)) {
    t.add({"round trip p50, bare loop", format_micros(b->summary.p50_us), "", "",
           "dspex p50 " + targets::at_most(targets::round_trip_p50_vs_bare, "this"),
           verdict::floor, ""});
    t.add({"round trip p99, bare loop", format_micros(b->summary.p99_us), "", "", "", verdict::info, ""});
    t.add({"round trip max, bare loop", format_micros(b->summary.max_us), "", "", "", verdict::info, ""});
    if (r.pinned.requests > 0) {
      double q = ratio(r.pinned.summary.p50_us, b->summary.p50_us);
      table_row row{"round trip p50, bare loop on CPU " + std::to_string(r.options.pin_cpu) + " only",
                    format_micros(r.pinned.summary.p50_us), "unpinned " + format_micros(b->summary.p50_us),
                    format_ratio(q), "dspex under taskset " + targets::at_most(targets::pinned_p50_vs_bare, "this"),
                    verdict::floor, ""};
      if (std::isfinite(q) && (q < 0.67 || q > 1.5))
        row.note = "pinning changes the round trip " + format_ratio(1 / q) +
                   ": cross-CPU wake-ups dominate here, so compare dspex with the floor of the same "
                   "affinity (run both unpinned, or both under taskset -c " +
                   std::to_string(r.options.pin_cpu) + ")";
      t.add(row);
    }
  } else {
    t.add({"round trip p50, bare loop", "-", "", "", "dspex p50 " + targets::at_most(targets::round_trip_p50_vs_bare, "this"),
           verdict::skipped,
           "no W=1 bare loop run (add 1 to --workers)"});
  }

  // -- throughput --
  t.section("throughput: W workers (bare: W threads; Python pools: 4W in flight)");
  bool headroom_note = false;
  for (int w : r.options.workers) {
    const std::string ws = "W=" + std::to_string(w);
    auto* b = r.bare_for(w);
    auto* mp = r.peer_for(peer_kind::mp_pool, w);
    auto* ex = r.peer_for(peer_kind::process_pool_executor, w);
    if (b) {
      table_row row{"req/s " + ws + ", bare loop", format_rate(b->requests_per_s), "", "",
                    "dspex " + targets::at_least(targets::throughput_vs_bare, "this"), verdict::floor, ""};
      if (mp) {
        double q = ratio(b->requests_per_s, mp->requests_per_s);
        row.peer = "mp.Pool " + format_rate(mp->requests_per_s);
        row.ratio = format_ratio(q);
        // dspex must reach 2x mp.Pool but cannot beat the bare loop by
        // much: where bare < 2x mp, that target is out of reach here.
        if (std::isfinite(q) && q < targets::throughput_vs_mp_pool && !headroom_note) {
          row.note = "bare loop is below " + format_ratio(targets::throughput_vs_mp_pool)
                     + " mp.Pool: that target is above the floor on this machine";
          headroom_note = true;
        }
      }
      t.add(row);
    } else {
      t.add({"req/s " + ws + ", bare loop", "-", "", "", "dspex " + targets::at_least(targets::throughput_vs_bare, "this"),
             verdict::skipped,
             "bare loop " + ws + " did not run or had no successful request"});
    }
    if (auto* me = r.min_echo_for(w))
      t.add({"req/s " + ws + ", bare loop, minimal Python echo", format_rate(me->requests_per_s),
             b ? "bare " + format_rate(b->requests_per_s) : "",
             b ? format_ratio(ratio(me->requests_per_s, b->requests_per_s)) : "",
             "dspex " + targets::at_least(targets::throughput_vs_min_echo, "this") + " (W=4, 8)", verdict::floor,
             ""});
    if (r.options.python_peers) {
      if (mp)
        t.add({"req/s " + ws + ", mp.Pool.apply_async", format_rate(mp->requests_per_s), "", "",
               "dspex " + targets::at_least(targets::throughput_vs_mp_pool, "this"), verdict::floor, ""});
      else
        t.add({"req/s " + ws + ", mp.Pool.apply_async", "-", "", "", "dspex " + targets::at_least(targets::throughput_vs_mp_pool, "this"), verdict::skipped,
               "mp.Pool peer failed (see failures in peers.json)"});
      if (ex) {
        table_row row{"req/s " + ws + ", ProcessPoolExecutor", format_rate(ex->requests_per_s), "", "", "",
                      verdict::info, ""};
        if (mp) {
          row.peer = "mp.Pool " + format_rate(mp->requests_per_s);
          row.ratio = format_ratio(ratio(ex->requests_per_s, mp->requests_per_s));
        }
        t.add(row);
      }
    }
  }

  // -- start-up --
  t.section("start-up");
  if (r.spawn_one.summary.count > 0) {
    t.add({"spawn to first reply, 1 worker (median of " + std::to_string(r.spawn_one.summary.count) + ")",
           format_micros(r.spawn_one.summary.p50_us), "", "",
           "pool of 8 ready <= 1.5x, replacement <= 1.2x", verdict::floor, ""});
  }
  if (r.spawn_many.summary.count > 0) {
    double q = ratio(r.spawn_many.summary.p50_us, r.spawn_one.summary.p50_us);
    table_row row{std::to_string(r.spawn_many.workers) + " workers to first reply, bare (median)",
                  format_micros(r.spawn_many.summary.p50_us),
                  r.spawn_one.summary.count ? "1 worker " + format_micros(r.spawn_one.summary.p50_us) : "",
                  format_ratio(q), "", verdict::info, ""};
    unsigned cores = r.machine.value("cores", 0u);
    if (std::isfinite(q) && q > 1.5)
      row.note = "even bare, " + std::to_string(r.spawn_many.workers) + " workers need " + format_ratio(q) +
                 " of one on " + std::to_string(cores) +
                 " cores: the 'pool of 8 within 1.5x' target assumes a core per worker";
    t.add(row);
  }
}

json to_json(const peer_bench_result& r) {
  json bare = json::array(), min_echo = json::array();
  for (auto& b : r.bare)
    bare.push_back(to_json(b));
  for (auto& b : r.min_echo)
    min_echo.push_back(to_json(b));
  json mp = json::array(), ex = json::array();
  for (auto& p : r.mp_pool)
    mp.push_back(to_json(p));
  for (auto& p : r.executor)
    ex.push_back(to_json(p));
  report_table t;
  add_peer_rows(t, r);
  return json{{"machine", r.machine},
              {"options", options_json(r.options)},
              {"bare_loop", bare},
              {"bare_loop_min_echo", min_echo},
              {"bare_loop_pinned", r.pinned.workers > 0 ? to_json(r.pinned) : json(nullptr)},
              {"mp_pool", mp},
              {"process_pool_executor", ex},
              {"spawn_to_first_reply", to_json(r.spawn_one)},
              {"spawn_many_to_first_reply", to_json(r.spawn_many)},
              {"failures", r.failures},
              {"plots", to_json(r.plots)},
              {"table", t.to_json()},
              {"wall_seconds", r.wall_seconds}};
}

throughput_series bare_series(std::string label, const std::vector<bare_result>& runs) {
  throughput_series s{std::move(label), {}};
  for (auto& b : runs)
    if (b.requests > 0)
      s.points.push_back({b.workers, b.requests_per_s});
  return s;
}

std::vector<plot_outcome> plot_peers(const peer_bench_result& r, const std::string& out_dir) {
  std::vector<plot_outcome> out;
  std::vector<throughput_series> tput;
  tput.push_back(bare_series("bare C++ loop (W threads)", r.bare));
  if (auto me = bare_series("bare C++ loop, minimal Python echo (W threads)", r.min_echo); !me.points.empty())
    tput.push_back(me);
  for (auto kind : {peer_kind::mp_pool, peer_kind::process_pool_executor}) {
    throughput_series s{std::string("Python ") + display_name(kind) + " (4W in flight)", {}};
    for (auto& p : kind == peer_kind::mp_pool ? r.mp_pool : r.executor)
      if (p.ok)
        s.points.push_back({p.workers, p.requests_per_s});
    if (!s.points.empty())
      tput.push_back(s);
  }
  out.push_back(plot_throughput(out_dir, "peers_throughput", tput,
                                "Echo of " + std::to_string(r.options.payload_bytes) +
                                  " B: requests/s against workers"));

  std::vector<latency_series> lat;
  for (auto& b : r.bare)
    if (b.requests > 0)
      lat.push_back({"bare loop W=" + std::to_string(b.workers) + " (1 request per worker)",
                     b.latency.quantiles_us(1000)});
  if (r.pinned.requests > 0)
    lat.push_back({"bare loop W=1 on CPU " + std::to_string(r.options.pin_cpu) + " only",
                   r.pinned.latency.quantiles_us(1000)});
  for (auto kind : {peer_kind::mp_pool, peer_kind::process_pool_executor})
    if (auto* p = r.peer_for(kind, 1))
      lat.push_back({std::string(display_name(kind)) + " W=1 (4 in flight: includes queueing)", p->cdf_us});
  out.push_back(plot_latency_cdf(out_dir, "peers_latency_cdf", lat,
                                 "Round-trip latency, echo of " + std::to_string(r.options.payload_bytes) +
                                   " B (CDF)"));
  return out;
}

// -- the command -------------------------------------------------------------------

int run_peer_bench(const peer_bench_options& o) {
  progress_line progress;
  std::cerr << "dspex-bench peers: W=" << workers_list(o.workers) << ", "
            << o.duration.count() << " ms per run, " << o.payload_bytes << " B payload"
            << (o.quick ? ", quick" : "") << "\n";
  const double load = load_average_1m();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  if (load > 0.5 * cores)
    std::cerr << "warning: load average " << format_fixed(load, 2) << " on " << cores
              << " cores before the bench: other processes will distort the figures\n";
  peer_bench_result r = measure_peers(o, &progress);
  progress.clear();
  r.machine["load_average_1m_after"] = load_average_1m();

  report_table table("dspex-bench peers: floors and peers (" + r.machine.value("cpu", std::string("?")) + ", " +
                     std::to_string(r.machine.value("cores", 0u)) + " cores, python " +
                     r.machine.value("python", std::string("?")) + ")");
  add_peer_rows(table, r);
  std::cout << '\n';
  table.print(std::cout);

  if (o.plots)
    r.plots = plot_peers(r, o.out_dir);
  return write_report("dspex-bench peers", o.out_dir + "/peers.json", to_json(r), r.plots, r.wall_seconds,
                      r.failures)
           ? 0
           : 1;
}

} // namespace dspex::bench
