#include <dspex/actors/node/config.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>

#include <arpa/inet.h>
#include <csignal>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <thread>

namespace dspex {

using std::chrono::milliseconds;

const char* to_string(bridge_mode m) noexcept {
  switch (m) {
    case bridge_mode::disabled: return "disabled";
    case bridge_mode::single: return "single";
    case bridge_mode::pool: return "pool";
    case bridge_mode::auto_detect: return "auto";
  }
  return "?";
}

json default_config() {
  auto size = std::max(2u, std::min(8u, std::thread::hardware_concurrency()));
  return json{
    {"mode", "pool"},
    {"max_json_depth", bridge::default_max_json_depth},
    {"max_call_depth", 8},
    {"root",
     {{"strategy", "one_for_one"},
      {"intensity", 3},
      {"period_ms", 5000},
      {"children",
       json::array({
         {{"id", "sessions"}, {"type", "session_registry"}, {"ttl_ms", 3600000},
          {"sweep_interval_ms", 60000}, {"max_sessions", 100000}},
         {{"id", "pool_sup"},
          {"type", "pool"},
          {"name", "default"},
          {"size", size},
          {"max_overflow", 0},
          {"checkout_timeout_ms", 5000},
          {"max_queue", 1024},
          {"strategy", "lifo"},
          {"lazy", false},
          {"worker_idle_timeout_ms", 30000},
          {"affinity", "hint"},
          {"max_consecutive_failures", 3},
          {"drain_timeout_ms", 10000},
          {"circuit",
           {{"enabled", true}, {"failure_threshold", 5}, {"window_ms", 10000},
            {"open_ms", 5000}, {"half_open_trials", 1}}},
          {"worker",
           {{"python", "python3"},
            {"module", "dspex_worker"},
            {"handlers", json::array()},
            {"handler_paths", json::array()},
            {"env", json::object()},
            {"init_timeout_ms", 10000},
            {"request_timeout_ms", 30000},
            {"timeout_grace_ms", 1000},
            {"max_frame_bytes", 64 * 1024 * 1024},
            {"fault_injection", false},
            {"max_concurrency", 1},
            {"stream_window", worker_config{}.stream_window},
            {"stream_window_bytes", worker_config{}.stream_window_bytes},
            {"sched_batch", true},
            {"stop_grace_ms", 2000},
            {"term_grace_ms", 1000},
            {"max_requests", 0},
            {"max_rss_mb", 0},
            {"max_age_ms", 0},
            {"limits", {{"memory_mb", 0}, {"cpu_seconds", 0}, {"open_files", 0}, {"processes", 0}}},
            {"recycle_jitter", 0.1}}}},
         {{"id", "monitor"}, {"type", "monitor"}, {"interval_ms", 1000}},
       })}}},
  };
}

const std::vector<std::pair<std::string, int>>& stop_signal_names() {
  static const std::vector<std::pair<std::string, int>> names{
    {"SIGTERM", SIGTERM}, {"SIGINT", SIGINT}, {"SIGHUP", SIGHUP}, {"SIGQUIT", SIGQUIT},
    {"SIGUSR1", SIGUSR1}, {"SIGUSR2", SIGUSR2}, {"SIGKILL", SIGKILL}};
  return names;
}

namespace {

// Walks a JSON object, records precise errors, and refuses unknown keys.
class reader {
public:
  reader(const json& j, std::string path, std::vector<std::string>& errors)
    : j_(j), path_(std::move(path)), errors_(errors) {
    if (!j_.is_object())
      error(path_, "an object", j_);
  }

  bool ok() const { return j_.is_object(); }
  /// Where a nested section's reader reports.
  std::vector<std::string>& errors() { return errors_; }

  static std::string found(const json& v) {
    auto s = v.dump();
    if (s.size() > 40)
      s = s.substr(0, 37) + "...";
    return std::string(v.type_name()) + " " + s;
  }

  void error(const std::string& where, const std::string& expected, const json& v) {
    errors_.push_back(where + ": expected " + expected + ", found " + found(v));
  }
  void error(const std::string& where, const std::string& msg) {
    errors_.push_back(where + ": " + msg);
  }

  std::string at(const std::string& key) const { return path_ + "." + key; }

  const json* get(const std::string& key) {
    seen_.insert(key);
    if (!j_.is_object())
      return nullptr;
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }

