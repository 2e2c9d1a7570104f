// The fallback cascade (DSPex phase 2's FallbackStrategy): pool -> single ->
// mock. Semantics at the top of adapter.hpp. No lock is held while a level
// runs a request, so concurrent callers go through the cascade concurrently;
// the lock guards only the replay bookkeeping, which is the same
// session_book the session registry keeps for pools (session_state.hpp):
// each level is a "worker" that has seen some versions of each session.
#include <dspex/actors/adapters/adapter.hpp>
#include <dspex/actors/session/detail/session_state.hpp>

#include <functional>
#include <map>
#include <mutex>

namespace dspex {

namespace {

// The book's name for this cascade's default LM (the adapters' configure_lm
// has no session: it sets the default).
constexpr const char* book_pool = "fallback";

// A command of the book, run through the adapter interface.
caf::expected<json> call(adapter& a, const command_request& c) {
  auto sid = c.session_id.value_or("");
  auto pid = c.args.value("program_id", std::string());
  if (c.command == "configure_lm")
    return a.configure_lm(c.args);
  if (c.command == "create_program")
    return a.create_program(sid, c.args);
  if (c.command == "delete_program")
    return a.delete_program(sid, pid);
  if (c.command == "execute_program")
    return a.execute_program(sid, pid, c.args.value("inputs", json::object()));
  if (c.command == "list_programs")
    return a.list_programs(sid);
  return make_error(errc::invalid_request, "no adapter call for command " + c.command);
}

class fallback_adapter final : public adapter {
public:
  explicit fallback_adapter(std::vector<adapter_ptr> levels)
    : levels_(std::move(levels)), default_seen_(levels_.size(), 0), seen_(levels_.size()) {}

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
    // Ids are chosen by the book, not by a level, so that a definition
    // replayed onto another level keeps its id.
    return cascade(make_command("create_program", std::move(args), session));
  }

  caf::expected<json> execute_program(const std::string& session, const std::string& program_id,
                                      json inputs) override {
    return cascade(make_command("execute_program",
                                json{{"program_id", program_id},
                                     {"inputs", inputs.is_null() ? json::object() : inputs}},
                                session));
  }

  caf::expected<json> list_programs(const std::string& session) override {
    return cascade(make_command("list_programs", json::object(), session));
  }

  caf::expected<json> delete_program(const std::string& session,
                                     const std::string& program_id) override {
    // Copies on other levels go when those levels are next used (replay).
    return cascade(make_command("delete_program", json{{"program_id", program_id}}, session));
  }

  caf::expected<json> configure_lm(json args) override {
    // Kept once a level accepted it; the others catch up when next used.
    return cascade(make_command("configure_lm", std::move(args)));
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
  // Tries each level in turn while the errors say "this level cannot serve".
  caf::expected<json> cascade(command_request req) {
    caf::error reason;
    for (std::size_t i = 0;; ++i) {
      auto r = attempt(i, req);
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

  // Level i first gets what it has not seen of the session (and of the
  // default LM), then the request. A "cannot serve" error moves the cascade
  // on, and what the request changed is undone until a level takes it; any
  // other replay error is left for the request itself to meet.
  caf::expected<json> attempt(std::size_t i, command_request& req) {
    session_plan plan;
    {
      std::lock_guard<std::mutex> guard(mx_);
      auto& seen = seen_[i];
      auto sid = req.session_id.value_or("");
      auto it = seen.find(sid);
      plan = book_.prepare(book_pool, req, {it == seen.end() ? 0 : it->second, default_seen_[i]});
    }
    req = plan.request;  // with the id the book chose, for the next level too
    auto settle = [&](bool ok, bool served) {
      std::lock_guard<std::mutex> guard(mx_);
      book_.settle(plan.change, ok);
      if (served) {
        default_seen_[i] = plan.seen.defaults;
        if (plan.seen.session > 0)
          seen_[i][req.session_id.value_or("")] = plan.seen.session;
      }
    };
    for (auto& c : plan.replay) {
      auto r = call(*levels_[i], c);
      if (!r && degrades(r.error())) {
        settle(false, false);
        return r.error();
      }
    }
    auto r = call(*levels_[i], plan.request);
    settle(static_cast<bool>(r), r || !degrades(r.error()));
    return r;
  }

  json mark(json result, std::size_t level, const caf::error& reason) {
    if (!result.is_object())
      result = json{{"result", std::move(result)}};
    result["degraded"] = true;
    result["adapter"] = levels_[level]->name();
    result["degraded_reason"] = describe(reason);
    return result;
  }

  const std::vector<adapter_ptr> levels_;
  std::mutex mx_;
  // -- replay state, all under mx_ ---
  session_book book_;
  std::vector<std::uint64_t> default_seen_;                   // per level
  std::vector<std::map<std::string, std::uint64_t>> seen_;    // per level: session -> version
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
