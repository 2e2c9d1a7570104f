// The fallback cascade (DSPex phase 2's FallbackStrategy): pool -> single ->
// mock. Semantics at the top of adapter.hpp. No lock is held while a level
// runs a request, so concurrent callers go through the cascade concurrently;
// the lock guards only the replay bookkeeping.
#include <dspex/actors/adapter.hpp>

#include <functional>
#include <map>
#include <mutex>
#include <set>

namespace dspex {

namespace {

bool python_error_is(const caf::error& err, const char* type) {
  auto pe = python_error_of(err);
  return pe && pe->type == type;
}

class fallback_adapter final : public adapter {
public:
  explicit fallback_adapter(std::vector<adapter_ptr> levels)
    : levels_(std::move(levels)), lm_at_(levels_.size(), 0), created_(levels_.size()) {}

  std::string name() const override {
    std::string out;
    for (auto& l : levels_)
      out += (out.empty() ? "" : ">") + l->name();
    return out;
  }

  caf::expected<json> create_program(const std::string& session, json args) override {
    if (args.is_null())
      args = json::object();
    if (!args.is_object())
      return make_error(errc::invalid_request, "create_program args must be a JSON object");
    // Ids are chosen here, not by a level, so that a definition replayed onto
    // another level keeps its id and never collides with one chosen there.
    auto id = args.contains("id") ? args["id"] : args.value("program_id", json());
    if (id.is_null()) {
      std::lock_guard<std::mutex> guard(mx_);
      auto& defs = defs_[session];
      std::string pid;
      do
        pid = "prog_" + std::to_string(++generated_);
      while (find(defs, pid) != defs.end());
      args["id"] = pid;
      args.erase("program_id");
      if (defs.empty())
        defs_.erase(session);
    }
    return cascade([&](std::size_t i) -> caf::expected<json> {
      if (auto err = sync(i, session, false))
        return err;
      auto r = levels_[i]->create_program(session, args);
      if (r && r->is_object() && (*r)["program_id"].is_string()) {
        auto pid = (*r)["program_id"].get<std::string>();
        auto def = args;
        def.erase("program_id");
        def["id"] = pid;
        std::lock_guard<std::mutex> guard(mx_);
        auto& defs = defs_[session];
        auto it = find(defs, pid);
        if (it == defs.end())
          defs.emplace_back(pid, std::move(def));
        else
          it->second = std::move(def);
        created_[i][session].insert(pid);
      }
      return r;
    });
  }

  caf::expected<json> execute_program(const std::string& session, const std::string& program_id,
                                      json inputs) override {
    return cascade([&](std::size_t i) -> caf::expected<json> {
      if (auto err = sync(i, session, true))
        return err;
      return levels_[i]->execute_program(session, program_id, inputs);
    });
  }

  caf::expected<json> list_programs(const std::string& session) override {
    return cascade([&](std::size_t i) -> caf::expected<json> {
      if (auto err = sync(i, session, false))
        return err;
      return levels_[i]->list_programs(session);
    });
  }

  caf::expected<json> delete_program(const std::string& session,
                                     const std::string& program_id) override {
    return cascade([&](std::size_t i) -> caf::expected<json> {
      if (auto err = sync(i, session, false))
        return err;
      auto r = levels_[i]->delete_program(session, program_id);
      if (r) {
        // Copies on other levels go when those levels are next used (sync).
        std::lock_guard<std::mutex> guard(mx_);
        auto d = defs_.find(session);
        if (d != defs_.end()) {
          auto it = find(d->second, program_id);
          if (it != d->second.end())
            d->second.erase(it);
          if (d->second.empty())
            defs_.erase(d);
        }
        forget(i, session, program_id);
      }
      return r;
    });
  }

  caf::expected<json> configure_lm(json args) override {
    return cascade([&](std::size_t i) -> caf::expected<json> {
      auto r = levels_[i]->configure_lm(args);
      if (r) {
        // Remembered only once a level accepted it; the others catch up
        // before their next execute_program.
        std::lock_guard<std::mutex> guard(mx_);
        lm_ = args;
        lm_at_[i] = ++lm_gen_;
      }
      return r;
    });
  }

