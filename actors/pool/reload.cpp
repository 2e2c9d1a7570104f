#include <dspex/actors/pool/detail/reload.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/process/detail/fork_server_child.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

namespace dspex {

namespace {

using steady = std::chrono::steady_clock;
using done_fn = std::function<void()>;

struct reload_state {
  reload_plan plan;
  caf::response_promise rp;
  caf::actor sup;
  caf::actor forker;
  json pids = json::object();     // the fork servers' {old_pid, new_pid}
  std::vector<std::string> old;   // regular workers still on the old code
  std::vector<std::string> old_overflow;
  std::vector<std::string> fresh; // workers this reload started
  std::unordered_set<std::string> taken;  // child ids in use
  std::size_t of = 0;             // old workers at the start
  std::size_t replaced = 0;
  steady::time_point started = steady::now();
  static inline const char* name = "dspex.pool_reload";
};

using reload_actor = caf::stateful_actor<reload_state>;

long long elapsed_ms(const reload_state& st) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - st.started).count();
}

void progress(reload_actor* self, const char* state) {
  auto& st = self->state;
  self->send(st.plan.pool, reload_progress_atom::value,
             json{{"state", state}, {"replaced", st.replaced}, {"of", st.of},
                  {"surge", st.plan.surge}, {"ms", elapsed_ms(st)}});
}

// Starts `n` workers under fresh ids, each counted once ready; `then` gets
// the first failure (none: all started).
void start_batch(reload_actor* self, std::size_t n, std::function<void(caf::error)> then) {
  auto& st = self->state;
  auto left = std::make_shared<std::size_t>(n);
  auto first = std::make_shared<caf::error>();
  for (std::size_t i = 0; i < n; ++i) {
    auto id = take_free_worker_id(st.taken);
    auto spec = worker_child_spec(id, st.plan.cfg, st.plan.loop, st.plan.links, false);
    // Counted as started once its handler modules imported and it answered
    // its init ping: a new worker that cannot is the reload's failure.
    spec.await_ready = st.plan.cfg.worker.init_timeout + std::chrono::seconds(1);
    auto one_done = [left, first, then] {
      if (--*left == 0)
        then(*first);
    };
    self->request(st.sup, caf::infinite, supervision::start_child_atom::value, std::move(spec))
      .then(
        [self, id, one_done](caf::actor&) {
          self->state.fresh.push_back(id);
          one_done();
        },
        [id, first, one_done](caf::error& e) {
          if (!*first)
            *first = make_error(errc::init_failed, "worker " + id + " did not start: " + describe(e));
          one_done();
        });
  }
  if (n == 0)
    then({});
}

// Stops worker `id` the deliberate way (it drains first) and deletes its
// spec; `then` once it is gone. A delete refused because the child runs
// again (the pool restarted it for a fault of its own between the two
// calls) goes round once more, so no extra worker is left behind.
void stop_one(reload_actor* self, std::string id, int attempt, done_fn then) {
  auto sup = self->state.sup;
  auto again = [self, id, attempt, then](caf::error& e) {
    using supervision::supervision_errc;
    if (attempt < 3
        && (supervision::is(e, supervision_errc::running) || supervision::is(e, supervision_errc::restarting)))
      stop_one(self, id, attempt + 1, then);
    else
      then();  // gone already: not_found
  };
  self->request(sup, caf::infinite, supervision::terminate_child_atom::value, id)
    .then(
      [self, sup, id, then, again] {
        self->request(sup, caf::infinite, supervision::delete_child_atom::value, id)
          .then([self, id, then] {
                  self->state.taken.erase(id);
                  then();
                },
                again);
      },
      [then](caf::error&) { then(); });
}

// stop_one for each of `ids`; `then` once all are gone.
void stop_batch(reload_actor* self, std::vector<std::string> ids, done_fn then) {
  if (ids.empty()) {
    then();
    return;
  }
  auto left = std::make_shared<std::size_t>(ids.size());
  for (auto& id : ids)
    stop_one(self, id, 1, [left, then] {
      if (--*left == 0)
        then();
    });
}

void finish(reload_actor* self, caf::error e) {
  auto& st = self->state;
  if (e) {
    progress(self, "rolled_back");
    st.rp.deliver(std::move(e));
  } else {
    progress(self, "done");
    st.rp.deliver(json{{"pool", st.plan.cfg.name}, {"reloaded", st.replaced},
                       {"surge", st.plan.surge}, {"ms", elapsed_ms(st)},
                       {"fork_server", st.pids}});
  }
  self->quit();
}

