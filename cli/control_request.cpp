#include "control_request.hpp"

namespace dspex::cli {

namespace {

// A value as JSON text, short enough for a one-line error message.
std::string shown(const json& v) {
  auto text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60)
    text = text.substr(0, 57) + "...";
  return text;
}

// What was found: its type, and the value when the type alone is unclear.
std::string found(const json& v) {
  if (v.is_string() || v.is_object() || v.is_array())
    return std::string(v.type_name()) + " " + shown(v);
  return shown(v);
}

constexpr const char* known_ops =
  "\"status\", \"exec\", \"restart\", \"stop\", \"start\", \"scale\", \"reload\" or \"events\"";

// restart / stop / start {"path": "root/pool_sup/workers/w1"}: the shape of
// the path is checked here; whether it names a child, by the node.
bool parse_child_op(const json& req, const std::string& op, control_request& out,
                    std::string& error) {
  out.op = op == "restart" ? control_request::kind::restart
           : op == "stop"  ? control_request::kind::stop
                           : control_request::kind::start;
  auto p = req.find("path");
  if (p == req.end()) {
    error = "path: missing; " + op + " needs the child's path, as \"root/pool_sup/workers/w1\"";
    return false;
  }
  if (!p->is_string() || p->get_ref<const std::string&>().empty()) {
    error = "path: expected a non-empty string such as \"root/pool_sup/workers/w1\", found "
            + found(*p);
    return false;
  }
  auto& path = p->get_ref<const std::string&>();
  if (path.rfind("root/", 0) != 0 || path.size() == 5 || path.find("//") != std::string::npos
      || path.back() == '/') {
    error = "path: expected root/<child>[/<child>...], found " + shown(*p);
    return false;
  }
  out.path = path;
  return true;
}

// "pool": a name or null (the node's first pool), as exec takes it.
bool parse_pool(const json& req, control_request& out, std::string& error) {
  out.pool.clear();
  if (auto p = req.find("pool"); p != req.end()) {
    if (p->is_string() && !p->get_ref<const std::string&>().empty())
      out.pool = p->get<std::string>();
    else if (!p->is_null()) {
      error = "pool: expected a pool name (a non-empty string) or null, found " + found(*p);
      return false;
    }
  }
  return true;
}

// A pool's count field (`key`): a positive integer, whose range is the
// pool's to check (node::scale_pool, node::reload_pool). Absent: `missing`
// is the error, or, when empty, the field keeps its default.
bool parse_count(const json& req, const char* key, const std::string& missing, std::size_t& out,
                 std::string& error) {
  auto n = req.find(key);
  if (n == req.end() || (missing.empty() && n->is_null())) {
    if (missing.empty())
      return true;
    error = std::string(key) + ": missing; " + missing;
    return false;
  }
  if (!n->is_number_unsigned() || n->get<unsigned long long>() > (1ULL << 32)) {
    error = std::string(key) + ": expected a positive integer, found " + found(*n);
    return false;
  }
  out = n->get<std::size_t>();
  return true;
}

// scale {"pool": name|null, "size": N}
bool parse_scale(const json& req, control_request& out, std::string& error) {
  out.op = control_request::kind::scale;
  return parse_pool(req, out, error)
         && parse_count(req, "size", "scale needs the pool's new number of workers", out.size, error);
}

// reload {"pool": name|null, "surge": N (optional, 1)}
bool parse_reload(const json& req, control_request& out, std::string& error) {
  out.op = control_request::kind::reload;
  out.size = 1;
  return parse_pool(req, out, error) && parse_count(req, "surge", "", out.size, error);
}

} // namespace

