#include <dspex/actors/pool/recycling.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unistd.h>

namespace dspex {

std::chrono::milliseconds recycle_config::tick_interval() const {
  using std::chrono::milliseconds;
  milliseconds t{1000};
  if (max_age.count() > 0)
    t = std::min(t, std::max(milliseconds(10), max_age / 4));
  if (max_rss_mb > 0)
    t = std::min(t, milliseconds(200));
  return t;
}

const char* replaced_key(recycle_cause c) noexcept {
  switch (c) {
    case recycle_cause::requests: return "recycled_requests";
    case recycle_cause::rss: return "recycled_rss";
    case recycle_cause::age: return "recycled_age";
    case recycle_cause::none: break;
  }
  return "none";
}

recycle_cause recycle_budget::due(std::uint64_t served, recycle_clock::time_point now) const {
  if (max_requests > 0 && served >= max_requests)
    return recycle_cause::requests;
  if (over_rss())
    return recycle_cause::rss;
  if (max_age.count() > 0 && now - born >= max_age)
    return recycle_cause::age;
  return recycle_cause::none;
}

void recycle_budget::sample_rss() {
  if (os_pid <= 0)
    return;
  if (auto r = dspex::rss_bytes(os_pid))
    rss_bytes = *r;
}

recycler::recycler(recycle_config cfg) : cfg_(cfg) {}

recycle_budget recycler::draw(recycle_clock::time_point now) {
  recycle_budget b;
  b.born = now;
  b.max_rss_bytes = cfg_.max_rss_mb * 1024 * 1024;
  auto j = std::clamp(cfg_.jitter, 0.0, 0.999);
  std::uniform_real_distribution<double> u(1.0 - j, 1.0);
  if (cfg_.max_requests > 0) {
    // Uniform over the integers in [ceil(limit * (1 - j)), limit], at least 1.
    auto lo = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(static_cast<double>(cfg_.max_requests) * (1.0 - j))));
    lo = std::min(lo, cfg_.max_requests);
    std::uniform_int_distribution<std::uint64_t> n(lo, cfg_.max_requests);
    b.max_requests = n(rng_);
  }
  if (cfg_.max_age.count() > 0)
    b.max_age = std::chrono::milliseconds(std::max<long long>(
      1, static_cast<long long>(static_cast<double>(cfg_.max_age.count()) * u(rng_))));
  return b;
}

std::optional<std::uint64_t> rss_bytes(int pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/statm", pid);
  auto f = std::fopen(path, "re");
  if (!f)
    return std::nullopt;
  unsigned long long size = 0, resident = 0;
  auto n = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  if (n != 2)
    return std::nullopt;
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return resident * page;
}

} // namespace dspex