// A new worker did not start: stop the new ones, take the old server back
// and start as many old-code workers as were already replaced.
void roll_back(reload_actor* self, caf::error why) {
  auto& st = self->state;
  auto name = st.plan.cfg.name;
  auto refill = st.replaced;
  auto fresh = std::move(st.fresh);
  st.fresh.clear();
  stop_batch(self, fresh, [self, why, name, refill] {
    auto say = "reload of pool " + name + " rolled back: " + detail_of(why);
    // Once the old server is back in the slot, workers fork from it again.
    auto refill_old = [self, refill, say] {
      start_batch(self, refill, [self, say](caf::error e) {
        self->state.replaced = 0;
        finish(self, make_error(errc::init_failed,
                                e ? say + "; restarting the replaced workers failed too: " + detail_of(e)
                                  : say));
      });
    };
    auto& st = self->state;
    if (st.plan.links->worker_sup() != st.sup) {
      // The worker supervisor was restarted meanwhile: its fresh workers
      // forked from the new server, the old ones are gone. Keep the new.
      if (st.forker)
        self->send(st.forker, reload_commit_atom::value);
      finish(self, make_error(errc::unavailable, "reload of pool " + name
                                                   + " ended: its workers were restarted meanwhile ("
                                                   + detail_of(why) + ")"));
      return;
    }
    if (!st.forker) {
      refill_old();
      return;
    }
    self->request(st.forker, caf::infinite, reload_back_atom::value)
      .then([refill_old] { refill_old(); }, [refill_old](caf::error&) { refill_old(); });
  });
}

void finish_overflow(reload_actor* self) {
  auto ov = std::move(self->state.old_overflow);
  stop_batch(self, ov, [self] {
    auto& st = self->state;
    if (st.forker)
      self->send(st.forker, reload_commit_atom::value);
    finish(self, {});
  });
}

// One step: `surge` new workers up, then as many old ones drained and gone.
void step(reload_actor* self) {
  auto& st = self->state;
  progress(self, "running");
  if (st.old.empty()) {
    finish_overflow(self);
    return;
  }
  auto k = std::min(st.plan.surge, st.old.size());
  start_batch(self, k, [self, k](caf::error e) {
    if (e) {
      roll_back(self, std::move(e));
      return;
    }
    auto& st = self->state;
    std::vector<std::string> batch(st.old.begin(), st.old.begin() + static_cast<long>(k));
    st.old.erase(st.old.begin(), st.old.begin() + static_cast<long>(k));
    stop_batch(self, batch, [self, k] {
      self->state.replaced += k;
      step(self);
    });
  });
}

void list_old(reload_actor* self) {
  auto& st = self->state;
  self->request(st.sup, caf::infinite, supervision::which_children_atom::value)
    .then(
      [self](std::vector<supervision::child_info>& kids) {
        auto& st = self->state;
        for (auto& k : kids) {
          st.taken.insert(k.id);
          if (k.status == supervision::child_status::undefined)
            continue;  // stopped by an operator: left as it is
          if (k.id.rfind("overflow", 0) == 0)
            st.old_overflow.push_back(k.id);
          else
            st.old.push_back(k.id);
        }
        st.of = st.old.size();
        step(self);
      },
      [self](caf::error& e) {
        auto& st = self->state;
        if (st.forker)
          self->send(st.forker, reload_back_atom::value);
        finish(self, make_error(errc::unavailable, "worker supervisor did not answer: " + describe(e)));
      });
}

caf::behavior reload_impl(reload_actor* self, reload_plan plan) {
  self->state.plan = std::move(plan);
  return {
    [self](reload_run_atom) -> caf::result<json> {
      auto& st = self->state;
      st.rp = self->make_response_promise();
      st.sup = st.plan.links->worker_sup();
      st.forker = st.plan.links->forker();
      if (!st.sup) {
        finish(self, make_error(errc::unavailable, "pool " + st.plan.cfg.name + " has no worker supervisor"));
        return st.rp;
      }
      if (!st.forker) {
        list_old(self);
        return st.rp;
      }
      self->request(st.forker, caf::infinite, reload_atom::value)
        .then(
          [self](json& pids) {
            self->state.pids = std::move(pids);
            list_old(self);
          },
          [self](caf::error& e) { finish(self, std::move(e)); });
      return st.rp;
    },
  };
}

} // namespace

std::string take_free_worker_id(std::unordered_set<std::string>& taken) {
  for (std::size_t k = 1;; ++k) {
    auto id = "w" + std::to_string(k);
    if (taken.insert(id).second)
      return id;
  }
}

caf::actor spawn_reload(caf::local_actor* ctx, reload_plan plan) {
  return ctx->spawn(reload_impl, std::move(plan));
}

} // namespace dspex