  void text(const std::string& key, std::string& out, bool required = false) {
    auto v = get(key);
    if (!v) {
      if (required && ok())
        error(at(key), "is required");
      return;
    }
    if (!v->is_string() || v->get<std::string>().empty())
      return error(at(key), "a non-empty string", *v);
    out = v->get<std::string>();
  }

  template <class Int>
  void integer(const std::string& key, Int& out, long long min, long long max) {
    auto v = get(key);
    if (!v)
      return;
    if (!v->is_number_integer() || v->get<long long>() < min || v->get<long long>() > max)
      return error(at(key), "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]",
                   *v);
    out = static_cast<Int>(v->get<long long>());
  }

  void ms(const std::string& key, milliseconds& out, long long min = 0) {
    long long n = out.count();
    integer(key, n, min, 1LL << 40);
    out = milliseconds(n);
  }

  /// A number in [min, max) (integers are accepted).
  void fraction(const std::string& key, double& out, double min, double max) {
    auto v = get(key);
    if (!v)
      return;
    if (!v->is_number() || v->get<double>() < min || v->get<double>() >= max)
      return error(at(key), "a number in [" + json(min).dump() + ", " + json(max).dump() + ")", *v);
    out = v->get<double>();
  }

  void boolean(const std::string& key, bool& out) {
    auto v = get(key);
    if (!v)
      return;
    if (!v->is_boolean())
      return error(at(key), "true or false", *v);
    out = v->get<bool>();
  }

  template <class Enum>
  void choice(const std::string& key, Enum& out, std::vector<std::pair<const char*, Enum>> opts) {
    auto v = get(key);
    if (!v)
      return;
    std::string names;
    for (auto& [n, e] : opts) {
      if (v->is_string() && v->get<std::string>() == n) {
        out = e;
        return;
      }
      names += (names.empty() ? "" : " | ") + std::string(n);
    }
    error(at(key), "one of " + names, *v);
  }

  void strings(const std::string& key, std::vector<std::string>& out) {
    auto v = get(key);
    if (!v)
      return;
    if (!v->is_array())
      return error(at(key), "an array of strings", *v);
    out.clear();
    for (std::size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string())
        error(at(key) + "[" + std::to_string(i) + "]", "a string", (*v)[i]);
      else
        out.push_back((*v)[i].get<std::string>());
    }
  }

  void env(const std::string& key, std::vector<std::pair<std::string, std::string>>& out) {
    auto v = get(key);
    if (!v)
      return;
    if (!v->is_object())
      return error(at(key), "an object of strings", *v);
    for (auto& [k, x] : v->items()) {
      if (!x.is_string())
        error(at(key) + "." + k, "a string", x);
      else
        out.emplace_back(k, x.get<std::string>());
    }
  }

