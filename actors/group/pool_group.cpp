#include <dspex/actors/group/pool_group.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>

#include <caf/all.hpp>

#include <limits>
#include <map>
#include <unordered_map>

namespace dspex {

namespace {

using health_atom = caf::atom_constant<caf::atom("grphealth")>;

using clock_type = std::chrono::steady_clock;

struct member {
  std::string name;
  bool up = true;            // until a status or an answer says otherwise
  std::string why_down;
  std::uint64_t in_flight = 0;
  std::uint64_t routed = 0;  // requests sent to it
  std::uint64_t failed = 0;  // answered node_down or lost (its actor gone)
  bool asked = false;        // a status request of the group is out
};

/// A request the group passed on, answered exactly once through rp.
struct forwarded {
  caf::response_promise rp;
  command_request req;       // as the caller sent it (ref, sink): for a second try
  caf::actor_addr caller;
  std::size_t at = 0;        // the member it is on
  bool retried = false;
  bool streamed = false;     // a chunk reached the caller: a second try would repeat it
};

struct group_state {
  pool_group_config cfg;
  std::shared_ptr<directory> dir;
  std::vector<member> members;
  std::size_t turn = 0;  // where the next tie starts
  std::uint64_t next_id = 0;
  std::unordered_map<std::uint64_t, forwarded> pending;  // the group's ref -> request
  std::map<std::pair<caf::actor_addr, std::uint64_t>, std::uint64_t> by_caller;  // (caller, ref) -> id
  std::map<caf::actor_addr, std::size_t> callers;  // monitored: cancellable requests in flight
  std::unordered_map<std::string, std::size_t> sessions;  // session -> member
  std::uint64_t retried = 0, no_member = 0;
  bool draining = false;

