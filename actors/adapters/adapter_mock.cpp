// The mock adapter: the worker's program commands and mock LM in C++, with
// no Python. It follows python/dspex_worker/programs.py and lm.py closely
// (same checks in the same order, same exception types and messages, same
// result objects), so code written against the mock runs unchanged on the
// Python adapters. Outputs are those of the worker's MockLM, parsed back
// through the worker's "field: value" reader: equal inputs give equal
// outputs, on the mock and on a Python worker alike.
#include <dspex/actors/adapters/adapter.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>

namespace dspex {

namespace {

// -- Python's view of values (for messages and the mock LM's text) ------------

// A Python exception: becomes python_error {type, message} at the boundary.
struct py_exception {
  std::string type;
  std::string message;
};

[[noreturn]] void raise(std::string type, std::string message) {
  throw py_exception{std::move(type), std::move(message)};
}

// repr() of a str.
std::string py_repr(const std::string& s) {
  char q = (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == static_cast<unsigned char>(q)) {
          out += '\\';
          out += static_cast<char>(c);
        } else if (c < 0x20 || c == 0x7f) {
          static const char* hex = "0123456789abcdef";
          out += "\\x";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + q;
}

// json.dumps(v, ensure_ascii=False): ", " and ": " separators. nlohmann keeps
// object keys sorted, which is also what sort_keys=True gives.
std::string py_dumps(const json& v) {
  auto scalar = [](const json& x) { return x.dump(-1, ' ', false, json::error_handler_t::replace); };
  if (v.is_object()) {
    std::string out = "{";
    bool first = true;
    for (auto& [k, x] : v.items()) {
      out += (first ? "" : ", ") + scalar(json(k)) + ": " + py_dumps(x);
      first = false;
    }
    return out + "}";
  }
  if (v.is_array()) {
    std::string out = "[";
    bool first = true;
    for (auto& x : v) {
      out += (first ? "" : ", ") + py_dumps(x);
      first = false;
    }
    return out + "]";
  }
  return scalar(v);
}

// repr() of a value decoded from JSON.
std::string py_repr(const json& v) {
  if (v.is_string())
    return py_repr(v.get<std::string>());
  if (v.is_null())
    return "None";
  if (v.is_boolean())
    return v.get<bool>() ? "True" : "False";
  return py_dumps(v);
}

bool py_falsy(const json& v) {
  if (v.is_null())
    return true;
  if (v.is_boolean())
    return !v.get<bool>();
  if (v.is_number_integer())
    return v.get<long long>() == 0;
  if (v.is_number())
    return v.get<double>() == 0.0;
  if (v.is_string() || v.is_array() || v.is_object())
    return v.empty();
  return false;
}

// dict.get(key), None when absent.
json get(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? json() : *it;
}

std::string strip(const std::string& s) {
  static const char* ws = " \t\n\r\v\f";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos)
    return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// str.isidentifier(), with any non-ASCII byte counted as a letter.
bool is_identifier(const std::string& s) {
  if (s.empty())
    return false;
  auto c0 = static_cast<unsigned char>(s[0]);
  if (!(std::isalpha(c0) || c0 == '_' || c0 >= 0x80))
    return false;
  return std::all_of(s.begin(), s.end(), [](char ch) {
    auto c = static_cast<unsigned char>(ch);
    return std::isalnum(c) || c == '_' || c >= 0x80;
  });
}

double now_s() {
  using namespace std::chrono;
  return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
}

// -- signatures (programs.py: Field, Signature) ----------------------------------

struct field {
  std::string name;
  std::string description;
  std::optional<std::string> type;

  json to_json() const {
    json j{{"name", name}, {"description", description}};
    if (type)
      j["type"] = *type;
    return j;
  }
};

const std::string& check_name(const json& name) {
  if (!name.is_string() || !is_identifier(name.get_ref<const std::string&>()))
    raise("ValueError", "signature field name " + py_repr(name) + " is not an identifier");
  return name.get_ref<const std::string&>();
}

struct signature {
  std::vector<field> inputs;
  std::vector<field> outputs;

  void validate() const {
    if (outputs.empty())
      raise("ValueError", "signature needs at least one output field");
    std::set<std::string> seen;
    for (auto* list : {&inputs, &outputs})
      for (auto& f : *list)
        if (!seen.insert(f.name).second)
          raise("ValueError", "signature field " + py_repr(f.name) + " appears twice");
  }

  json to_json() const {
    json in = json::array(), out = json::array();
    for (auto& f : inputs)
      in.push_back(f.to_json());
    for (auto& f : outputs)
      out.push_back(f.to_json());
    return {{"inputs", in}, {"outputs", out}};
  }
};

std::vector<field> parse_string_fields(const std::string& text) {
  std::vector<field> fields;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto comma = text.find(',', start);
    auto part = strip(text.substr(start, comma == std::string::npos ? std::string::npos
                                                                     : comma - start));
    start = comma == std::string::npos ? text.size() + 1 : comma + 1;
    if (part.empty())
      continue;
    auto colon = part.find(':');
    auto name = strip(part.substr(0, colon));
    std::optional<std::string> type;
    if (colon != std::string::npos) {
      auto t = strip(part.substr(colon + 1));
      if (!t.empty())
        type = t;
    }
    check_name(json(name));
    fields.push_back({name, "", type});
  }
  return fields;
}

std::vector<field> parse_field_list(const json& items, const char* key) {
  if (!items.is_array())
    raise("TypeError", std::string("signature '") + key + "' must be a list of fields");
  std::vector<field> fields;
  for (auto& item : items) {
    if (item.is_string()) {
      fields.push_back({check_name(item), "", std::nullopt});
      continue;
    }
    if (!item.is_object())
      raise("TypeError", std::string("signature '") + key + "' entries must be names or objects");
    auto description = get(item, "description");
    if (py_falsy(description))
      description = "";
    if (!description.is_string())
      raise("TypeError",
            "description of field " + py_repr(get(item, "name")) + " must be a string");
    auto type = get(item, "type");
    field f;
    f.description = description.get<std::string>();
    if (type.is_string())
      f.type = type.get<std::string>();
    f.name = check_name(get(item, "name"));
    fields.push_back(std::move(f));
  }
  return fields;
}

signature parse_signature(const json& spec) {
  signature sig;
  if (spec.is_string()) {
    auto& text = spec.get_ref<const std::string&>();
    std::size_t arrows = 0;
    for (auto p = text.find("->"); p != std::string::npos; p = text.find("->", p + 2))
      ++arrows;
    if (arrows != 1)
      raise("ValueError", "signature " + py_repr(text) + " must contain exactly one '->'");
    auto arrow = text.find("->");
    sig.inputs = parse_string_fields(text.substr(0, arrow));
    sig.outputs = parse_string_fields(text.substr(arrow + 2));
  } else if (spec.is_object()) {
    sig.inputs = parse_field_list(spec.contains("inputs") ? spec["inputs"] : json::array(), "inputs");
    sig.outputs = parse_field_list(get(spec, "outputs"), "outputs");
  } else {
    raise("TypeError", "signature must be a string like \"question -> answer\" or an object "
                       "with \"inputs\" and \"outputs\"");
  }
  sig.validate();
  return sig;
}

// -- the mock LM (lm.py: MockLM) and the reply reader (programs.py) --------------

struct mock_lm {
  std::string provider;
  std::string model;
  json responses = json::object();
  json script = json::array();  // lm.py: step k answers a prompt holding k "Observation:"

