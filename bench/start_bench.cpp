#include <dspex/bench/start_bench.hpp>

#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/pool/pool.hpp>
#include <dspex/actors/pool/worker.hpp>
#include <dspex/bridge/host_run.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <dirent.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace dspex::bench {

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

long pss_kb(pid_t pid) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/smaps_rollup"));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Pss:", 0) == 0)
      return std::strtol(line.c_str() + 4, nullptr, 10);
  return -1;
}

// Workers of this run: processes naming --worker-id (a forked worker shows
// its own command line, fork_server.py set_title).
std::vector<pid_t> our_workers() {
  std::vector<pid_t> out;
  const auto run = std::string("--run-id") + '\0' + bridge::host_run_id() + '\0';
  const auto wid = std::string("--worker-id") + '\0';
  DIR* d = ::opendir("/proc");
  if (!d)
    return out;
  while (auto* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    auto cmd = slurp("/proc/" + name + "/cmdline");
    if (cmd.find(run) != std::string::npos && cmd.find(wid) != std::string::npos)
      out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  ::closedir(d);
  return out;
}

// A python_path of the bench's own: the package (a symlink) and test modules.
std::string module_dir(const std::map<std::string, std::string>& modules) {
  auto dir = "/tmp/dspex-start-bench-" + std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0755);
  auto link = dir + "/dspex_worker";
  ::unlink(link.c_str());
  if (::symlink((locate_python_dir() + "/dspex_worker").c_str(), link.c_str()) != 0)
    throw std::runtime_error("cannot link the worker package into " + dir);
  for (auto& [name, text] : modules)
    std::ofstream(dir + "/" + name + ".py") << text;
  return dir;
}

struct harness {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<bridge::io_loop> loop = std::make_shared<bridge::io_loop>();
  caf::scoped_actor self{sys};
  std::mutex mx;
  caf::actor current;
  caf::actor root;

  caf::actor pool() {
    std::lock_guard<std::mutex> g(mx);
    return current;
  }

  // Starts a pool supervisor and waits for the pool's ready: the time, ms.
  double start(pool_config c) {
    auto t0 = clock_type::now();
    auto spec = pool_supervisor_spec("pool_sup", std::move(c), loop, [this](caf::actor p) {
      std::lock_guard<std::mutex> g(mx);
      current = std::move(p);
    });
    supervision::supervisor_flags flags;
    auto r = supervision::start_supervisor(sys, flags, {spec}, {});
    if (!r)
      throw std::runtime_error("pool did not start: " + caf::to_string(r.error()));
    root = *r;
    caf::error err;
    self->request(pool(), caf::infinite, ready_atom::value).receive([] {}, [&](caf::error& e) { err = e; });
    if (err)
      throw std::runtime_error("pool not ready: " + caf::to_string(err));
    return ms_since(t0);
  }

  void stop() {
    if (!root)
      return;
    self->monitor(root);
    self->send_exit(root, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {}, caf::after(60s) >> [] {});
    root = nullptr;
    // Wait until no worker of ours is left, so figures do not overlap.
    for (int i = 0; i < 2000 && !our_workers().empty(); ++i)
      std::this_thread::sleep_for(5ms);
  }

  pid_t ping() {
    pid_t pid = -1;
    auto req = make_command("ping");
    self->request(pool(), 60s, exec_atom::value, req)
      .receive([&](json& j) { pid = j.value("pid", -1); }, [](caf::error&) {});
    return pid;
  }

  // Pool of 1: SIGKILL its worker, time until the replacement answers.
  std::vector<double> kill_recovery(int repeats) {
    std::vector<double> out;
    for (int i = 0; i < repeats; ++i) {
      auto before = ping();
      if (before <= 0)
        break;
      auto t0 = clock_type::now();
      ::kill(before, SIGKILL);
      pid_t after = -1;
      while ((after = ping()) <= 0 || after == before)
        if (ms_since(t0) > 60000)
          throw std::runtime_error("no replacement answered within 60 s");
      out.push_back(ms_since(t0));
    }
    return out;
  }

  // A rolling reload of the running pool, `surge` workers at a time: ms.
  double reload(std::size_t surge) {
    auto t0 = clock_type::now();
    caf::error err;
    self->request(pool(), caf::infinite, reload_atom::value, surge)
      .receive([](json&) {}, [&](caf::error& e) { err = e; });
    if (err)
      throw std::runtime_error("reload failed: " + caf::to_string(err));
    return ms_since(t0);
  }