  static inline const char* name = "dspex.pool_group";
};

using group_actor = caf::stateful_actor<group_state>;

// A session is kept while its member is up. The group never hears that a
// session ended, so the map is bounded: at the bound an arbitrary session
// is forgotten (its next request picks a member afresh), never a new one
// refused its affinity. The registry's default max_sessions.
constexpr std::size_t max_sessions = 100000;

caf::actor resolve(const group_state& st, const std::string& m) {
  if (auto a = st.dir->get("pool:" + m))
    return a;
  return st.dir->get("remote:" + m);
}

void mark_down(group_state& st, std::size_t i, std::string why) {
  auto& m = st.members[i];
  if (m.up) {
    for (auto it = st.sessions.begin(); it != st.sessions.end();)
      it = it->second == i ? st.sessions.erase(it) : std::next(it);
  }
  m.up = false;
  m.why_down = std::move(why);
}

/// The member for `req`, or none (npos) when no member is up.
std::size_t pick(group_state& st, const command_request& req) {
  constexpr auto none = std::numeric_limits<std::size_t>::max();
  if (req.session_id) {
    auto it = st.sessions.find(*req.session_id);
    if (it != st.sessions.end() && st.members[it->second].up)
      return it->second;
  }
  std::size_t best = none;
  const auto n = st.members.size();
  for (std::size_t k = 0; k < n; ++k) {
    auto i = (st.turn + k) % n;
    auto& m = st.members[i];
    if (m.up && (best == none || m.in_flight < st.members[best].in_flight))
      best = i;
  }
  if (best != none) {
    st.turn = (best + 1) % n;
    if (req.session_id) {
      if (st.sessions.size() >= max_sessions)
        st.sessions.erase(st.sessions.begin());
      st.sessions[*req.session_id] = best;
    }
  }
  return best;
}

void send_to_member(group_actor* self, std::uint64_t id);

void finish(group_actor* self, std::uint64_t id, caf::expected<json> r) {
  auto& st = self->state;
  auto it = st.pending.find(id);
  if (it == st.pending.end())
    return;
  auto f = std::move(it->second);
  st.pending.erase(it);
  if (f.req.ref != 0) {
    st.by_caller.erase({f.caller, f.req.ref});
    auto c = st.callers.find(f.caller);
    if (c != st.callers.end() && --c->second == 0) {
      self->demonitor(f.caller);
      st.callers.erase(c);
    }
  }
  if (r)
    f.rp.deliver(std::move(*r));
  else
    f.rp.deliver(std::move(r.error()));
}

// The member's answer: delivered, or the request tried once more elsewhere
// when it never ran there (refused) or may run twice (idempotent).
void on_answer(group_actor* self, std::uint64_t id, std::size_t at, caf::expected<json> r) {
  auto& st = self->state;
  auto& m = st.members[at];
  if (m.in_flight > 0)
    --m.in_flight;
  auto it = st.pending.find(id);
  if (it == st.pending.end())
    return;
  if (r) {
    finish(self, id, std::move(r));
    return;
  }
  auto& e = r.error();
  const bool lost = e.category() != error_category;  // the member's actor is gone
  const bool down = lost || is(e, errc::node_down);
  const bool refused = is(e, errc::circuit_open) || is(e, errc::shutting_down);
  if (down) {
    ++m.failed;
    mark_down(st, at, lost ? "not running" : "answered node_down");
  } else if (refused) {
    mark_down(st, at, is(e, errc::circuit_open) ? "circuit open" : "shutting down");
  }
  auto& f = it->second;
  const bool again = !f.retried && !f.streamed && !st.draining
                     && (refused || (down && st.cfg.idempotent.count(f.req.command) > 0));
  if (again) {
    f.retried = true;
    ++st.retried;
    send_to_member(self, id);
    return;
  }
  if (lost)
    r = make_error(errc::node_down, "pool_group " + st.cfg.name + ": member " + m.name
                                      + " went away with the request in flight");
  finish(self, id, std::move(r));
}

void send_to_member(group_actor* self, std::uint64_t id) {
  auto& st = self->state;
  auto& f = st.pending.at(id);
  auto at = pick(st, f.req);
  caf::actor hdl;
  while (at != std::numeric_limits<std::size_t>::max() && !(hdl = resolve(st, st.members[at].name))) {
    mark_down(st, at, "not running");
    at = pick(st, f.req);
  }
  if (!hdl) {
    ++st.no_member;
    finish(self, id, make_error(errc::node_down, "pool_group " + st.cfg.name + ": no member is up"));
    return;
  }
  f.at = at;
  auto& m = st.members[at];
  ++m.in_flight;
  ++m.routed;
  auto fwd = f.req;
  if (fwd.ref != 0)
    fwd.ref = id;  // the group's name for it there; chunks come back here
  if (fwd.sink)
    fwd.sink = caf::actor_cast<caf::actor>(self);
  // The member bounds the request by its own deadline (the request's
  // timeout_ms, a remote_pool's request_timeout): no timer here.
  self->request(hdl, caf::infinite, exec_atom::value, std::move(fwd))
    .then([self, id, at](json& r) { on_answer(self, id, at, std::move(r)); },
          [self, id, at](caf::error& e) { on_answer(self, id, at, std::move(e)); });
}

void cancel_at_member(group_actor* self, std::uint64_t id) {
  auto& st = self->state;
  auto it = st.pending.find(id);
  if (it == st.pending.end())
    return;
  if (auto hdl = resolve(st, st.members[it->second.at].name))
    self->send(hdl, cancel_atom::value, id);
}

// Each member's status, every health_interval: up unless it says it cannot
// serve. A member that does not answer before the next round stays as it was.
void check_health(group_actor* self) {
  auto& st = self->state;
  for (std::size_t i = 0; i < st.members.size(); ++i) {
    auto& m = st.members[i];
    if (m.asked)
      continue;
    auto hdl = resolve(st, m.name);
    if (!hdl) {
      mark_down(st, i, "not running");
      continue;
    }
    m.asked = true;
    self->request(hdl, st.cfg.health_interval * 5, status_atom::value)
      .then(
        [self, i](json& s) {
          auto& st = self->state;
          st.members[i].asked = false;
          std::string why;
          if (s.value("draining", false))
            why = "draining";
          else if (s.contains("circuit") && s["circuit"] == "open")
            why = "circuit open";
          else if (s.contains("host") && s.value("state", "") != "connected")
            why = "remote node " + s.value("state", std::string("?"));
          if (why.empty()) {
            st.members[i].up = true;
            st.members[i].why_down.clear();
          } else {
            mark_down(st, i, why);
          }
        },
        [self, i](caf::error&) {
          self->state.members[i].asked = false;
          mark_down(self->state, i, "no status answer");
        });
  }
  self->delayed_send(self, st.cfg.health_interval, health_atom::value);
}

json status_of(const group_state& st) {
  json members = json::array();
  std::uint64_t in_flight = 0;
  for (auto& m : st.members) {
    json j = {{"name", m.name}, {"state", m.up ? "up" : "down"}, {"in_flight", m.in_flight},
              {"routed", m.routed}, {"failed", m.failed}};
    if (!m.up)
      j["why"] = m.why_down;
    members.push_back(std::move(j));
    in_flight += m.in_flight;
  }
  return json{{"type", "pool_group"},
              {"policy", "least_in_flight"},
              {"members", members},
              {"in_flight", in_flight},
              {"sessions", st.sessions.size()},
              {"retried", st.retried},
              {"no_member", st.no_member},
              {"idempotent", st.cfg.idempotent}};
}

caf::behavior pool_group(group_actor* self, pool_group_config cfg, std::shared_ptr<directory> dir) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.dir = std::move(dir);
  for (auto& name : st.cfg.members)
    st.members.emplace_back().name = name;
  self->set_down_handler([self](caf::down_msg& dm) {
    // A caller that died: its cancellable requests are cancelled where they run.
    auto& st = self->state;
    std::vector<std::uint64_t> ids;
    for (auto it = st.by_caller.lower_bound({dm.source, 0});
         it != st.by_caller.end() && it->first.first == dm.source; ++it)
      ids.push_back(it->second);
    for (auto id : ids)
      cancel_at_member(self, id);
  });
  self->send(self, health_atom::value);
  return {
    [self](exec_atom, command_request& req) -> caf::result<json> {
      auto& st = self->state;
      if (st.draining)
        return make_error(errc::shutting_down, "the node is stopping");
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (req.ref != 0 && caller && st.by_caller.count({caller, req.ref}))
        return make_error(errc::invalid_request, "ref " + std::to_string(req.ref)
                                                   + " is in flight already for this caller");
      auto id = ++st.next_id;
      forwarded f;
      f.rp = self->make_response_promise();
      f.caller = caller;
      f.req = std::move(req);
      if (f.req.ref != 0 && caller) {
        st.by_caller.emplace(std::make_pair(caller, f.req.ref), id);
        if (st.callers[caller]++ == 0)
          self->monitor(caller);
      }
      st.pending.emplace(id, std::move(f));
      send_to_member(self, id);
      return caf::delegated<json>();
    },
    // A member's chunk for the caller's sink, under the caller's ref. The
    // sender stays the member's worker (delegate): the sink's acks go there.
    [self](chunk_atom, stream_chunk& c) {
      auto& st = self->state;
      auto it = st.pending.find(c.ref);
      if (it == st.pending.end() || !it->second.req.sink)
        return;
      it->second.streamed = true;
      c.ref = it->second.req.ref;
      self->delegate(it->second.req.sink, chunk_atom::value, std::move(c));
    },
    [self](cancel_atom, std::uint64_t ref) {
      auto& st = self->state;
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto it = st.by_caller.find({caller, ref});
      if (it != st.by_caller.end())
        cancel_at_member(self, it->second);
    },
    [self](health_atom) {
      if (!self->state.draining)
        check_health(self);
    },
    [self](ready_atom) {},
    [self](drain_atom) { self->state.draining = true; },
    [self](stats_atom) -> json { return json{{"in_flight", self->state.pending.size()}}; },
    [self](status_atom) -> json { return status_of(self->state); },
  };
}

} // namespace

caf::actor spawn_pool_group(caf::local_actor* ctx, const pool_group_config& cfg,
                            std::shared_ptr<directory> dir) {
  return ctx->spawn(pool_group, cfg, std::move(dir));
}

} // namespace dspex
