#include <dspex/actors/node/monitor.hpp>

#include <dspex/actors/node/messages.hpp>

#include <caf/all.hpp>

#include <deque>
#include <memory>

namespace dspex {

namespace {

struct monitor_state {
  monitor_config cfg;
  std::shared_ptr<directory> dir;
  json pools = json::object();
  json sessions = json::object();
  std::deque<json> history;  // {ts_ms, pool: {workers, busy, queue, restarts}}
  std::uint64_t ticks = 0;
  std::uint64_t unresponsive = 0;  // worker stats requests that failed
  static inline const char* name = "dspex.monitor";
};

using monitor_actor = caf::stateful_actor<monitor_state>;

std::int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

void poll(monitor_actor* self) {
  auto& st = self->state;
  ++st.ticks;
  json point = {{"ts_ms", now_ms()}};
  for (auto& [name, pool] : st.dir->with_prefix("pool:")) {
    auto n = name;
    self->request(pool, std::chrono::seconds(5), status_atom::value)
      .then(
        [self, n](json& s) {
          auto& st = self->state;
          if (!st.history.empty())
            st.history.back()[n] = {{"workers", s["workers"]}, {"busy", s["busy"]},
                                    {"queue", s["queue"]}, {"restarts", s["restarts"]},
                                    {"circuit", s["circuit"]}};
          auto keep = st.pools.contains(n) && st.pools[n].contains("worker_stats")
                        ? st.pools[n]["worker_stats"]
                        : json::object();
          st.pools[n] = std::move(s);
          st.pools[n]["worker_stats"] = std::move(keep);
        },
        [self, n](caf::error& e) {
          self->state.pools[n] = {{"error", caf::to_string(e)}};
        });
  }
  // Health of every worker actor: its stats answer (state, health, os pid,
  // requests, errors, uptime). Python-level pings of idle workers are the
  // pool's (worker_idle_timeout), so a long request is never mistaken for a
  // hang here.
  for (auto& [name, pool] : st.dir->with_prefix("pool:")) {
    auto n = name;
    self->request(pool, std::chrono::seconds(5), workers_atom::value)
      .then(
        [self, n](std::vector<caf::actor>& ws) {
          // The snapshot holds the current workers only: it is replaced once
          // every one answered, so the ids of workers that came and went
          // (overflow, lazy, replaced ones) do not pile up here.
          struct round {
            std::size_t pending;
            json stats = json::object();
          };
          auto r = std::make_shared<round>(round{ws.size()});
          auto finish = [self, n, r] {
            if (--r->pending == 0)
              self->state.pools[n]["worker_stats"] = std::move(r->stats);
          };
          if (ws.empty())
            self->state.pools[n]["worker_stats"] = json::object();
          for (auto& w : ws)
            self->request(w, std::chrono::seconds(5), stats_atom::value)
              .then(
                [r, finish](json& s) {
                  auto id = s.value("id", "?");
                  r->stats[id] = std::move(s);
                  finish();
                },
                [self, finish](caf::error&) {
                  ++self->state.unresponsive;
                  finish();
                });
        },
        [](caf::error&) {});
  }
  if (auto reg = st.dir->get("registry"))
    self->request(reg, std::chrono::seconds(5), stats_atom::value)
      .then([self](json& s) { self->state.sessions = std::move(s); }, [](caf::error&) {});
  st.history.push_back(std::move(point));
  while (st.history.size() > st.cfg.history)
    st.history.pop_front();
}

caf::behavior monitor_impl(monitor_actor* self, monitor_config cfg, std::shared_ptr<directory> dir) {
  self->state.cfg = cfg;
  self->state.dir = std::move(dir);
  self->send(self, tick_atom::value);
  return {
    [self](tick_atom) {
      poll(self);
      self->delayed_send(self, self->state.cfg.interval, tick_atom::value);
    },
    [self](stats_atom) -> json {
      return json{{"ticks", self->state.ticks}, {"state", "running"}};
    },
    [self](status_atom) -> json {
      auto& st = self->state;
      json hist = json::array();
      for (auto& h : st.history)
        hist.push_back(h);
      return json{{"pools", st.pools},
                  {"sessions", st.sessions},
                  {"ticks", st.ticks},
                  {"unresponsive_workers", st.unresponsive},
                  {"interval_ms", st.cfg.interval.count()},
                  {"history", std::move(hist)}};
    },
  };
}

} // namespace

caf::actor spawn_monitor(caf::local_actor* ctx, monitor_config cfg, std::shared_ptr<directory> dir) {
  return ctx->spawn(monitor_impl, cfg, std::move(dir));
}

} // namespace dspex