  std::string name() const { return "mock/" + model; }

  std::string complete(const json& inputs, const std::vector<field>& outputs) const {
    auto inputs_json = py_dumps(inputs);
    auto answers = responses;
    if (!script.empty()) {
      std::size_t step = 0;
      for (auto at = inputs_json.find("Observation:"); at != std::string::npos;
           at = inputs_json.find("Observation:", at + 1))
        ++step;
      answers.update(script[std::min(step, script.size() - 1)]);
    }
    std::string text;
    for (auto& f : outputs) {
      auto v = get(answers, f.name.c_str());
      std::string value;
      if (v.is_null())
        value = "mock " + f.name + " for " + inputs_json;
      else if (v.is_string())
        value = v.get<std::string>();
      else
        value = py_dumps(v);
      text += (text.empty() ? "" : "\n") + f.name + ": " + value;
    }
    return text;
  }
};

// str.splitlines() for \n, \r\n and \r: no empty line after a final break.
std::vector<std::string> splitlines(const std::string& t) {
  std::vector<std::string> out;
  std::size_t start = 0, i = 0;
  while (i < t.size()) {
    if (t[i] == '\n' || t[i] == '\r') {
      out.push_back(t.substr(start, i - start));
      if (t[i] == '\r' && i + 1 < t.size() && t[i + 1] == '\n')
        ++i;
      start = ++i;
    } else {
      ++i;
    }
  }
  if (start < t.size())
    out.push_back(t.substr(start));
  return out;
}

// programs.parse_outputs: "field: value" lines; later lines continue a value.
json parse_outputs(const std::string& text, const std::vector<field>& outputs) {
  static const std::regex line_re(R"(^\s*\**\s*([A-Za-z_]\w*)\s*\**\s*:\s?(.*)$)");
  std::set<std::string> wanted;
  for (auto& f : outputs)
    wanted.insert(f.name);
  std::map<std::string, std::vector<std::string>> collected;
  std::string current;
  for (auto& line : splitlines(text)) {
    std::smatch m;
    if (std::regex_match(line, m, line_re) && wanted.count(m[1].str())
        && !collected.count(m[1].str())) {
      current = m[1].str();
      collected[current] = {m[2].str()};
    } else if (!current.empty()) {
      collected[current].push_back(line);
    }
  }
  json out = json::object();
  std::vector<std::string> missing;
  for (auto& f : outputs) {
    auto it = collected.find(f.name);
    if (it == collected.end()) {
      missing.push_back(f.name);
      continue;
    }
    std::string joined;
    for (std::size_t i = 0; i < it->second.size(); ++i)
      joined += (i ? "\n" : "") + it->second[i];
    out[f.name] = strip(joined);
  }
  if (!missing.empty()) {
    if (outputs.size() == 1)
      return json{{outputs[0].name, strip(text)}};
    std::string names;
    for (auto& n : missing)
      names += (names.empty() ? "" : ", ") + n;
    raise("ValueError", "LM reply lacks output field(s) " + names + ": "
                          + py_repr(text.substr(0, 200)));
  }
  return out;
}

// -- storage (programs.py: Program, ProgramStore) ----------------------------------

struct program {
  std::string program_id;
  std::string session_id;  // "" is the global namespace (None)
  signature sig;
  std::string description;
  double created_at = 0;
  long long executions = 0;
  std::optional<double> last_executed_at;

