#include <dspex/bench/python_peer.hpp>
#include <dspex/bench/subprocess.hpp>

#include <dspex/bridge/host_run.hpp>

#include <dspex_build_paths.hpp>

#include <cstdlib>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace dspex::bench {

namespace {

bool is_file(const std::string& p) {
  struct stat st;
  return !p.empty() && ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string parent_dir(std::string p) {
  while (p.size() > 1 && p.back() == '/')
    p.pop_back();
  auto slash = p.rfind('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

std::string format_seconds(std::chrono::milliseconds ms) {
  std::ostringstream os;
  os << static_cast<double>(ms.count()) / 1000.0;
  return os.str();
}

} // namespace

const char* to_string(peer_kind k) noexcept {
  return k == peer_kind::mp_pool ? "mp_pool" : "process_pool_executor";
}

const char* display_name(peer_kind k) noexcept {
  return k == peer_kind::mp_pool ? "mp.Pool" : "ProcessPoolExecutor";
}

std::string locate_peer_file(const std::string& name) {
  if (auto env = std::getenv("DSPEX_BENCH_PEERS_DIR"); env && *env) {
    std::string p = std::string(env) + "/" + name;
    if (is_file(p))
      return p;
  }
  // The build knows <source>/python; the peers sit beside it in bench/.
  std::string p = parent_dir(DSPEX_SOURCE_PYTHON_DIR) + "/bench/peers/" + name;
  if (is_file(p))
    return p;
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string exe(buf, static_cast<std::size_t>(n));
    p = parent_dir(exe) + "/../share/dspex/bench/peers/" + name;
    if (is_file(p))
      return p;
  }
  return {};
}

std::string locate_mp_peer() { return locate_peer_file("mp_peer.py"); }

json to_json(const peer_result& r) {
  json j = {{"ok", r.ok},
            {"kind", to_string(r.kind)},
            {"workers", r.workers},
            {"inflight", r.inflight},
            {"payload_bytes", r.payload_bytes},
            {"requests", r.requests},
            {"errors", r.errors},
            {"seconds", r.seconds},
            {"requests_per_s", r.requests_per_s},
            {"latency", to_json(r.latency)},
            {"cdf_us", r.cdf_us}};
  if (!r.ok)
    j["error"] = r.error;
  return j;
}

peer_result run_python_peer(peer_kind kind, int workers, std::chrono::milliseconds duration,
                            std::size_t payload_bytes, const peer_options& opts) {
  peer_result res;
  res.kind = kind;
  res.workers = workers;
  res.payload_bytes = payload_bytes;
  res.inflight = opts.inflight > 0 ? opts.inflight : 4 * workers;

  std::string script = opts.script.empty() ? locate_mp_peer() : opts.script;
  if (script.empty()) {
    res.error = "mp_peer.py not found (set DSPEX_BENCH_PEERS_DIR)";
    return res;
  }
  const auto time_limit = duration + opts.warmup + std::chrono::seconds(30);
  spawn_spec spec;
  spec.argv = {opts.python,
               "-u",
               script,
               "--kind",
               kind == peer_kind::mp_pool ? "pool" : "executor",
               "--workers",
               std::to_string(workers),
               "--duration",
               format_seconds(duration),
               "--payload",
               std::to_string(payload_bytes),
               "--inflight",
               std::to_string(res.inflight),
               "--warmup",
               format_seconds(opts.warmup),
               "--time-limit",
               format_seconds(time_limit),
               "--run-id",
               opts.run_id.empty() ? bridge::host_run_id() : opts.run_id};
  if (opts.sleep_ms > 0) {
    spec.argv.push_back("--sleep-ms");
    spec.argv.push_back(std::to_string(opts.sleep_ms));
  }
  spec.env = {{"PYTHONDONTWRITEBYTECODE", "1"}};

  command_result run;
  try {
    run = run_command(spec, time_limit + std::chrono::seconds(5));
  } catch (const std::exception& e) {
    res.error = e.what();
    return res;
  }
  // The last non-empty line is the result (nothing else is printed on stdout).
  std::string line;
  {
    std::istringstream in(run.output);
    for (std::string l; std::getline(in, l);)
      if (!l.empty())
        line = l;
  }
  res.raw = json::parse(line, nullptr, false);
  if (res.raw.is_discarded() || !res.raw.is_object()) {
    res.error = "mp_peer.py " + run.describe() + ", output: " + run.output.substr(0, 300);
    res.raw = json();
    return res;
  }
  if (!res.raw.value("ok", false)) {
    res.error = res.raw.value("error", std::string("failed")) + " (" + run.describe() + ")";
    return res;
  }
  try {
    res.requests = res.raw.at("requests").get<std::uint64_t>();
    res.errors = res.raw.at("errors").get<std::uint64_t>();
    res.seconds = res.raw.at("seconds").get<double>();
    res.requests_per_s = res.raw.at("requests_per_s").get<double>();
    res.cdf_us = res.raw.at("cdf_us").get<std::vector<double>>();
    const auto& l = res.raw.at("latency_us");
    res.latency.count = res.requests;
    res.latency.p50_us = l.at("p50").get<double>();
    res.latency.p90_us = l.at("p90").get<double>();
    res.latency.p99_us = l.at("p99").get<double>();
    res.latency.max_us = l.at("max").get<double>();
    res.latency.mean_us = l.at("mean").get<double>();
    res.latency.min_us = res.cdf_us.empty() ? 0 : res.cdf_us.front();
    res.latency.p999_us = l.at("p999").get<double>();
    res.ok = run.succeeded();
    if (!res.ok)
      res.error = "mp_peer.py " + run.describe();
  } catch (const std::exception& e) {
    res.error = std::string("mp_peer.py output: ") + e.what();
  }
  return res;
}

} // namespace dspex::bench
