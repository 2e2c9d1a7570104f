// The adapter registry: names, options from JSON, selection by name, config
// or DSPEX_ADAPTER, and the cascade's levels (rules at the top of adapter.hpp).
#include <dspex/actors/adapters/adapter.hpp>

#include <dspex/actors/node/node.hpp>

#include <algorithm>
#include <cstdlib>

namespace dspex {

namespace {

std::string expected_names() {
  std::string out;
  for (auto& n : adapter_names())
    out += (out.empty() ? "" : " | ") + n;
  return out;
}

bool known(const std::string& name) {
  auto& names = adapter_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

std::string found(const json& v) {
  auto s = v.dump();
  if (s.size() > 40)
    s = s.substr(0, 37) + "...";
  return std::string(v.type_name()) + " " + s;
}

} // namespace

const std::vector<std::string>& adapter_names() {
  static const std::vector<std::string> names{"python_pool", "python_port", "mock"};
  return names;
}

adapter_sources adapter_sources::of(std::shared_ptr<node> n) {
  adapter_sources src;
  if (n && n->mode() == bridge_mode::single)
    src.single = std::move(n);
  else
    src.pool = std::move(n);
  return src;
}

caf::expected<adapter_options> parse_adapter_options(const json& j) {
  adapter_options opts;
  std::vector<std::string> errors;
  if (!j.is_object())
    return make_error(errc::invalid_config, "adapter: expected an object, found " + found(j));
  for (auto& [key, v] : j.items()) {
    auto where = "adapter." + key;
    if (key == "name") {
      if (!v.is_string() || !known(v.get<std::string>()))
        errors.push_back(where + ": expected one of " + expected_names() + ", found " + found(v));
      else
        opts.name = v.get<std::string>();
    } else if (key == "fallback") {
      if (!v.is_boolean())
        errors.push_back(where + ": expected true or false, found " + found(v));
      else
        opts.fallback = v.get<bool>();
    } else if (key == "timeout_ms") {
      if (!v.is_number_integer() || v.get<long long>() < 0)
        errors.push_back(where + ": expected an integer >= 0, found " + found(v));
      else
        opts.timeout = std::chrono::milliseconds(v.get<long long>());
    } else {
      errors.push_back(where + ": unknown key");
    }
  }
  if (!errors.empty()) {
    std::string all;
    for (auto& e : errors)
      all += (all.empty() ? "" : "\n") + e;
    return make_error(errc::invalid_config, all);
  }
  return opts;
}

caf::expected<adapter_ptr> make_adapter(const std::string& name, const adapter_sources& src,
                                        std::chrono::milliseconds timeout) {
  if (name == "python_pool") {
    if (!src.pool)
      return make_error(errc::invalid_config,
                        "adapter python_pool needs a node in pool mode, and none was given");
    return make_python_pool_adapter(src.pool, timeout);
  }
  if (name == "python_port") {
    if (!src.single)
      return make_error(errc::invalid_config,
                        "adapter python_port needs a node in single mode, and none was given");
    return make_python_port_adapter(src.single, timeout);
  }
  if (name == "mock")
    return make_mock_adapter();
  return make_error(errc::invalid_config,
                    "unknown adapter \"" + name + "\" (expected " + expected_names() + ")");
}

caf::expected<adapter_ptr> select_adapter(const adapter_sources& src, const adapter_options& opts) {
  std::string name;
  if (auto env = std::getenv(adapter_env_var); env && *env) {
    name = env;
    if (!known(name))
      return make_error(errc::invalid_config, std::string(adapter_env_var) + ": unknown adapter \""
                                                + name + "\" (expected " + expected_names() + ")");
  } else if (!opts.name.empty()) {
    name = opts.name;
    if (!known(name))
      return make_error(errc::invalid_config, "unknown adapter \"" + name + "\" (expected "
                                                + expected_names() + ")");
  } else {
    name = src.pool ? "python_pool" : src.single ? "python_port" : "mock";
  }
  if (!opts.fallback || name == "mock")
    return make_adapter(name, src, opts.timeout);
  // The chosen level always comes first (without its node it answers
  // `unavailable`, so replies come from below and are marked degraded); the
  // single level joins only when there is a single-mode node; mock is last.
  std::vector<adapter_ptr> levels;
  auto first = name == "python_pool" ? make_python_pool_adapter(src.pool, opts.timeout)
                                     : make_python_port_adapter(src.single, opts.timeout);
  if (!first)
    return first.error();
  levels.push_back(std::move(*first));
  if (name == "python_pool" && src.single) {
    auto port = make_python_port_adapter(src.single, opts.timeout);
    if (!port)
      return port.error();
    levels.push_back(std::move(*port));
  }
  levels.push_back(make_mock_adapter());
  return make_fallback_adapter(std::move(levels));
}

} // namespace dspex