  json info() const {
    return {{"program_id", program_id},
            {"session_id", session_id.empty() ? json() : json(session_id)},
            {"signature", sig.to_json()},
            {"description", description},
            {"created_at", created_at},
            {"executions", executions},
            {"last_executed_at", last_executed_at ? json(*last_executed_at) : json()}};
  }
};

std::string describe_session(const std::string& sid) {
  return sid.empty() ? "the global namespace" : "session " + py_repr(sid);
}

const std::string& program_id_arg(const std::string& id) {
  if (id.empty())
    raise("ValueError", "program_id must be a non-empty string");
  return id;
}

std::string opt_str(const json& args, const char* key, std::string fallback) {
  auto v = get(args, key);
  if (v.is_null())
    return fallback;
  if (!v.is_string() || v.get_ref<const std::string&>().empty())
    raise("TypeError", std::string(key) + " must be a non-empty string");
  return v.get<std::string>();
}

void opt_number(const json& args, const char* key) {
  auto v = get(args, key);
  if (!v.is_null() && !v.is_number())
    raise("TypeError", std::string(key) + " must be a number");
}

// check_args of registry.py: an argument key the command does not take is
// refused first, with the worker's message; the worker's error type
// invalid_args is the caller's invalid_request (reply_error, error.hpp).
caf::error unknown_args(const std::string& command, const json& args,
                        const std::set<std::string>& accepted,
                        const std::map<std::string, std::string>& hints = {}) {
  std::set<std::string> unknown;
  for (auto& [k, v] : args.items())
    if (!accepted.count(k))
      unknown.insert(k);
  if (unknown.empty())
    return {};
  std::string names;
  for (auto& k : unknown)
    names += (names.empty() ? "" : ", ") + py_repr(k);
  auto message = command + ": unknown argument" + (unknown.size() == 1 ? " " : "s ") + names;
  for (auto& k : unknown)
    if (auto h = hints.find(k); h != hints.end())
      message += " (use " + py_repr(h->second) + " instead of " + py_repr(k) + ")";
  std::string list;
  for (auto& k : accepted)
    list += (list.empty() ? "" : ", ") + k;
  message += "; accepted: " + list;
  return make_error(errc::invalid_request, message);
}

// The keys of lm.py's CONFIGURE_LM_ARGS and CONFIGURE_LM_HINTS, and of
// programs.py's CREATE_ARGS.
const std::set<std::string> configure_lm_args{
  "provider", "model", "responses", "latency_ms", "script", "api_key",
  "base_url", "temperature", "max_tokens", "timeout_s", "timeout"};
const std::map<std::string, std::string> configure_lm_hints{
  {"api_base", "base_url"}, {"openai_api_base", "base_url"},
  {"openai_api_key", "api_key"}, {"max_completion_tokens", "max_tokens"}};
const std::set<std::string> create_program_args{"signature", "description", "id",
                                                "program_id", "replace"};

class mock_adapter final : public adapter {
public:
  std::string name() const override { return "mock"; }

