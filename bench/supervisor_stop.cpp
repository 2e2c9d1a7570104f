#include <dspex/bench/supervisor_stop.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include <caf/all.hpp>

#include <dspex/supervision/supervisor.hpp>

namespace dspex::bench {

namespace {

using namespace dspex::supervision;
using bench_clock = std::chrono::steady_clock;

caf::behavior trivial_child(caf::event_based_actor*) {
  return {[](ready_atom) {}};
}

double ms_since(bench_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(bench_clock::now() - t0).count();
}

double median(std::vector<double> xs) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  return xs[xs.size() / 2];
}

start_fn spawn_trivial() {
  return [](caf::local_actor* self) -> caf::expected<caf::actor> {
    return self->spawn(trivial_child);
  };
}

/// One run: start a supervisor with n children, stop it. Returns
/// {start ms, stop ms}, or negative values on failure.
std::pair<double, double> run_once(caf::actor_system& sys, bool dynamic,
                                   std::size_t n) {
  caf::scoped_actor self{sys};
  auto t0 = bench_clock::now();
  caf::actor sup;
  if (dynamic) {
    auto flags = supervisor_flags{}.with_strategy(strategy::simple_one_for_one);
    auto started = start_supervisor(sys, flags, {child_spec{"w", spawn_trivial()}});
    if (!started)
      return {-1, -1};
    sup = *started;
    // Pipelined: all requests out, then all answers in.
    for (std::size_t i = 0; i < n; ++i)
      self->send(sup, start_child_atom::value, caf::message{});
    std::size_t answers = 0;
    bool failed = false;
    self->receive_for(answers, n)([](caf::actor&) {},
                                  [&](caf::error&) { failed = true; });
    if (failed)
      return {-1, -1};
  } else {
    std::vector<child_spec> specs;
    specs.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
      specs.push_back(child_spec{"w" + std::to_string(i), spawn_trivial()});
    auto started = start_supervisor(sys, supervisor_flags{}, std::move(specs));
    if (!started)
      return {-1, -1};
    sup = *started;
  }
  auto start_ms = ms_since(t0);
  auto t1 = bench_clock::now();
  stop_supervisor(self, sup);
  return {start_ms, ms_since(t1)};
}

} // namespace

std::vector<supervisor_stop_sample>
measure_supervisor_stop(const std::vector<std::size_t>& sizes, int repeats) {
  std::vector<supervisor_stop_sample> out;
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  for (bool dynamic : {true, false}) {
    for (auto n : sizes) {
      std::vector<double> starts;
      std::vector<double> stops;
      for (int r = 0; r < std::max(1, repeats); ++r) {
        auto [start_ms, stop_ms] = run_once(sys, dynamic, n);
        if (start_ms < 0)
          continue;
        starts.push_back(start_ms);
        stops.push_back(stop_ms);
      }
      out.push_back(supervisor_stop_sample{
        dynamic ? "simple_one_for_one" : "one_for_one", n, median(starts),
        median(stops)});
    }
  }
  return out;
}

int run_supervisor_stop_bench(const supervisor_stop_options& o) {
  auto samples = measure_supervisor_stop(o.sizes, o.repeats);
  std::printf("%-20s %9s %11s %10s %12s %10s\n", "strategy", "children",
              "start ms", "stop ms", "stop us/child", "stop x");
  const supervisor_stop_sample* base = nullptr;
  for (auto& s : samples) {
    if (!base || std::string{base->strategy} != s.strategy)
      base = &s;
    double growth = base->stop_ms > 0 ? s.stop_ms / base->stop_ms : 0;
    double per_child = s.children ? s.stop_ms * 1000.0 / s.children : 0;
    std::printf("%-20s %9zu %11.2f %10.2f %12.2f %10.2f\n", s.strategy,
                s.children, s.start_ms, s.stop_ms, per_child, growth);
  }
  return 0;
}

} // namespace dspex::bench
