#include <dspex/metrics/node_metrics.hpp>

#include <dspex/actors/pool/recycling.hpp>

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <string>

namespace dspex::metrics {

namespace {

using nlohmann::json;
using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using labels = std::vector<ClientMetric::Label>;

// A status part is whatever the node could collect: a field may be missing
// or null when its actor did not answer in time.
double num(const json& j, const char* key) {
  if (!j.is_object())
    return 0;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

const json& obj(const json& j, const char* key) {
  static const json empty = json::object();
  if (!j.is_object())
    return empty;
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : empty;
}

// A deque: add() hands out references that must survive later adds.
struct family_set {
  std::deque<MetricFamily> out;

  MetricFamily& add(std::string name, std::string help, MetricType type) {
    out.push_back(MetricFamily{std::move(name), std::move(help), type, {}});
    return out.back();
  }
};

void sample(MetricFamily& f, labels l, double v) {
  ClientMetric m;
  m.label = std::move(l);
  if (f.type == MetricType::Counter)
    m.counter.value = v;
  else
    m.gauge.value = v;
  f.metric.push_back(std::move(m));
}

void latency(MetricFamily& f, const std::string& pool, const json& h) {
  if (!h.is_object() || !h.contains("le") || !h.contains("cumulative"))
    return;
  ClientMetric m;
  m.label = {{"pool", pool}};
  auto& le = h["le"];
  auto& cum = h["cumulative"];
  for (std::size_t i = 0; i < le.size() && i < cum.size(); ++i)
    m.histogram.bucket.push_back({cum[i].get<std::uint64_t>(), le[i].get<double>()});
  m.histogram.sample_count = h.value("count", std::uint64_t{0});
  m.histogram.sample_sum = h.value("sum_s", 0.0);
  m.histogram.bucket.push_back(
    {m.histogram.sample_count, std::numeric_limits<double>::infinity()});
  f.metric.push_back(std::move(m));
}

// Every supervisor of the tree (so that one with nothing to report still
// shows 0) and every child backed by an OS process.
void walk_tree(const json& n, std::vector<std::string>& sups,
               std::vector<std::pair<std::string, int>>& procs) {
  if (!n.is_object())
    return;
  auto path = n.value("path", std::string{});
  if (n.value("type", std::string{}) == "supervisor")
    sups.push_back(path);
  if (n.contains("os_pid") && n["os_pid"].is_number_integer())
    procs.emplace_back(path, n["os_pid"].get<int>());
  if (n.contains("children") && n["children"].is_array())
    for (auto& c : n["children"])
      walk_tree(c, sups, procs);
}

void pool_families(family_set& fs, const json& pools) {
  auto& requests = fs.add("dspex_requests_total",
                          "Requests answered by a pool, by result: ok or the error class "
                          "the caller got (python_error, command_timeout, ...)",
                          MetricType::Counter);
  auto& duration = fs.add("dspex_request_duration_seconds",
                          "Submission to answer of the requests a worker answered "
                          "(ok or python_error), queueing included",
                          MetricType::Histogram);
  auto& queue = fs.add("dspex_queue_length", "Requests waiting for a free worker",
                       MetricType::Gauge);
  auto& workers = fs.add("dspex_workers", "Workers of a pool by state", MetricType::Gauge);
  auto& ready = fs.add("dspex_pool_ready", "1 once every worker of the pool has started",
                       MetricType::Gauge);
  auto& size = fs.add("dspex_pool_size", "Workers a pool is sized for (config size, or the last scale)",
                      MetricType::Gauge);
  auto& crashes = fs.add("dspex_worker_crashes_total",
                         "Worker exits nobody asked for (they count toward restart intensity)",
                         MetricType::Counter);
  auto& replaced = fs.add("dspex_worker_replacements_total",
                          "Workers the pool replaced on purpose, by cause (no intensity spent)",
                          MetricType::Counter);
  auto& timeouts = fs.add("dspex_request_timeouts_total",
                          "Requests past their deadline, by how they ended: soft (the handler "
                          "stopped within timeout_grace_ms, its process kept) or hard (its "
                          "worker was replaced)",
                          MetricType::Counter);
  auto& circuit = fs.add("dspex_circuit_state",
                         "The pool's circuit breaker: 1 for its current state, else 0",
                         MetricType::Gauge);
  auto& opened = fs.add("dspex_circuit_opened_total", "Times the circuit breaker opened",
                        MetricType::Counter);
  auto& reloads = fs.add("dspex_pool_reloads_total",
                         "Rolling reloads of a pool by how they ended: ok or rolled_back",
                         MetricType::Counter);
  auto& reloading = fs.add("dspex_pool_reload_running", "1 while a rolling reload of the pool runs",
                           MetricType::Gauge);
  auto& reload_replaced = fs.add("dspex_pool_reload_replaced",
                                 "Workers the current (or last) rolling reload has replaced so far",
                                 MetricType::Gauge);
  for (auto& [name, p] : pools.items()) {
    if (!p.is_object())
      continue;
    for (auto& [result, n] : obj(p, "reloads").items())
      sample(reloads, {{"pool", name}, {"result", result}}, n.get<double>());
    auto& rl = obj(p, "reload");
    sample(reloading, {{"pool", name}}, rl.value("state", std::string{}) == "running" ? 1 : 0);
    sample(reload_replaced, {{"pool", name}}, num(rl, "replaced"));
    for (auto& [result, n] : obj(p, "requests").items())
      sample(requests, {{"pool", name}, {"result", result}}, n.get<double>());
    latency(duration, name, p.value("latency", json()));
    sample(queue, {{"pool", name}}, num(p, "queue"));
    std::map<std::string, double> by_state{
      {"idle", 0}, {"busy", 0}, {"leased", 0}, {"grace", 0}, {"draining", 0}, {"retiring", 0}};
    if (p.contains("worker_list") && p["worker_list"].is_array())
      for (auto& w : p["worker_list"])
        if (w.is_object())
          ++by_state[w.value("state", std::string{"unknown"})];
    for (auto& [state, n] : by_state)
      sample(workers, {{"pool", name}, {"state", state}}, n);
    sample(ready, {{"pool", name}}, p.value("ready", false) ? 1 : 0);
    sample(size, {{"pool", name}}, num(p, "size"));
    sample(crashes, {{"pool", name}}, num(p, "crashes"));
    for (auto& [cause, n] : obj(p, "replaced").items())
      sample(replaced, {{"pool", name}, {"cause", cause}}, n.get<double>());
    for (auto& [kind, n] : obj(p, "timeouts").items())
      sample(timeouts, {{"pool", name}, {"kind", kind}}, n.get<double>());
    auto now = p.value("circuit", std::string{});
    for (const char* s : {"closed", "open", "half_open"})
      sample(circuit, {{"pool", name}, {"state", s}}, now == s ? 1 : 0);
    sample(opened, {{"pool", name}}, num(p, "circuit_opened"));
  }
}

// Per member of each pool_group (actors/group/pool_group.hpp).
void group_families(family_set& fs, const json& groups) {
  auto& up = fs.add("dspex_group_member_up", "1 while a pool_group member gets requests, 0 while it is down",
                    MetricType::Gauge);
  auto& in_flight = fs.add("dspex_group_member_in_flight", "Requests of the group in flight on a member",
                           MetricType::Gauge);
  auto& routed = fs.add("dspex_group_routed_total", "Requests a pool_group sent to a member",
                        MetricType::Counter);
  auto& failed = fs.add("dspex_group_member_failures_total",
                        "Requests a member answered node_down or lost (its actor gone)", MetricType::Counter);
  auto& retried = fs.add("dspex_group_retried_total",
                         "Requests a pool_group sent to a second member (refused, or idempotent after node_down)",
                         MetricType::Counter);
  for (auto& [group, g] : groups.items()) {
    sample(retried, {{"group", group}}, num(g, "retried"));
    auto it = g.find("members");
    if (it == g.end() || !it->is_array())
      continue;
    for (auto& m : *it) {
      labels l{{"group", group}, {"member", m.value("name", std::string{})}};
      sample(up, l, m.value("state", std::string{}) == "up" ? 1 : 0);
      sample(in_flight, l, num(m, "in_flight"));
      sample(routed, l, num(m, "routed"));
      sample(failed, l, num(m, "failed"));
    }
  }
}

// A listening node: its router port's connections, and what the router
// guard closed, refused or dropped (docs/security.md "The router port").
void listen_families(family_set& fs, const json& listen) {
  if (!listen.is_object())
    return;
  auto& guard = obj(listen, "guard");
  sample(fs.add("dspex_listen_connections", "Connections open on the router port", MetricType::Gauge), {},
         num(guard, "connections"));
  auto& refused = fs.add("dspex_listen_refused_total",
                         "Router port connections the guard refused or closed, by reason",
                         MetricType::Counter);
  static const std::pair<const char*, const char*> reasons[] = {
    {"refused", "capacity"},        {"handshake_timeouts", "handshake_timeout"},
    {"oversized_messages", "oversized"}, {"relays_refused", "relay"},
    {"messages_refused", "message"},     {"actors_refused", "actors"}};
  for (auto& [key, reason] : reasons)
    sample(refused, {{"reason", reason}}, num(guard, key));
  auto& dropped = fs.add("dspex_listen_dropped_messages_total",
                         "BASP messages dropped: by the screen (to an actor that takes none) "
                         "or by the router (of a kind it does not take)",
                         MetricType::Counter);
  sample(dropped, {{"by", "screen"}}, num(guard, "messages_dropped"));
  sample(dropped, {{"by", "router"}}, num(listen, "dropped_messages"));
}

} // namespace

std::vector<MetricFamily> node_families(const json& status) {
  family_set fs;
  try {
    auto& info = fs.add("dspex_info", "The node: its mode and run id (value always 1)",
                        MetricType::Gauge);
    sample(info, {{"mode", status.value("mode", std::string{})},
                  {"run_id", status.value("run_id", std::string{})}}, 1);

    pool_families(fs, obj(status, "pools"));
    group_families(fs, obj(status, "groups"));
    listen_families(fs, status.value("listen", json()));

    std::vector<std::string> sups;
    std::vector<std::pair<std::string, int>> procs;
    walk_tree(status.value("tree", json()), sups, procs);
    auto& counts = obj(status, "supervisors");
    auto& restarts = fs.add("dspex_supervisor_restarts_total",
                            "Children a supervisor restarted (its restart strategy)",
                            MetricType::Counter);
    auto& stops = fs.add("dspex_supervisor_intensity_stops_total",
                         "Times a supervisor reached its restart intensity and gave up",
                         MetricType::Counter);
    for (auto& path : sups) {
      auto& c = obj(counts, path.c_str());
      sample(restarts, {{"supervisor", path}}, num(c, "restarts"));
      sample(stops, {{"supervisor", path}}, num(c, "intensity_stops"));
    }
    // A supervisor that gave up may be gone from the tree: its count stays.
    for (auto& [path, c] : counts.items())
      if (std::find(sups.begin(), sups.end(), path) == sups.end()) {
        sample(restarts, {{"supervisor", path}}, num(c, "restarts"));
        sample(stops, {{"supervisor", path}}, num(c, "intensity_stops"));
      }

    auto& rss = fs.add("dspex_worker_resident_bytes",
                       "Resident set of each process in the tree (workers, fork servers, "
                       "process children), from /proc/PID/statm",
                       MetricType::Gauge);
    for (auto& [path, pid] : procs)
      if (auto b = rss_bytes(pid))
        sample(rss, {{"path", path}}, static_cast<double>(*b));

    auto& sessions = obj(status, "sessions");
    sample(fs.add("dspex_sessions", "Live sessions", MetricType::Gauge), {},
           num(sessions, "sessions"));
    if (sessions.contains("max_sessions"))
      sample(fs.add("dspex_sessions_max", "The cap on live sessions (max_sessions)",
                    MetricType::Gauge), {}, num(sessions, "max_sessions"));
    sample(fs.add("dspex_sessions_created_total", "Sessions created", MetricType::Counter), {},
           num(sessions, "created"));
    sample(fs.add("dspex_sessions_refused_total",
                  "New sessions refused (resource_exhausted) at the max_sessions cap",
                  MetricType::Counter), {}, num(sessions, "refused"));
    sample(fs.add("dspex_sessions_ended_total", "Sessions ended by their client",
                  MetricType::Counter), {}, num(sessions, "ended"));
    sample(fs.add("dspex_sessions_expired_total", "Sessions expired by their TTL",
                  MetricType::Counter), {}, num(sessions, "expired"));
  } catch (const std::exception&) {
    // A malformed part (wrong JSON type) loses the families after it, not
    // the scrape.
  }
  // A family without samples is legal but noise; drop it.
  std::vector<MetricFamily> out;
  for (auto& f : fs.out)
    if (!f.metric.empty())
      out.push_back(std::move(f));
  return out;
}

} // namespace dspex::metrics
