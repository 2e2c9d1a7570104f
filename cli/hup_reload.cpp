#include "hup_reload.hpp"

#include <cstdio>
#include <string>

namespace dspex::cli {

void hup_reload::on_signal(std::uint32_t from_pid) {
  auto from = from_pid != 0 ? " from pid " + std::to_string(from_pid) : std::string();
  if (running_.exchange(true)) {
    std::fprintf(stderr, "dspex: SIGHUP received%s: a reload is running already; ignored\n",
                 from.c_str());
    return;
  }
  std::fprintf(stderr, "dspex: SIGHUP received%s: rolling reload of every pool\n", from.c_str());
  if (thread_.joinable())
    thread_.join();  // the last one's thread has ended (running_ was false)
  thread_ = std::thread([this] {
    try {
      report();
    } catch (const std::exception& e) {  // nothing escapes a thread of the host
      std::fprintf(stderr, "dspex: reload failed: %s\n", e.what());
    }
    running_ = false;
  });
}

void hup_reload::report() {
  for (auto& [pool, r] : node_.reload_all()) {
      if (r)
      std::fprintf(stderr, "dspex: pool %s reloaded: %zu workers in %lld ms\n", pool.c_str(),
                     r->value("reloaded", std::size_t{0}), r->value("ms", 0LL));
      else
        std::fprintf(stderr, "dspex: pool %s not reloaded: %s\n", pool.c_str(),
                     describe(r.error()).c_str());
  }
}

void hup_reload::join() {
  if (thread_.joinable())
    thread_.join();
}

} // namespace dspex::cli