  caf::expected<json> create_program(const std::string& session, json args) override {
    return guarded([&] {
      if (args.is_null())
        args = json::object();
      if (!args.is_object())
        return caf::expected<json>{
          make_error(errc::invalid_request, "create_program args must be a JSON object")};
      if (auto e = unknown_args("create_program", args, create_program_args))
        return caf::expected<json>{std::move(e)};
      if (!args.contains("signature"))
        raise("ValueError", "create_program needs a \"signature\"");
      auto sig = parse_signature(args["signature"]);
      auto description = get(args, "description");
      if (py_falsy(description))
        description = "";
      if (!description.is_string())
        raise("TypeError", "description must be a string");
      auto id = args.contains("id") ? args["id"] : get(args, "program_id");
      if (!id.is_null() && (!id.is_string() || id.get_ref<const std::string&>().empty()))
        raise("ValueError", "program id must be a non-empty string");
      std::lock_guard<std::mutex> guard(mx_);
      auto& programs = sessions_[session];
      std::string pid;
      if (id.is_null()) {
        // As ProgramStore.new_id: skip ids a client chose itself.
        do
          pid = "prog_" + std::to_string(++generated_);
        while (find(programs, pid) != programs.end());
      } else {
        pid = id.get<std::string>();
      }
      if (find(programs, pid) != programs.end())
        raise("ValueError", "Program with ID " + py_repr(pid) + " already exists in "
                              + describe_session(session));
      program p{pid, session, sig, description.get<std::string>(), now_s(), 0, std::nullopt};
      programs.push_back(std::move(p));
      return caf::expected<json>{
        json{{"program_id", pid}, {"status", "created"}, {"signature", sig.to_json()}}};
    });
  }

  caf::expected<json> execute_program(const std::string& session, const std::string& program_id,
                                      json inputs) override {
    return guarded([&] {
      std::lock_guard<std::mutex> guard(mx_);
      auto& p = lookup(session, program_id_arg(program_id));
      if (inputs.is_null())
        inputs = json::object();
      if (!inputs.is_object())
        raise("TypeError", "inputs must be an object mapping field -> value");
      std::string missing;
      for (auto& f : p.sig.inputs)
        if (!inputs.contains(f.name))
          missing += (missing.empty() ? "" : ", ") + f.name;
      if (!missing.empty())
        raise("ValueError", "missing input field(s) for program " + py_repr(p.program_id) + ": "
                              + missing);
      if (!lm_)
        raise("RuntimeError", "No LM is loaded");
      // Only declared inputs reach the LM, so extras cannot change the answer.
      json declared = json::object();
      for (auto& f : p.sig.inputs)
        declared[f.name] = inputs[f.name];
      auto outputs = parse_outputs(lm_->complete(declared, p.sig.outputs), p.sig.outputs);
      ++p.executions;
      p.last_executed_at = now_s();
      ++lm_calls_;
      return caf::expected<json>{
        json{{"outputs", outputs}, {"program_id", p.program_id}, {"lm", lm_->name()}}};
    });
  }

  caf::expected<json> list_programs(const std::string& session) override {
    return guarded([&] {
      std::lock_guard<std::mutex> guard(mx_);
      json list = json::array();
      auto it = sessions_.find(session);
      if (it != sessions_.end())
        for (auto& p : it->second)
          list.push_back(p.info());
      auto n = list.size();
      return caf::expected<json>{json{{"programs", std::move(list)}, {"total_count", n}}};
    });
  }