  /// Reports every key nobody asked for (typos must not pass silently).
  void finish() {
    if (!j_.is_object())
      return;
    for (auto& [k, v] : j_.items())
      if (!seen_.count(k))
        errors_.push_back(at(k) + ": unknown key");
  }

private:
  const json& j_;
  std::string path_;
  std::vector<std::string>& errors_;
  std::set<std::string> seen_;
};

// "a.b_c": what importlib.import_module takes; also keeps commas (the
// fork server's --preload separator) and option-like text out.
bool valid_module_name(const std::string& m) {
  bool start = true;
  for (char c : m) {
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (c == '.') {
      if (start)
        return false;
      start = true;
    } else if (alpha || (digit && !start)) {
      start = false;
    } else {
      return false;
    }
  }
  return !m.empty() && !start;
}

// worker.limits: 0 leaves a limit unset; a value too small for a Python
// worker to start at all is refused here rather than as a crash loop later.
void read_limits(reader& r, bridge::process_limits& l) {
  auto at_least = [&r](const char* key, std::uint64_t& out, std::uint64_t min) {
    r.integer(key, out, 0, 1LL << 40);
    if (out > 0 && out < min) {
      r.error(r.at(key), "0 (no limit) or at least " + std::to_string(min)
                           + " (a Python worker needs that much to start), not "
                           + std::to_string(out));
      out = 0;
    }
  };
  at_least("memory_mb", l.memory_mb, bridge::min_memory_mb);
  at_least("cpu_seconds", l.cpu_seconds, 1);
  at_least("open_files", l.open_files, bridge::min_open_files);
  at_least("processes", l.processes, 1);
}

void read_worker(reader& r, worker_config& w) {
  r.text("python", w.python);
  r.text("module", w.module);
  r.text("python_path", w.python_path);
  r.strings("handlers", w.handler_modules);
  r.strings("handler_paths", w.handler_paths);
  for (std::size_t i = 0; i < w.handler_paths.size(); ++i)
    if (w.handler_paths[i].empty() || w.handler_paths[i].find(':') != std::string::npos)
      r.error(r.at("handler_paths") + "[" + std::to_string(i) + "]",
              "a directory (non-empty, without ':', the PYTHONPATH separator), not '"
                + w.handler_paths[i] + "'");
  r.env("env", w.env);
  r.strings("args", w.extra_args);
  r.ms("init_timeout_ms", w.init_timeout, 1);
  r.ms("request_timeout_ms", w.request_timeout, 1);
  r.ms("timeout_grace_ms", w.timeout_grace);
  r.integer("max_frame_bytes", w.max_frame_bytes, 16, 1LL << 31);
  r.boolean("fault_injection", w.fault_injection);
  r.integer("max_concurrency", w.max_concurrency, 1, 10000);
  r.integer("stream_window", w.stream_window, 1, 65536);
  r.integer("stream_window_bytes", w.stream_window_bytes, 1024, 1LL << 31);
  r.boolean("sched_batch", w.sched_batch);
  r.ms("stop_grace_ms", w.stop_grace);
  r.ms("term_grace_ms", w.term_grace);
  r.choice("start", w.start, {{"fork", std::string("fork")}, {"spawn", std::string("spawn")}});
  r.strings("preload", w.preload);
  if (auto lj = r.get("limits")) {
    reader lr(*lj, r.at("limits"), r.errors());
    read_limits(lr, w.limits);
    lr.finish();
  }
  for (std::size_t i = 0; i < w.preload.size(); ++i)
    if (!valid_module_name(w.preload[i]))
      r.error(r.at("preload") + "[" + std::to_string(i) + "]",
              "a Python module name (dotted identifiers), not '" + w.preload[i] + "'");
}

// A pool's worker section only: a worker on its own has nobody to replace it.
void read_recycling(reader& r, recycle_config& c) {
  r.integer("max_requests", c.max_requests, 0, 1LL << 40);
  r.integer("max_rss_mb", c.max_rss_mb, 0, 1LL << 24);
  r.ms("max_age_ms", c.max_age);
  r.fraction("recycle_jitter", c.jitter, 0.0, 1.0);
}

void read_children(reader& r, const std::string& path, const json* arr,
                   std::vector<node_spec>& out, std::vector<std::string>& errors);

void read_flags(reader& r, supervision::supervisor_flags& f) {
  using supervision::strategy;
  r.choice("strategy", f.strat,
           {{"one_for_one", strategy::one_for_one},
            {"one_for_all", strategy::one_for_all},
            {"rest_for_one", strategy::rest_for_one},
            {"simple_one_for_one", strategy::simple_one_for_one}});
  r.integer("intensity", f.intensity, 0, 1000000);
  r.ms("period_ms", f.period, 1);
  using supervision::auto_shutdown;
  r.choice("auto_shutdown", f.autoshut,
           {{"never", auto_shutdown::never},
            {"any_significant", auto_shutdown::any_significant},
            {"all_significant", auto_shutdown::all_significant}});
}

node_spec read_node(const json& j, const std::string& path, std::vector<std::string>& errors) {
  node_spec n;
  reader r(j, path, errors);
  if (!r.ok())
    return n;
  r.text("id", n.id, true);
  r.text("type", n.type, true);
  using supervision::restart_type;
  r.choice("restart", n.restart,
           {{"permanent", restart_type::permanent},
            {"transient", restart_type::transient},
            {"temporary", restart_type::temporary}});
  if (auto v = r.get("shutdown")) {
    if (v->is_string() && v->get<std::string>() == "brutal_kill")
      n.shutdown = supervision::shutdown_spec::brutal_kill();
    else if (v->is_string() && v->get<std::string>() == "infinity")
      n.shutdown = supervision::shutdown_spec::infinity();
    else if (v->is_number_integer() && v->get<long long>() >= 0)
      n.shutdown = supervision::shutdown_spec::timeout(milliseconds(v->get<long long>()));
    else
      r.error(r.at("shutdown"), "\"brutal_kill\", \"infinity\" or a timeout in ms", *v);
  }
  r.boolean("significant", n.significant);
  if (n.type == "supervisor") {
    auto sup = std::make_shared<supervisor_node>();
    read_flags(r, sup->flags);
    read_children(r, path + ".children", r.get("children"), sup->children, errors);
    n.body = sup;
  } else if (n.type == "session_registry") {
    session_registry_config c;
    r.ms("ttl_ms", c.ttl, 1);
    r.ms("sweep_interval_ms", c.sweep_interval, 1);
    r.integer("max_sessions", c.max_sessions, 1, 100000000);
    n.body = c;
  } else if (n.type == "monitor") {
    monitor_config c;
    r.ms("interval_ms", c.interval, 1);
    r.integer("history", c.history, 1, 100000);
    n.body = c;
  } else if (n.type == "pool") {
    pool_config c;
    c.name = n.id;
    r.text("name", c.name);
    r.integer("size", c.size, 0, 4096);
    r.integer("max_overflow", c.max_overflow, 0, 4096);
    r.ms("checkout_timeout_ms", c.checkout_timeout, 1);
    r.integer("max_queue", c.max_queue, 0, 1 << 24);
    r.choice("strategy", c.strategy, {{"lifo", idle_order::lifo}, {"fifo", idle_order::fifo}});
    r.boolean("lazy", c.lazy);
    r.ms("worker_idle_timeout_ms", c.worker_idle_timeout);
    r.choice("affinity", c.affinity,
             {{"hint", affinity_mode::hint}, {"strict", affinity_mode::strict}});
    r.integer("max_consecutive_failures", c.max_consecutive_failures, 0, 1000000);
    r.ms("drain_timeout_ms", c.drain_timeout);
    r.integer("worker_intensity", c.worker_intensity, 0, 1000000);
    r.ms("worker_period_ms", c.worker_period, 1);
    r.ms("worker_shutdown_ms", c.worker_shutdown);
    if (auto cj = r.get("circuit")) {
      reader cr(*cj, r.at("circuit"), errors);
      cr.boolean("enabled", c.circuit.enabled);
      cr.integer("failure_threshold", c.circuit.failure_threshold, 1, 1000000);
      cr.ms("window_ms", c.circuit.window, 1);
      cr.ms("open_ms", c.circuit.open_for, 1);
      cr.integer("half_open_trials", c.circuit.half_open_trials, 1, 1000);
      cr.finish();
    }
    if (auto lj = r.get("default_lm")) {
      // configure_lm's arguments, passed on to the workers as they are
      // (Python validates the rest); never echoed, as it may hold a key.
      // Its keys are checked here too, so that a misspelled one (say
      // api_base for base_url) fails the config, not every request later.
      // The same set as configure_lm's in python/dspex_worker/lm.py.
      static const std::set<std::string> lm_keys{
        "provider", "model", "responses", "latency_ms", "script", "api_key",
        "base_url", "temperature", "max_tokens", "timeout_s", "timeout"};
      if (!lj->is_object() || !lj->value("provider", json("mock")).is_string()
          || !lj->value("model", json("m")).is_string()
          || !lj->value("api_key", json("k")).is_string()) {
        r.error(r.at("default_lm"),
                "an object {provider, model, ...} whose provider, model and api_key are strings");
      } else {
        bool keys_ok = true;
        for (auto& [k, v] : lj->items())
          if (!lm_keys.count(k)) {
            keys_ok = false;
            std::string accepted;
            for (auto& a : lm_keys)
              accepted += (accepted.empty() ? "" : ", ") + a;
            r.error(r.at("default_lm") + "." + k,
                    std::string("unknown key (configure_lm takes ") + accepted
                      + (k == "api_base" ? "; the endpoint is base_url" : "") + ")");
          }
        if (keys_ok)
          c.default_lm = *lj;
      }
    }
    if (auto wj = r.get("worker")) {
      reader wr(*wj, r.at("worker"), errors);
      read_worker(wr, c.worker);
      read_recycling(wr, c.recycle);
      wr.finish();
    }
    if (!c.lazy && c.size == 0)
      r.error(r.at("size"), "must be at least 1 unless the pool is lazy");
    n.body = c;
  } else if (n.type == "worker") {
    worker_config c;
    c.id = n.id;
    c.mode = "single";
    read_worker(r, c);
    n.body = c;
  } else if (n.type == "process") {
    process_config c;
    r.strings("command", c.command);
    if (c.command.empty() && r.ok())
      r.error(r.at("command"), "a non-empty array of strings (program and arguments)");
    r.env("env", c.env);
    r.text("cwd", c.cwd);
    if (auto v = r.get("stop_signal")) {
      std::string name = v->is_string() ? v->get<std::string>() : "";
      if (name.rfind("SIG", 0) != 0)
        name = "SIG" + name;
      bool known = false;
      std::string names;
      for (auto& [n, sig] : stop_signal_names()) {
        names += (names.empty() ? "" : " | ") + n;
        if (v->is_string() && n == name) {
          c.stop_signal = sig;
          known = true;
        }
      }
      if (!known)
        r.error(r.at("stop_signal"), "a signal name: " + names, *v);
    }
    n.body = c;
  } else if (n.type == "remote_pool") {
    remote_pool_config c;
    c.name = n.id;
    r.text("name", c.name);
    r.text("host", c.host, true);
    long long port = -1;
    r.integer("port", port, 1, 65535);
    if (port < 0 && r.ok() && !r.get("port"))
      r.error(r.at("port"), "is required");
    c.port = static_cast<std::uint16_t>(port < 0 ? 0 : port);
    r.text("pool", c.pool);
    r.ms("connect_timeout_ms", c.connect_timeout, 1);
    r.ms("request_timeout_ms", c.request_timeout, 1);
    r.ms("reconnect_min_ms", c.reconnect_min, 1);
    r.ms("reconnect_max_ms", c.reconnect_max, 1);
    if (auto v = r.get("tls"); v && !v->is_boolean())
      r.error(r.at("tls"), "true or false (the certificate, key and cafile are the node's "
                           "top-level tls: CAF 0.17 holds one TLS identity per actor system)",
              *v);
    else if (v)
      c.tls = v->get<bool>();
    if (c.reconnect_max < c.reconnect_min)
      r.error(r.at("reconnect_max_ms"), "must be at least reconnect_min_ms");
    n.body = c;
  } else if (n.type == "pool_group") {
    pool_group_config c;
    c.name = n.id;
    r.text("name", c.name);
    r.strings("members", c.members);
    if (r.ok() && !r.get("members"))
      r.error(r.at("members"), "is required");
    else if (r.get("members") && r.get("members")->is_array() && r.get("members")->empty())
      r.error(r.at("members"), "at least one pool or remote_pool name", *r.get("members"));
    std::vector<std::string> idempotent;
    r.strings("idempotent", idempotent);
    c.idempotent.insert(idempotent.begin(), idempotent.end());
    r.ms("health_interval_ms", c.health_interval, 10);
    n.body = c;
  } else if (!n.type.empty()) {
    r.error(r.at("type"),
            "one of supervisor | session_registry | pool | monitor | worker | process | "
            "remote_pool | pool_group",
            json(n.type));
  }
  r.finish();
  return n;
}

void read_children(reader& r, const std::string& path, const json* arr,
                   std::vector<node_spec>& out, std::vector<std::string>& errors) {
  if (!arr)
    return;
  if (!arr->is_array())
    return r.error(path, "an array of child nodes", *arr);
  std::set<std::string> ids;
  for (std::size_t i = 0; i < arr->size(); ++i) {
    auto p = path + "[" + std::to_string(i) + "]";
    auto n = read_node((*arr)[i], p, errors);
    if (!n.id.empty() && !ids.insert(n.id).second)
      errors.push_back(p + ".id: duplicate id \"" + n.id + "\" among siblings");
    out.push_back(std::move(n));
  }
}

// Pool names are how requests find a pool (node::pool, the control
// protocol's "pool"), so they are unique across the whole tree, not only
// among siblings. `where` is the path read_children gave the node.
void check_pool_names(const std::vector<node_spec>& kids, const std::string& path,
                      std::map<std::string, std::string>& seen, std::vector<std::string>& errors) {
  for (std::size_t i = 0; i < kids.size(); ++i) {
    auto where = path + "[" + std::to_string(i) + "]";
    std::string name;
    if (auto p = std::get_if<pool_config>(&kids[i].body))
      name = p->name;
    else if (auto rp = std::get_if<remote_pool_config>(&kids[i].body))
      name = rp->name;
    else if (auto g = std::get_if<pool_group_config>(&kids[i].body))
      name = g->name;
    else if (auto s = std::get_if<std::shared_ptr<supervisor_node>>(&kids[i].body))
      check_pool_names((*s)->children, where + ".children", seen, errors);
    if (name.empty())
      continue;
    auto [it, fresh] = seen.emplace(name, where);
    if (!fresh)
      errors.push_back(where + ".name: duplicate pool name \"" + name + "\", also used by "
                       + it->second + " (pool names are unique across the tree)");
  }
}

// A group's members are pools or remote_pools of this tree (named in
// `names`, from check_pool_names), each once; not groups: a group of groups
// would route twice and hide where a session lives.
void check_group_members(const std::vector<node_spec>& kids, const std::string& path,
                         const std::map<std::string, std::string>& names,
                         std::vector<std::string>& errors) {
  std::set<std::string> groups;
  std::function<void(const std::vector<node_spec>&)> collect = [&](const std::vector<node_spec>& ks) {
    for (auto& k : ks) {
      if (auto g = std::get_if<pool_group_config>(&k.body))
        groups.insert(g->name);
      else if (auto s = std::get_if<std::shared_ptr<supervisor_node>>(&k.body))
        collect((*s)->children);
    }
  };
  collect(kids);
  for (std::size_t i = 0; i < kids.size(); ++i) {
    auto where = path + "[" + std::to_string(i) + "]";
    if (auto s = std::get_if<std::shared_ptr<supervisor_node>>(&kids[i].body))
      check_group_members((*s)->children, where + ".children", names, errors);
    auto g = std::get_if<pool_group_config>(&kids[i].body);
    if (!g)
      continue;
    std::set<std::string> once;
    for (std::size_t m = 0; m < g->members.size(); ++m) {
      auto& name = g->members[m];
      auto at = where + ".members[" + std::to_string(m) + "]";
      if (!once.insert(name).second)
        errors.push_back(at + ": \"" + name + "\" is a member twice");
      else if (groups.count(name))
        errors.push_back(at + ": \"" + name + "\" is a pool_group (members are pools and remote_pools)");
      else if (!names.count(name))
        errors.push_back(at + ": no pool or remote_pool named \"" + name + "\" in the tree");
    }
  }
}

} // namespace