  caf::expected<json> health() override {
    json levels = json::array();
    std::optional<std::size_t> serving;
    caf::error first;
    for (std::size_t i = 0; i < levels_.size(); ++i) {
      auto h = levels_[i]->health();
      json entry{{"adapter", levels_[i]->name()}, {"healthy", static_cast<bool>(h)}};
      if (!h) {
        entry["error"] = describe(h.error());
        if (!first)
          first = h.error();
      } else if (!serving) {
        serving = i;
      }
      levels.push_back(std::move(entry));
    }
    if (!serving)
      return first;
    json out{{"status", *serving == 0 ? "ok" : "degraded"},
             {"adapter", levels_[*serving]->name()},
             {"cascade", name()},
             {"levels", std::move(levels)}};
    if (*serving > 0)
      out["degraded"] = true;
    return out;
  }

private:
  using definitions = std::vector<std::pair<std::string, json>>;  // creation order

  static definitions::iterator find(definitions& defs, const std::string& pid) {
    return std::find_if(defs.begin(), defs.end(), [&](auto& d) { return d.first == pid; });
  }

  // Tries each level in turn while the errors say "this level cannot serve".
  caf::expected<json> cascade(const std::function<caf::expected<json>(std::size_t)>& attempt) {
    caf::error reason;
    for (std::size_t i = 0;; ++i) {
      auto r = attempt(i);
      if (r) {
        if (i == 0)
          return r;
        return mark(std::move(*r), i, reason);
      }
      if (!degrades(r.error()) || i + 1 == levels_.size())
        return r;
      if (!reason)
        reason = r.error();
    }
  }

  json mark(json result, std::size_t level, const caf::error& reason) {
    if (!result.is_object())
      result = json{{"result", std::move(result)}};
    result["degraded"] = true;
    result["adapter"] = levels_[level]->name();
    result["degraded_reason"] = describe(reason);
    return result;
  }

  void forget(std::size_t level, const std::string& session, const std::string& pid) {
    auto s = created_[level].find(session);
    if (s == created_[level].end())
      return;
    s->second.erase(pid);
    if (s->second.empty())
      created_[level].erase(s);
  }

  // Brings level i up to date before it serves `session`: the last LM (when
  // it will execute), the session's programs it lacks, and no program that
  // was deleted elsewhere. A "cannot serve" error is returned so the cascade
  // moves on; any other error is left for the request itself to meet.
  caf::error sync(std::size_t i, const std::string& session, bool need_lm) {
    json lm;
    std::uint64_t gen = 0;
    definitions missing;
    std::vector<std::string> stale;
    {
      std::lock_guard<std::mutex> guard(mx_);
      if (need_lm && !lm_.is_null() && lm_at_[i] != lm_gen_) {
        lm = lm_;
        gen = lm_gen_;
      }
      auto& have = created_[i][session];
      auto d = defs_.find(session);
      if (d != defs_.end())
        for (auto& def : d->second)
          if (!have.count(def.first))
            missing.push_back(def);
      for (auto& pid : have)
        if (d == defs_.end() || find(d->second, pid) == d->second.end())
          stale.push_back(pid);
      if (have.empty())
        created_[i].erase(session);
    }
    if (!lm.is_null()) {
      auto r = levels_[i]->configure_lm(lm);
      if (!r && degrades(r.error()))
        return r.error();
      std::lock_guard<std::mutex> guard(mx_);
      if (lm_gen_ == gen)
        lm_at_[i] = gen;
    }
    for (auto& [pid, def] : missing) {
      auto r = levels_[i]->create_program(session, def);
      if (!r && degrades(r.error()))
        return r.error();
      if (r || python_error_is(r.error(), "ValueError")) {  // created, or there already
        std::lock_guard<std::mutex> guard(mx_);
        created_[i][session].insert(pid);
      }
    }
    for (auto& pid : stale) {
      auto r = levels_[i]->delete_program(session, pid);
      if (!r && degrades(r.error()))
        return r.error();
      std::lock_guard<std::mutex> guard(mx_);
      forget(i, session, pid);
    }
    return {};
  }

  const std::vector<adapter_ptr> levels_;
  std::mutex mx_;
  // -- replay state, all under mx_ ---
  json lm_;                          // the last accepted configure_lm args; null: none
  std::uint64_t lm_gen_ = 0;         // bumped by every accepted configure_lm
  std::vector<std::uint64_t> lm_at_; // per level: the generation it was configured with
  std::map<std::string, definitions> defs_;  // session -> live program definitions (with "id")
  std::vector<std::map<std::string, std::set<std::string>>> created_;  // per level: session -> ids there
  std::uint64_t generated_ = 0;
};

} // namespace

adapter_ptr make_fallback_adapter(std::vector<adapter_ptr> levels) {
  if (levels.size() == 1)
    return levels.front();
  if (levels.empty())
    return make_mock_adapter();
  return std::make_shared<fallback_adapter>(std::move(levels));
}

} // namespace dspex
