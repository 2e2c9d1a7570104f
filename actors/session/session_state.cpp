#include <dspex/actors/session/detail/session_state.hpp>

#include <algorithm>

namespace dspex {

namespace {

// The DSPy commands whose effects outlive a worker.
constexpr const char* configure_lm = "configure_lm";
constexpr const char* create_program = "create_program";
constexpr const char* delete_program = "delete_program";

json program_id_of(const json& args) {
  if (args.contains("id"))
    return args["id"];
  return args.value("program_id", json());
}

} // namespace

json session_book::redact(const json& lm) {
  if (!lm.is_object())
    return json();
  json out = json::object();
  for (auto key : {"provider", "model"})
    if (lm.contains(key) && lm[key].is_string())
      out[key] = lm[key];
  return out;
}

bool session_book::changes(const command_request& req) {
  return req.command == configure_lm || req.command == create_program
         || req.command == delete_program;
}

void session_book::set_pool_default(const std::string& pool, const json& lm) {
  if (!lm.is_object())
    return;
  auto& d = defaults_[pool];
  if (d.lm.is_null()) {
    d.lm = lm;
    d.version = ++clock_;
  }
}

std::uint64_t session_book::record_change(const std::string& sid, record& r,
                                          command_request& req) {
  auto& args = req.args;
  if (req.command == configure_lm) {
    undo u{sid, {}, {}, r.lm, r.lm_version, std::nullopt};
    r.lm = args;
    r.lm_version = ++clock_;
    pending_.emplace(clock_, std::move(u));
    return clock_;
  }
  json pid;
  if (req.command == create_program) {
    pid = program_id_of(args);
    if (pid.is_null()) {
      // Chosen here, not by a worker, so that the definition is known under
      // the id the client gets back and replays keep it.
      std::string id;
      do
        id = "prog_" + std::to_string(++next_program_);
      while (r.programs.count(id) && !r.programs[id].deleted);
      args["id"] = id;
      pid = id;
    }
  } else if (req.command == delete_program) {
    pid = args.value("program_id", json());
  }
  if (!pid.is_string())
    return 0;
  auto id = pid.get<std::string>();
  auto it = r.programs.find(id);
  if (req.command == delete_program && (it == r.programs.end() || it->second.deleted))
    return 0;
  undo u{sid, {}, id, {}, 0, std::nullopt};
  if (it != r.programs.end())
    u.prog = it->second;
  if (req.command == create_program)
    r.programs[id] = program{args, ++clock_, false};
  else
    it->second = program{json(), ++clock_, true};
  pending_.emplace(clock_, std::move(u));
  return clock_;
}

void session_book::settle(std::uint64_t change, bool ok) {
  auto it = pending_.find(change);
  if (it == pending_.end())
    return;
  auto u = std::move(it->second);
  pending_.erase(it);
  if (ok)
    return;
  // Undone only while nothing changed the same thing since.
  if (u.sid.empty()) {
    auto d = defaults_.find(u.pool);
    if (d != defaults_.end() && d->second.version == change)
      d->second = pool_default{u.lm, u.lm_version};
    return;
  }
  auto s = sessions_.find(u.sid);
  if (s == sessions_.end())
    return;
  auto& r = s->second;
  if (u.pid.empty()) {
    if (r.lm_version == change) {
      r.lm = u.lm;
      r.lm_version = u.lm_version;
    }
    return;
  }
  auto p = r.programs.find(u.pid);
  if (p == r.programs.end() || p->second.version != change)
    return;
  if (u.prog)
    p->second = *u.prog;
  else
    r.programs.erase(p);
}

session_plan session_book::prepare(const std::string& pool, command_request req,
                                   seen_versions seen) {
  session_plan plan;
  bool configures = req.command == configure_lm && req.args.is_object();
  // The pool default: sessions without an LM of their own and anonymous
  // requests run on it, so every worker gets its current version once.
  auto& d = defaults_[pool];
  if (!req.session_id && configures) {
    pending_.emplace(clock_ + 1, undo{{}, pool, {}, d.lm, d.version, std::nullopt});
    d.lm = req.args;
    d.version = ++clock_;
    plan.change = clock_;
  } else if (d.version > seen.defaults && !d.lm.is_null()) {
    plan.replay.push_back(make_command(configure_lm, d.lm));
  }
  plan.seen.defaults = d.version;

  if (req.session_id && req.args.is_object()) {
    auto& sid = *req.session_id;
    auto it = sessions_.find(sid);
    bool changes = configures || req.command == create_program || req.command == delete_program;
    if (it == sessions_.end() && changes)
      it = sessions_.emplace(sid, record{}).first;
    if (it != sessions_.end()) {
      auto& r = it->second;
      // What the worker lacks from before this request, in version order
      // (map order is by id; versions only matter against `seen`).
      std::vector<std::pair<std::uint64_t, command_request>> missing;
      if (r.lm_version > seen.session && !configures)
        missing.emplace_back(r.lm_version, make_command(configure_lm, r.lm, sid));
      for (auto& [pid, p] : r.programs) {
        if (p.version <= seen.session)
          continue;
        if (!p.deleted) {
          auto def = p.def;
          def["replace"] = true;  // the worker may hold an older definition
          missing.emplace_back(p.version, make_command(create_program, std::move(def), sid));
        } else if (seen.session > 0) {  // a worker new to the session has none to drop
          missing.emplace_back(p.version,
                               make_command(delete_program, json{{"program_id", pid}}, sid));
        }
      }
      std::sort(missing.begin(), missing.end(),
                [](auto& a, auto& b) { return a.first < b.first; });
      for (auto& m : missing)
        plan.replay.push_back(std::move(m.second));
      plan.change = record_change(sid, r, req);
      std::uint64_t latest = r.lm_version;
      for (auto& [pid, p] : r.programs)
        latest = std::max(latest, p.version);
      plan.seen.session = latest;
    }
  }
  plan.request = std::move(req);
  return plan;
}

void session_book::end(const std::string& sid) {
  sessions_.erase(sid);
  for (auto it = pending_.begin(); it != pending_.end();)
    it = it->second.sid == sid ? pending_.erase(it) : std::next(it);
}

std::size_t session_book::programs(const std::string& sid) const {
  auto it = sessions_.find(sid);
  if (it == sessions_.end())
    return 0;
  std::size_t n = 0;
  for (auto& [pid, p] : it->second.programs)
    n += p.deleted ? 0 : 1;
  return n;
}

std::size_t session_book::programs() const {
  std::size_t n = 0;
  for (auto& [sid, r] : sessions_)
    n += programs(sid);
  return n;
}

json session_book::lm_name(const std::string& sid) const {
  auto it = sessions_.find(sid);
  if (it == sessions_.end() || it->second.lm.is_null())
    return json();
  auto shown = redact(it->second.lm);
  return shown.value("provider", "mock") + "/" + shown.value("model", "default");
}

} // namespace dspex
