// Request latency as a pool keeps it: fixed cumulative buckets, a sum and a
// count, which is exactly what a Prometheus histogram exposes. Fixed bounds
// keep it a few hundred bytes however many requests pass, and make one
// pool's figures comparable with another's.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <cstdint>

namespace dspex {

struct latency_histogram {
  /// Upper bounds in seconds; the implicit last bucket is +Inf (= count).
  static constexpr std::array<double, 16> bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                                 5,      10,    30,     60};
  /// cumulative[i]: observations <= bounds[i].
  std::array<std::uint64_t, bounds.size()> cumulative{};
  std::uint64_t count = 0;
  double sum_s = 0;

  void observe(std::chrono::nanoseconds d) {
    double s = std::chrono::duration<double>(d).count();
    for (std::size_t i = 0; i < bounds.size(); ++i)
      if (s <= bounds[i])
        ++cumulative[i];
    ++count;
    sum_s += s;
  }

  /// {"le": [bounds], "cumulative": [counts], "count": n, "sum_s": x}
  nlohmann::json to_json() const {
    return {{"le", bounds}, {"cumulative", cumulative}, {"count", count}, {"sum_s", sum_s}};
  }
};

} // namespace dspex