  caf::expected<json> delete_program(const std::string& session,
                                     const std::string& program_id) override {
    return guarded([&] {
      std::lock_guard<std::mutex> guard(mx_);
      auto& p = lookup(session, program_id_arg(program_id));
      auto pid = p.program_id;
      auto& programs = sessions_[session];
      programs.erase(find(programs, pid));
      drop_if_empty(session);
      return caf::expected<json>{json{{"deleted", true}, {"program_id", pid}}};
    });
  }

  caf::expected<json> configure_lm(json args) override {
    return guarded([&] {
      if (args.is_null())
        args = json::object();
      if (!args.is_object())
        return caf::expected<json>{
          make_error(errc::invalid_request, "configure_lm args must be a JSON object")};
      if (auto e = unknown_args("configure_lm", args, configure_lm_args, configure_lm_hints))
        return caf::expected<json>{std::move(e)};
      auto provider = args.contains("provider") ? args["provider"] : json("mock");
      mock_lm lm;
      if (provider == "mock") {
        lm.model = opt_str(args, "model", "mock");
      } else if (provider == "openai") {
        // Validated as the worker would; answered by the mock LM all the same
        // (the point of the mock, and of a degraded cascade, is no network).
        lm.model = opt_str(args, "model", "gpt-4o-mini");
        opt_str(args, "base_url", "x");
        for (auto key : {"temperature", "max_tokens", "timeout_s", "timeout"})
          opt_number(args, key);
      } else {
        raise("ValueError", "unknown LM provider " + py_repr(provider)
                              + " (expected 'mock' or 'openai')");
      }
      auto responses = get(args, "responses");
      if (provider == "mock" && !responses.is_null()) {
        if (!responses.is_object())
          raise("TypeError", "responses must be an object mapping output field -> text");
        lm.responses = responses;
      }
      auto script = get(args, "script");
      if (provider == "mock" && !script.is_null()) {
        bool ok = script.is_array() && !script.empty();
        for (auto& s : script)
          ok = ok && s.is_object();
        if (!ok)
          raise("TypeError", "script must be a non-empty list of objects mapping output field -> text");
        lm.script = script;
      }
      lm.provider = provider.get<std::string>();
      std::lock_guard<std::mutex> guard(mx_);
      lm_ = lm;
      return caf::expected<json>{json{{"status", "configured"},
                                      {"provider", lm.provider},
                                      {"model", lm.model},
                                      {"backend", lm.provider == "mock" ? "builtin" : "mock"}}};
    });
  }

  caf::expected<json> health() override {
    std::lock_guard<std::mutex> guard(mx_);
    std::size_t count = 0;
    for (auto& [sid, programs] : sessions_)
      count += programs.size();
    return json{{"status", "ok"},
                {"adapter", "mock"},
                {"programs", count},
                {"sessions", sessions_.size()},
                {"lm", lm_ ? json(lm_->name()) : json()},
                {"lm_calls", lm_calls_}};
  }

private:
  template <class F>
  caf::expected<json> guarded(F&& f) {
    try {
      return f();
    } catch (py_exception& e) {
      return make_python_error({e.type, e.message, ""});
    } catch (std::exception& e) {  // nlohmann type errors and the like: a bug, still classified
      return make_python_error({"Exception", e.what(), ""});
    }
  }

  static std::vector<program>::iterator find(std::vector<program>& ps, const std::string& pid) {
    return std::find_if(ps.begin(), ps.end(), [&](const program& p) { return p.program_id == pid; });
  }

  // Must hold mx_.
  program& lookup(const std::string& session, const std::string& pid) {
    auto s = sessions_.find(session);
    if (s != sessions_.end()) {
      auto it = find(s->second, pid);
      if (it != s->second.end())
        return *it;
    }
    raise("KeyError", "program " + py_repr(pid) + " not found in " + describe_session(session));
  }

  void drop_if_empty(const std::string& session) {
    auto s = sessions_.find(session);
    if (s != sessions_.end() && s->second.empty())
      sessions_.erase(s);
  }

  std::mutex mx_;
  // session ("" = global) -> programs in creation order
  std::map<std::string, std::vector<program>> sessions_;
  std::uint64_t generated_ = 0;
  std::optional<mock_lm> lm_;
  std::uint64_t lm_calls_ = 0;
};

} // namespace

adapter_ptr make_mock_adapter() {
  return std::make_shared<mock_adapter>();
}

} // namespace dspex