  // One worker on its own, spawned: start to its init ping's reply.
  double spawn_one(worker_config w) {
    w.start = "spawn";
    auto t0 = clock_type::now();
    auto a = spawn_worker(sys, loop, w);
    caf::error err;
    self->request(a, caf::infinite, ready_atom::value).receive([] {}, [&](caf::error& e) { err = e; });
    auto ms = ms_since(t0);
    self->monitor(a);
    self->send_exit(a, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {}, caf::after(30s) >> [] {});
    if (err)
      throw std::runtime_error("worker did not start: " + caf::to_string(err));
    return ms;
  }
};

pool_config base_pool(const start_bench_options& o, std::size_t size, const std::string& start) {
  pool_config c;
  c.size = size;
  c.checkout_timeout = 120s;
  c.worker_intensity = 100000;
  c.worker.python = o.python;
  c.worker.start = start;
  c.worker.init_timeout = 300s;
  return c;
}

std::string fmt(double v, const char* unit) {
  char b[64];
  std::snprintf(b, sizeof b, v >= 100 ? "%.0f %s" : "%.1f %s", v, unit);
  return b;
}

std::string fmt_ratio(double a, double b) {
  char buf[32];
  if (a <= 0 || b <= 0)
    return "-";
  std::snprintf(buf, sizeof buf, "%.2fx", a / b);
  return buf;
}

struct row {
  std::string what, fork, spawn, ratio, note;
};

} // namespace