std::string dump_line(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

json error_object(const caf::error& err) {
  auto code = code_of(err);
  if (!code)  // not a dspex error: CAF's own rendering, whole
    return {{"class", "error"}, {"message", describe(err)}};
  json j = {{"class", to_string(*code)}, {"message", detail_of(err)}};
  if (auto pe = python_error_of(err)) {
    j["message"] = pe->type.empty() ? pe->message : pe->type + ": " + pe->message;
    j["python"] = {{"type", pe->type}, {"message", pe->message}, {"traceback", pe->traceback}};
  }
  return j;
}

bool parse_control_request(const std::string& line, control_request& out, std::string& error,
                           std::size_t max_depth) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) {
    error = "empty request line; expected a JSON object such as {\"op\": \"status\"}";
    return false;
  }
  // Before the parse: a value that deep would be copied and printed below,
  // both recursively. The args sit one level inside the request object.
  if (bridge::text_depth_exceeds(line, bridge::envelope_depth(max_depth))) {
    error = "request nests deeper than max_json_depth allows (args may nest "
            + std::to_string(max_depth) + " levels of [ and {)";
    return false;
  }
  json req;
  try {
    req = json::parse(line);
  } catch (const json::exception& e) {
    error = std::string("request is not valid JSON: ") + e.what();
    return false;
  }
  if (!req.is_object()) {
    error = "request must be a JSON object, found " + found(req);
    return false;
  }
  auto op = req.find("op");
  if (op == req.end()) {
    error = std::string("op: missing; expected ") + known_ops;
    return false;
  }
  if (!op->is_string()) {
    error = std::string("op: expected one of the strings ") + known_ops + ", found " + found(*op);
    return false;
  }
  if (*op == "status") {
    out.op = control_request::kind::status;
    return true;
  }
  if (*op == "events") {
    out.op = control_request::kind::events;
    return true;
  }
  if (*op == "restart" || *op == "stop" || *op == "start")
    return parse_child_op(req, *op, out, error);
  if (*op == "scale")
    return parse_scale(req, out, error);
  if (*op == "reload")
    return parse_reload(req, out, error);
  if (*op != "exec") {
    error = "op: unknown op " + shown(*op) + "; expected " + known_ops;
    return false;
  }
  out.op = control_request::kind::exec;

  auto cmd = req.find("command");
  if (cmd == req.end()) {
    error = "command: missing; exec needs a non-empty string";
    return false;
  }
  if (!cmd->is_string() || cmd->get_ref<const std::string&>().empty()) {
    error = "command: expected a non-empty string, found " + found(*cmd);
    return false;
  }
  out.command = cmd->get<std::string>();

  out.args = json::object();
  if (auto a = req.find("args"); a != req.end()) {
    if (!a->is_object()) {
      error = "args: expected an object, found " + found(*a);
      return false;
    }
    out.args = std::move(*a);
  }

  out.session_id.reset();
  if (auto s = req.find("session_id"); s != req.end()) {
    if (s->is_string())
      out.session_id = s->get<std::string>();
    else if (!s->is_null()) {
      error = "session_id: expected a string or null, found " + found(*s);
      return false;
    }
  }

  out.timeout = std::chrono::milliseconds{0};
  if (auto t = req.find("timeout_ms"); t != req.end()) {
    bool ok = t->is_number_unsigned()
                ? t->get<unsigned long long>() <= static_cast<unsigned long long>(max_timeout_ms)
                : t->is_number_integer() && t->get<long long>() >= 0
                    && t->get<long long>() <= max_timeout_ms;
    if (!ok) {
      error = "timeout_ms: expected an integer in [0, " + std::to_string(max_timeout_ms)
              + "] (0: the pool's default), found " + found(*t);
      return false;
    }
    out.timeout = std::chrono::milliseconds{t->get<long long>()};
  }

  if (!parse_pool(req, out, error))
    return false;

  out.stream = false;
  if (auto s = req.find("stream"); s != req.end()) {
    if (!s->is_boolean()) {
      error = "stream: expected true or false, found " + found(*s);
      return false;
    }
    out.stream = s->get<bool>();
  }
  return true;
}

} // namespace dspex::cli