caf::expected<std::string> parse_listen_address(const std::string& s) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_config, "\"" + s + "\": " + why
                                              + " (expected HOST:PORT, e.g. 127.0.0.1:9464)");
  };
  // HOST:PORT as every listener reads it (remote::parse_endpoint); a bare
  // port is loopback's.
  auto text = s.find(':') == std::string::npos ? "127.0.0.1:" + s : s;
  std::string host, why;
  std::uint16_t port = 0;
  if (!remote::parse_endpoint(text, host, port, why))
    return bad(why);
  if (host == "localhost")
    host = "127.0.0.1";
  unsigned char buf[sizeof(in6_addr)];
  bool v6 = text.front() == '[';  // IPv6 only in brackets: "::1:9464" is ambiguous
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1)
    return bad("the host must be an IPv4 address, [IPv6] or localhost");
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::string check_listen(const tree_config& cfg) {
  if (cfg.listen.empty())
    return {};
  std::string host, why;
  std::uint16_t port = 0;
  if (!remote::parse_endpoint(cfg.listen, host, port, why))
    return why;
  if (!cfg.tls.enabled() && !cfg.insecure && !remote::is_loopback(host))
    return "\"" + host + "\" is not a loopback address: listening there needs tls "
           "{certificate, key, cafile} (or insecure: true / --insecure, which lets anyone "
           "who reaches the port run commands)";
  return {};
}

