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

// (reload): a second server beside the running one. Started on a detached
// helper: the preload blocks for as long as it imports.
caf::result<json> start_reload(fork_server_actor* self) {
  auto& st = self->state;
  if (st.stopping)
    return make_error(errc::shutting_down, "the fork server is stopping");
  if (st.starting || st.previous)
    return make_error(errc::unavailable, "a reload of this fork server is in progress");
  st.starting = true;
  auto rp = self->make_response_promise<json>();
  auto box = std::make_shared<std::shared_ptr<bridge::fork_server>>();
  auto gen = st.gen + 1;
  auto helper = self->spawn<caf::detached>(
    [box, gen, opts = st.opts, loop = st.loop, inbox = st.inbox](caf::event_based_actor*) -> caf::behavior {
      return {[=](start_atom) -> caf::result<void> {
        try {
          *box = start_server(*loop, opts, inbox, gen);
        } catch (const std::exception& e) {
          return make_error(errc::init_failed, std::string("the new fork server did not start: ") + e.what());
        }
        return caf::unit;
      }};
    });
  self->request(helper, caf::infinite, start_atom::value)
    .then(
      [self, rp, box, gen, helper]() mutable {
        self->send_exit(helper, caf::exit_reason::normal);
        auto& st = self->state;
        st.starting = false;
        if (st.stopping) {  // the tree stops meanwhile: the new one goes too
          (*box)->stop();
          rp.deliver(make_error(errc::shutting_down, "the fork server is stopping"));
          return;
        }
        json out{{"old_pid", st.server->pid()}, {"new_pid", (*box)->pid()}};
        st.previous = std::move(st.server);
        st.previous_gen = st.gen;
        st.server = std::move(*box);
        st.gen = gen;
        st.slot->set(st.server);
        rp.deliver(std::move(out));
      },
      [self, rp, helper](caf::error& e) mutable {
        self->send_exit(helper, caf::exit_reason::normal);
        self->state.starting = false;
        rp.deliver(std::move(e));
      });
  return rp;
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
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.stopping)
      return;
    st.stopping = true;
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
      auto& st = self->state;
      if (!st.previous)
        return;
      st.previous->stop();
      st.retired.emplace(st.previous_gen, std::move(st.previous));
      st.previous.reset();
    },
    [self](reload_back_atom) {
      auto& st = self->state;
      if (!st.previous)
        return;
      st.server->stop();
      st.retired.emplace(st.gen, std::move(st.server));
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
