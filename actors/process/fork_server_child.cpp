#include <dspex/actors/process/detail/fork_server_child.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/process/detail/process_link.hpp>
#include <dspex/bridge/host_run.hpp>

#include <caf/all.hpp>

#include <cstdlib>
#include <map>

namespace dspex {

namespace {

using start_atom = caf::atom_constant<caf::atom("start")>;

struct fork_server_state {
  std::shared_ptr<bridge::fork_server> server;
  std::uint64_t gen = 0;  // which start `server` is: exits are posted with it
  // During a rolling reload: the server the old workers were forked from,
  // kept (its workers die with it) until reload_commit or reload_back.
  std::shared_ptr<bridge::fork_server> previous;
  std::uint64_t previous_gen = 0;
  // Servers a reload is done with, asked to stop and kept until they exited.
  std::map<std::uint64_t, std::shared_ptr<bridge::fork_server>> retired;
  bool starting = false;  // a reload's server is being started
  std::uint64_t next_gen = 1;  // never reused: an old server's exit is never the current one's
  // Who asked for the reload now in progress (monitored): when it is gone
  // before reload_commit / reload_back, the reload is over (a pool stopped
  // or restarted, and its old workers with it): a new server not yet in
  // place is dropped, an old one is retired.
  caf::actor_addr reload_owner;
  bool owner_gone = false;
  caf::response_promise reload_rp;  // answered when the actor quits first
  std::shared_ptr<bridge::fork_server_slot> slot;
  bridge::fork_server_options opts;
  std::shared_ptr<bridge::io_loop> loop;
  std::shared_ptr<process_inbox> inbox;
  caf::error stop_reason;
  bool stopping = false;
  static inline const char* name = "dspex.fork_server";

  ~fork_server_state() {
    if (slot && server)
      slot->clear(server.get());
    // Dropping the last handle kills the server; its workers follow.
  }
};

using fork_server_actor = caf::stateful_actor<fork_server_state>;

// Starts a server whose exit reaches the owner as (procexit, raw, gen).
std::shared_ptr<bridge::fork_server> start_server(bridge::io_loop& loop,
                                                  const bridge::fork_server_options& opts,
                                                  std::shared_ptr<process_inbox> inbox,
                                                  std::uint64_t gen) {
  return bridge::fork_server::start(loop, opts, [inbox, gen](bridge::exit_status s) {
    inbox->post(caf::make_message(proc_exit_atom::value, s.raw, gen));
  });
}

// Asks `fs` to stop and keeps it until its exit (generation `gen`) arrives.
void retire(fork_server_state& st, std::uint64_t gen, std::shared_ptr<bridge::fork_server> fs) {
  fs->stop();
  st.retired.emplace(gen, std::move(fs));
}

// Stops the previous server once its workers are gone (or will be).
void retire_previous(fork_server_actor* self) {
  auto& st = self->state;
  if (!st.previous)
    return;
  retire(st, st.previous_gen, std::move(st.previous));
  st.previous.reset();
}

// (reload): a second server beside the running one. Started on a detached
// helper: the preload blocks for as long as it imports.
caf::result<json> start_reload(fork_server_actor* self) {
  auto& st = self->state;
  if (st.stopping)
    return make_error(errc::shutting_down, "the fork server is stopping");
  if (st.starting || st.previous)
    return make_error(errc::unavailable, "a reload of this fork server is in progress");
  st.starting = true;
  st.owner_gone = false;
  st.reload_owner = self->current_sender() ? self->current_sender()->address() : caf::actor_addr{};
  if (auto owner = caf::actor_cast<caf::actor>(st.reload_owner))
    self->monitor(owner);
  st.reload_rp = self->make_response_promise<json>();
  auto box = std::make_shared<std::shared_ptr<bridge::fork_server>>();
  auto gen = st.next_gen++;
  auto helper = self->spawn<caf::detached>(
    [box, gen, opts = st.opts, loop = st.loop, inbox = st.inbox](caf::event_based_actor* h) -> caf::behavior {
      return {[=](start_atom) {
        auto rp = h->make_response_promise();
        try {
          *box = start_server(*loop, opts, inbox, gen);
          rp.deliver(caf::unit);
        } catch (const std::exception& e) {
          rp.deliver(make_error(errc::init_failed, std::string("the new fork server did not start: ") + e.what()));
        }
        h->quit();
      }};
    });
  self->request(helper, caf::infinite, start_atom::value)
    .then(
      [self, box, gen] {
        auto& st = self->state;
        st.starting = false;
        if (st.stopping || st.owner_gone) {  // nobody to serve with it
          retire(st, gen, std::move(*box));
          st.reload_rp.deliver(make_error(errc::shutting_down, "the reload's pool is gone"));
          return;
        }
        json out{{"old_pid", st.server->pid()}, {"new_pid", (*box)->pid()}};
        st.previous = std::move(st.server);
        st.previous_gen = st.gen;
        st.server = std::move(*box);
        st.gen = gen;
        st.slot->set(st.server);
        st.reload_rp.deliver(std::move(out));
      },
      [self](caf::error& e) {
        self->state.starting = false;
        self->state.reload_rp.deliver(std::move(e));
      });
  return st.reload_rp;
}

caf::behavior fork_server_impl(fork_server_actor* self, std::shared_ptr<bridge::fork_server> fs,
                               std::shared_ptr<bridge::fork_server_slot> slot,
                               bridge::fork_server_options opts,
                               std::shared_ptr<bridge::io_loop> loop,
                               std::shared_ptr<process_inbox> inbox, caf::error start_error) {
  if (!fs) {
    self->quit(std::move(start_error));
    return {};
  }
  self->state.server = std::move(fs);
  self->state.slot = std::move(slot);
  self->state.opts = std::move(opts);
  self->state.loop = std::move(loop);
  self->state.inbox = std::move(inbox);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source != st.reload_owner)
      return;
    st.reload_owner = caf::actor_addr{};
    st.owner_gone = true;  // a start in flight is dropped when it ends
    retire_previous(self);
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.stopping)
      return;
    st.stopping = true;
    if (st.starting)
      st.reload_rp.deliver(make_error(errc::shutting_down, "the fork server is stopping"));
    st.stop_reason = msg.reason;
    st.slot->clear(st.server.get());  // no new worker forks from a stopping server
    if (st.previous)
      st.previous->stop();
    st.server->stop();
  });
  return {
    [self](proc_exit_atom, int raw, std::uint64_t gen) {
      auto& st = self->state;
      bridge::exit_status s{raw};
      if (gen != st.gen) {  // a server a reload replaced, or rolled back
        st.retired.erase(gen);
        if (gen == st.previous_gen && st.previous)
          st.previous.reset();  // died under its old workers: they crash, and restart new
        return;
      }
      if (st.stopping)
        self->quit(with_exit_status(st.stop_reason, s));
      else  // it never ends on its own while the host lives: always a fault
        self->quit(with_exit_status(make_error(errc::process_exited,
                                               "fork server: " + s.describe()), s));
    },
    [self](reload_atom) -> caf::result<json> { return start_reload(self); },
    [self](reload_commit_atom) {
      self->state.reload_owner = caf::actor_addr{};
      retire_previous(self);
    },
    [self](reload_back_atom) {
      auto& st = self->state;
      st.reload_owner = caf::actor_addr{};
      if (!st.previous)
        return;
      retire(st, st.gen, std::move(st.server));
      st.server = std::move(st.previous);
      st.previous.reset();
      st.gen = st.previous_gen;
      st.slot->set(st.server);
    },
    [self](stats_atom) -> json {
      auto& st = self->state;
      json j{{"os_pid", st.server->pid()}, {"state", "running"}};
      if (st.previous)
        j["previous_os_pid"] = st.previous->pid();
      return j;
    },
  };
}

} // namespace

