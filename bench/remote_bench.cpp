#include <dspex/bench/remote_bench.hpp>

#include <dspex/actors/node/node.hpp>
#include <dspex/bench/dspex_bench.hpp>
#include <dspex/bench/report.hpp>

#include <caf/all.hpp>

#include <atomic>
#include <cstdio>
#include <functional>
#include <thread>

namespace dspex::bench {

namespace {

using clock_type = std::chrono::steady_clock;

struct side {
  latency_recorder rt;
  double per_s = 0;
  bool ok = true;
};

side measure(const std::function<caf::expected<json>()>& call, const remote_bench_options& o) {
  side s;
  for (int i = 0; i < 50; ++i)  // warm-up
    s.ok = s.ok && static_cast<bool>(call());
  s.rt.reserve(static_cast<std::size_t>(o.round_trips));
  for (int i = 0; i < o.round_trips && s.ok; ++i) {
    auto t = clock_type::now();
    s.ok = static_cast<bool>(call());
    s.rt.add(clock_type::now() - t);
  }
  std::atomic<int> left{o.requests};
  std::atomic<bool> failed{false};
  auto t0 = clock_type::now();
  std::vector<std::thread> ts;
  for (std::size_t c = 0; c < o.clients; ++c)
    ts.emplace_back([&] {
      while (left.fetch_sub(1) > 0)
        if (!call())
          failed = true;
    });
  for (auto& t : ts)
    t.join();
  s.per_s = o.requests / std::chrono::duration<double>(clock_type::now() - t0).count();
  s.ok = s.ok && !failed;
  return s;
}

} // namespace

int run_remote_bench(const remote_bench_options& o) {
  auto tree = default_config();
  tree["root"]["children"][1]["size"] = o.workers;
  tree["listen"] = "127.0.0.1:0";
  auto remote_cfg = parse_config(tree);
  if (!remote_cfg) {
    std::fprintf(stderr, "dspex-bench remote: %s\n", describe(remote_cfg.error()).c_str());
    return 1;
  }
  caf::actor_system_config rc;
  recommended_settings(rc);
  if (auto err = network_settings(rc, *remote_cfg)) {
    std::fprintf(stderr, "dspex-bench remote: %s\n", describe(err).c_str());
    return 1;
  }
  caf::actor_system remote_sys{rc};
  auto remote = node::start(remote_sys, *remote_cfg, bench_node_options());
  if (!remote) {
    std::fprintf(stderr, "dspex-bench remote: the remote node did not start: %s\n",
                 describe(remote.error()).c_str());
    return 1;
  }

  // The local node: only a remote_pool (no Python of its own).
  json local_tree = {{"mode", "pool"},
                     {"root",
                      {{"strategy", "one_for_one"},
                       {"children", json::array({{{"id", "far"},
                                                  {"type", "remote_pool"},
                                                  {"host", "127.0.0.1"},
                                                  {"port", (*remote)->listen_port()}}})}}}};
  auto local_cfg = parse_config(local_tree);
  caf::actor_system_config lc;
  recommended_settings(lc);
  if (!local_cfg || network_settings(lc, *local_cfg)) {
    std::fprintf(stderr, "dspex-bench remote: bad local config\n");
    return 1;
  }
  caf::actor_system local_sys{lc};
  auto local = node::start(local_sys, *local_cfg, bench_node_options());
  if (!local) {
    std::fprintf(stderr, "dspex-bench remote: the local node did not start: %s\n",
                 describe(local.error()).c_str());
    return 1;
  }
  auto deadline = clock_type::now() + std::chrono::seconds(30);
  while (!(*local)->execute_on("far", "ping") && clock_type::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));

  auto direct = measure([&] { return (*remote)->execute("ping"); }, o);
  auto through = measure([&] { return (*local)->execute_on("far", "ping"); }, o);
  (*local)->stop();
  (*remote)->stop();
  if (!direct.ok || !through.ok) {
    std::fprintf(stderr, "dspex-bench remote: a request failed\n");
    return 1;
  }
  auto d = direct.rt.summary(), t = through.rt.summary();
  std::printf("remote_pool over loopback BASP against the same pool called locally "
              "(%zu workers, ping)\n\n", o.workers);
  std::printf("| figure | local | through remote_pool | ratio |\n| --- | --- | --- | --- |\n");
  std::printf("| round trip p50, 1 client | %.0f us | %.0f us | %.2fx |\n", d.p50_us, t.p50_us,
              t.p50_us / d.p50_us);
  std::printf("| round trip p99, 1 client | %.0f us | %.0f us | %.2fx |\n", d.p99_us, t.p99_us,
              t.p99_us / d.p99_us);
  std::printf("| throughput, %zu clients | %.0f req/s | %.0f req/s | %.2fx |\n", o.clients,
              direct.per_s, through.per_s, through.per_s / direct.per_s);
  return 0;
}

} // namespace dspex::bench