int run_start_bench(const start_bench_options& o) {
  harness h;
  std::vector<row> rows;
  auto say = [](const std::string& s) { std::cerr << "dspex-bench start: " << s << "\n"; };
  auto pool_ready = [&](pool_config c, int repeats) {
    std::vector<double> v;
    for (int i = 0; i < repeats; ++i) {
      v.push_back(h.start(c));
      h.stop();
    }
    return median(v);
  };
  try {
    worker_config one;
    one.python = o.python;
    say("one worker's spawn-to-first-reply");
    std::vector<double> ones;
    for (int i = 0; i < 5; ++i)
      ones.push_back(h.spawn_one(one));
    auto spawn1 = median(ones);
    rows.push_back({"one worker spawn-to-first-reply (unit)", "", fmt(spawn1, "ms"), "", "median of 5"});

    say("pool of " + std::to_string(o.pool) + " ready");
    auto fork_ready = pool_ready(base_pool(o, o.pool, "fork"), o.repeats);
    auto spawn_ready = pool_ready(base_pool(o, o.pool, "spawn"), o.repeats);
    rows.push_back({"pool of " + std::to_string(o.pool) + " ready", fmt(fork_ready, "ms"), fmt(spawn_ready, "ms"),
                    fmt_ratio(fork_ready, spawn_ready),
                    "fork " + fmt_ratio(fork_ready, spawn1) + " / spawn " + fmt_ratio(spawn_ready, spawn1)
                      + " of one spawn"});

    // Rolling reload (issue 27): every worker replaced by one with freshly
    // imported code while the pool serves, against starting them all anew.
    for (std::size_t surge : {std::size_t{1}, o.pool}) {
      say("rolling reload of " + std::to_string(o.pool) + ", surge " + std::to_string(surge));
      double took[2];
      for (int m = 0; m < 2; ++m) {
        h.start(base_pool(o, o.pool, m == 0 ? "fork" : "spawn"));
        std::vector<double> v;
        for (int i = 0; i < o.repeats; ++i)
          v.push_back(h.reload(surge));
        took[m] = median(v);
        h.stop();
      }
      rows.push_back({"rolling reload of " + std::to_string(o.pool) + ", surge " + std::to_string(surge),
                      fmt(took[0], "ms"), fmt(took[1], "ms"), fmt_ratio(took[0], took[1]),
                      "fork " + fmt_ratio(took[0], spawn_ready) + " of " + std::to_string(o.pool)
                        + " spawns at once, " + fmt_ratio(took[0], spawn1 * o.pool) + " of "
                        + std::to_string(o.pool) + " one by one"});
    }

    say("SIGKILLed worker answering again");
    double kill_p50[2];
    const char* methods[2] = {"fork", "spawn"};
    for (int m = 0; m < 2; ++m) {
      h.start(base_pool(o, 1, methods[m]));
      kill_p50[m] = median(h.kill_recovery(o.kill_repeats));
      h.stop();
    }
    rows.push_back({"SIGKILLed worker answering again, p50", fmt(kill_p50[0], "ms"), fmt(kill_p50[1], "ms"),
                    fmt_ratio(kill_p50[0], kill_p50[1]),
                    "fork " + fmt_ratio(kill_p50[0], spawn1) + " of one spawn"});

    if (o.slow_preload) {
      say("a preload that takes 1 s to import");
      auto dir = module_dir({{"dspex_bench_slow", "import time\ntime.sleep(1.0)\n"}});
      auto slow = [&](std::size_t n, const std::string& m) {
        auto c = base_pool(o, n, m);
        c.worker.python_path = dir;
        c.worker.preload = {"dspex_bench_slow"};
        return c;
      };
      auto w = slow(1, "spawn").worker;
      auto spawn_slow = h.spawn_one(w);
      h.start(slow(1, "fork"));
      auto fork_repl = median(h.kill_recovery(o.kill_repeats));
      h.stop();
      h.start(slow(1, "spawn"));
      auto spawn_repl = median(h.kill_recovery(std::min(o.kill_repeats, 3)));
      h.stop();
      auto f8 = pool_ready(slow(o.pool, "fork"), 1);
      auto s8 = pool_ready(slow(o.pool, "spawn"), 1);
      rows.push_back({"1 s preload: one worker's start", "", fmt(spawn_slow, "ms"), "", "spawned"});
      rows.push_back({"1 s preload: SIGKILLed worker answering again, p50", fmt(fork_repl, "ms"),
                      fmt(spawn_repl, "ms"), fmt_ratio(fork_repl, spawn_repl), ""});
      rows.push_back({"1 s preload: pool of " + std::to_string(o.pool) + " ready", fmt(f8, "ms"), fmt(s8, "ms"),
                      fmt_ratio(f8, s8), "fork includes the server's 1 s import"});
    }

    if (o.pss_workers > 0) {
      say("PSS per worker with a 50 MB preload");
      auto dir = module_dir({{"dspex_bench_big", "import os\nDATA = os.urandom(50 * 1024 * 1024)\n"}});
      double pss[2] = {0, 0};
      for (int m = 0; m < 2; ++m) {
        auto c = base_pool(o, o.pss_workers, methods[m]);
        c.worker.python_path = dir;
        c.worker.preload = {"dspex_bench_big"};
        h.start(c);
        long sum = 0, n = 0;
        for (auto pid : our_workers())
          if (auto k = pss_kb(pid); k > 0) {
            sum += k;
            ++n;
          }
        pss[m] = n ? static_cast<double>(sum) / n / 1024.0 : 0;
        h.stop();
      }
      rows.push_back({"PSS per worker, 50 MB preload (" + std::to_string(o.pss_workers) + " workers)",
                      fmt(pss[0], "MB"), fmt(pss[1], "MB"), fmt_ratio(pss[0], pss[1]),
                      "the fork server's own PSS not counted"});
    }

    if (o.big_pool > 0) {
      say("pool of " + std::to_string(o.big_pool) + " ready");
      auto f = pool_ready(base_pool(o, o.big_pool, "fork"), 1);
      auto s = pool_ready(base_pool(o, o.big_pool, "spawn"), 1);
      rows.push_back({"pool of " + std::to_string(o.big_pool) + " ready", fmt(f, "ms"), fmt(s, "ms"),
                      fmt_ratio(f, s), ""});
    }
  } catch (const std::exception& e) {
    h.stop();
    std::cerr << "dspex-bench start: " << e.what() << "\n";
    return 1;
  }

  std::printf("%-52s %12s %12s %10s  %s\n", "figure", "fork", "spawn", "fork/spawn", "note");
  for (auto& r : rows)
    std::printf("%-52s %12s %12s %10s  %s\n", r.what.c_str(), r.fork.c_str(), r.spawn.c_str(), r.ratio.c_str(),
                r.note.c_str());
  return 0;
}

} // namespace dspex::bench