bridge::fork_server_options fork_server_options_for(const worker_config& w) {
  bridge::fork_server_options o;
  o.python = w.python;
  // The workers' own environment: forked workers inherit the server's
  // sys.path, so handler_paths and env.PYTHONPATH must be on it.
  o.env = worker_environment(w);
  o.run_id = w.run_id.empty() ? bridge::host_run_id() : w.run_id;
  o.preload = w.preload;
  o.batch_scheduling = w.sched_batch;
  return o;
}

supervision::child_spec fork_server_child_spec(std::string id, const worker_config& w,
                                               std::shared_ptr<bridge::io_loop> loop,
                                               std::shared_ptr<bridge::fork_server_slot> slot) {
  supervision::child_spec spec;
  spec.id = id;
  auto opts = fork_server_options_for(w);
  opts.label = id;
  spec.start = [opts, loop, slot](caf::local_actor* ctx) -> caf::expected<caf::actor> {
    auto inbox = std::make_shared<process_inbox>();
    std::shared_ptr<bridge::fork_server> fs;
    caf::error start_error;
    try {
      fs = start_server(*loop, opts, inbox, 0);
    } catch (const std::exception& e) {
      start_error = make_error(errc::init_failed, e.what());
    }
    if (!fs)  // a failed start, as OTP's start_link returning an error
      return start_error;
    auto pid = fs->pid();
    slot->set(fs);
    auto a = ctx->spawn(fork_server_impl, fs, slot, opts, loop, inbox, std::move(start_error));
    inbox->bind(a);
    supervision::report_os_pid(ctx, pid);
    return a;
  };
  spec.restart = supervision::restart_type::permanent;
  spec.shutdown = supervision::shutdown_spec::timeout(std::chrono::milliseconds(5000));
  return spec;
}

} // namespace dspex
