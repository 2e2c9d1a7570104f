#include <dspex/actors/session/session_registry.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/session/detail/session_state.hpp>

#include <caf/all.hpp>

#include <map>
#include <set>

namespace dspex {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

struct session {
  clock_type::time_point created = clock_type::now();
  clock_type::time_point last_seen = clock_type::now();
  std::uint64_t requests = 0;
};

struct registry_state {
  session_registry_config cfg;
  std::map<std::string, session> sessions;
  session_book book;  // what each session built: programs, LM (session_state.hpp)
  std::map<caf::actor_addr, caf::actor> pools;
  std::uint64_t created = 0, ended = 0, expired = 0, refused = 0;
  static inline const char* name = "dspex.session_registry";
};

using registry_actor = caf::stateful_actor<registry_state>;

void end_session(registry_actor* self, const std::string& sid) {
  self->state.sessions.erase(sid);
  self->state.book.end(sid);
  for (auto& [addr, pool] : self->state.pools)
    self->send(pool, cleanup_atom::value, sid);
}

session& touch(registry_actor* self, const std::string& sid) {
  auto [it, fresh] = self->state.sessions.try_emplace(sid);
  if (fresh)
    ++self->state.created;
  it->second.last_seen = clock_type::now();
  return it->second;
}

// Whether `sid` may be used: it exists, or one more fits under the cap.
// A refusal is counted and named.
caf::error admit(registry_actor* self, const std::string& sid) {
  auto& st = self->state;
  if (st.sessions.size() < st.cfg.max_sessions || st.sessions.count(sid))
    return {};
  ++st.refused;
  return make_error(errc::resource_exhausted,
                    "session '" + sid + "' refused: max_sessions (" + std::to_string(st.cfg.max_sessions)
                      + ") sessions are live; one must end or expire first");
}

caf::behavior registry_impl(registry_actor* self, session_registry_config cfg) {
  self->state.cfg = cfg;
  self->set_down_handler([self](caf::down_msg& dm) { self->state.pools.erase(dm.source); });
  if (cfg.sweep_interval.count() > 0)
    self->delayed_send(self, cfg.sweep_interval, sweep_atom::value);
  return {
    [self](sess_new_atom, const std::string& sid) -> caf::result<void> {
      if (self->state.sessions.count(sid))
        return make_error(errc::duplicate_session, "session '" + sid + "' exists already");
      if (auto err = admit(self, sid))
        return err;
      touch(self, sid);
      return caf::unit;
    },
    [self](sess_use_atom, const std::string& sid) -> caf::result<void> {
      if (auto err = admit(self, sid))
        return err;
      ++touch(self, sid).requests;
      return caf::unit;
    },
    [self](touch_atom, const std::string& sid) {
      // From a sender that knew the session; one gone meanwhile is created
      // again only below the cap (nobody to refuse: the request runs).
      auto& st = self->state;
      if (st.sessions.size() < st.cfg.max_sessions || st.sessions.count(sid))
        ++touch(self, sid).requests;
    },
    [self](sess_end_atom, const std::string& sid) -> caf::result<void> {
      if (!self->state.sessions.count(sid))
        return make_error(errc::unknown_session, "no session '" + sid + "'");
      ++self->state.ended;
      end_session(self, sid);
      return caf::unit;
    },
    [self](sess_list_atom) -> json {
      auto now = clock_type::now();
      json out = json::array();
      for (auto& [sid, s] : self->state.sessions)
        out.push_back({{"id", sid},
                       {"created_ms_ago", duration_cast<milliseconds>(now - s.created).count()},
                       {"idle_ms", duration_cast<milliseconds>(now - s.last_seen).count()},
                       {"requests", s.requests},
                       {"programs", self->state.book.programs(sid)},
                       {"lm", self->state.book.lm_name(sid)}});
      return out;
    },
    [self](stats_atom) -> json {
      auto& st = self->state;
      auto programs = st.book.programs();
      return json{{"sessions", st.sessions.size()}, {"max_sessions", st.cfg.max_sessions},
                  {"created", st.created},       {"ended", st.ended},
                  {"expired", st.expired},       {"refused", st.refused},
                  {"programs", programs},        {"ttl_ms", st.cfg.ttl.count()}};
    },
    [self](prepare_atom, const std::string& pool, command_request& req,
           seen_versions seen) -> caf::result<session_plan> {
      // The pool's one hook before dispatch; a request in a session also
      // counts as seeing it, and a new session must fit under the cap.
      if (req.session_id) {
        if (auto err = admit(self, *req.session_id))
          return err;
        ++touch(self, *req.session_id).requests;
      }
      auto sid = req.session_id;
      auto changes = session_book::changes(req);
      auto plan = self->state.book.prepare(pool, std::move(req), seen);
      // Every pool may skip prepare for a worker that has seen the latest
      // versions it knows of (pool.cpp): a change is pushed to all of them
      // before the plan is answered, so no pool acts on an older version
      // once a client can have heard of the change.
      if (changes && plan.change != 0)
        for (auto& [addr, p] : self->state.pools)
          self->send(p, versions_atom::value, pool, sid,
                     sid ? plan.seen.session : plan.seen.defaults);
      return plan;
    },
    [self](settle_atom, std::uint64_t change, bool ok) { self->state.book.settle(change, ok); },
    [self](pool_up_atom, const std::string& name, const json& default_lm) {
      self->state.book.set_pool_default(name, default_lm);
      auto pool = caf::actor_cast<caf::actor>(self->current_sender());
      if (!pool)
        return;
      self->monitor(pool);
      self->state.pools.emplace(pool.address(), pool);
    },
    [self](sweep_atom) {
      auto& st = self->state;
      auto now = clock_type::now();
      std::vector<std::string> stale;
      for (auto& [sid, s] : st.sessions)
        if (now - s.last_seen > st.cfg.ttl)
          stale.push_back(sid);
      for (auto& sid : stale) {
        ++st.expired;
        end_session(self, sid);
      }
      self->delayed_send(self, st.cfg.sweep_interval, sweep_atom::value);
    },
  };
}

} // namespace

caf::actor spawn_session_registry(caf::local_actor* ctx, session_registry_config cfg) {
  return ctx->spawn(registry_impl, cfg);
}

caf::actor spawn_session_registry(caf::actor_system& sys, session_registry_config cfg) {
  return sys.spawn(registry_impl, cfg);
}

} // namespace dspex