caf::expected<tree_config> parse_config(const json& j) {
  std::vector<std::string> errors;
  tree_config cfg;
  // Before anything copies or prints a part of it (both recurse).
  if (bridge::value_depth_exceeds(j, bridge::default_max_json_depth))
    return make_error(errc::invalid_config,
                      bridge::depth_message("config", bridge::default_max_json_depth));
  cfg.source = j;
  reader top(j, "config", errors);
  if (top.ok()) {
    top.choice("mode", cfg.mode,
               {{"disabled", bridge_mode::disabled},
                {"single", bridge_mode::single},
                {"pool", bridge_mode::pool},
                {"auto", bridge_mode::auto_detect}});
    if (auto lv = top.get("log_level")) {
      static const std::set<std::string> levels{"trace", "debug", "info",    "warn",
                                                "error", "critical", "off"};
      if (!lv->is_string() || !levels.count(lv->get<std::string>()))
        top.error("config.log_level",
                  "one of trace | debug | info | warn | error | critical | off", *lv);
      else
        cfg.log_level = lv->get<std::string>();
    }
    top.integer("max_json_depth", cfg.max_json_depth, 1,
                static_cast<long long>(bridge::max_json_depth_limit));
    top.integer("max_call_depth", cfg.max_call_depth, 1, 64);
    if (auto m = top.get("metrics")) {
      reader mr(*m, "config.metrics", errors);
      if (mr.ok()) {
        std::string listen = default_metrics_listen;
        mr.text("listen", listen);
        mr.integer("max_connections", cfg.metrics.max_connections, 1, 65536);
        mr.ms("request_timeout_ms", cfg.metrics.request_timeout, 1);
        mr.ms("write_timeout_ms", cfg.metrics.write_timeout, 1);
        mr.integer("max_request_bytes", cfg.metrics.max_request_bytes, 256, 1 << 20);
        if (auto addr = parse_listen_address(listen))
          cfg.metrics_listen = *addr;
        else
          mr.error(mr.at("listen"), detail_of(addr.error()));
        mr.finish();
      }
    }
    if (auto root = top.get("root")) {
      reader rr(*root, "root", errors);
      if (rr.ok()) {
        read_flags(rr, cfg.root.flags);
        read_children(rr, "root.children", rr.get("children"), cfg.root.children, errors);
        rr.finish();
        std::map<std::string, std::string> names;
        check_pool_names(cfg.root.children, "root.children", names, errors);
        check_group_members(cfg.root.children, "root.children", names, errors);
      }
    } else {
      errors.push_back("config.root: is required");
    }
    top.text("listen", cfg.listen);
    top.boolean("insecure", cfg.insecure);
    if (auto tj = top.get("tls")) {
      reader tr(*tj, "config.tls", errors);
      tr.text("certificate", cfg.tls.certificate, true);
      tr.text("key", cfg.tls.key, true);
      tr.text("cafile", cfg.tls.cafile, true);
      tr.finish();
      if (!cfg.tls.certificate.empty() && !cfg.tls.key.empty() && !cfg.tls.cafile.empty())
        if (auto err = check_tls(cfg.tls))
          errors.push_back("config." + detail_of(err));
    }
    top.ms("heartbeat_interval_ms", cfg.timing.heartbeat_interval, 1);
    top.ms("connection_timeout_ms", cfg.timing.connection_timeout, 1);
    top.integer("listen_max_connections", cfg.listen_limits.max_connections, 1, 1 << 20);
    top.ms("listen_handshake_timeout_ms", cfg.listen_limits.handshake_timeout, 1);
    top.boolean("request_link", cfg.request_link);
    long long link_port = cfg.request_link_port;
    top.integer("request_link_port", link_port, 0, 65535);
    cfg.request_link_port = static_cast<std::uint16_t>(link_port);
    top.integer("max_remote_message_bytes", cfg.max_remote_message_bytes, 1024,
                std::numeric_limits<std::uint32_t>::max());
    if (cfg.timing.connection_timeout <= cfg.timing.heartbeat_interval)
      errors.push_back("config.connection_timeout_ms: must be above heartbeat_interval_ms");
    if (auto why = check_listen(cfg); !why.empty())
      errors.push_back("config.listen: " + why);
    std::function<void(const std::vector<node_spec>&, const std::string&)> need_tls =
      [&](const std::vector<node_spec>& kids, const std::string& path) {
        for (std::size_t i = 0; i < kids.size(); ++i) {
          auto where = path + "[" + std::to_string(i) + "]";
          if (auto rp = std::get_if<remote_pool_config>(&kids[i].body); rp && rp->tls
              && !cfg.tls.enabled())
            errors.push_back(where + ".tls: needs the node's top-level tls "
                                     "{certificate, key, cafile}");
          if (auto s = std::get_if<std::shared_ptr<supervisor_node>>(&kids[i].body))
            need_tls((*s)->children, where + ".children");
        }
      };
    need_tls(cfg.root.children, "root.children");
    top.finish();
  }
  if (!errors.empty()) {
    std::string all;
    for (auto& e : errors)
      all += (all.empty() ? "" : "\n") + e;
    return make_error(errc::invalid_config, all);
  }
  return cfg;
}

caf::expected<tree_config> load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in)
    return make_error(errc::invalid_config, path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return parse_config(json::parse(ss.str()));
  } catch (const json::parse_error& e) {
    return make_error(errc::invalid_config, path + ": " + e.what());
  }
}

} // namespace dspex
