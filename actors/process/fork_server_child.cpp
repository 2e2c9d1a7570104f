#include <dspex/actors/process/detail/fork_server_child.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/process/detail/process_link.hpp>
#include <dspex/bridge/host_run.hpp>

#include <caf/all.hpp>

#include <cstdlib>

namespace dspex {

namespace {

struct fork_server_state {
  std::shared_ptr<bridge::fork_server> server;
  std::shared_ptr<bridge::fork_server_slot> slot;
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

caf::behavior fork_server_impl(fork_server_actor* self, std::shared_ptr<bridge::fork_server> fs,
                               std::shared_ptr<bridge::fork_server_slot> slot,
                               caf::error start_error) {
  if (!fs) {
    self->quit(std::move(start_error));
    return {};
  }
  self->state.server = std::move(fs);
  self->state.slot = std::move(slot);
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.stopping)
      return;
    st.stopping = true;
    st.stop_reason = msg.reason;
    st.slot->clear(st.server.get());  // no new worker forks from a stopping server
    st.server->stop();
  });
  return {
    [self](proc_exit_atom, int raw) {
      auto& st = self->state;
      bridge::exit_status s{raw};
      if (st.stopping)
        self->quit(with_exit_status(st.stop_reason, s));
      else  // it never ends on its own while the host lives: always a fault
        self->quit(with_exit_status(make_error(errc::process_exited,
                                               "fork server: " + s.describe()), s));
    },
    [self](stats_atom) -> json {
      return json{{"os_pid", self->state.server->pid()}, {"state", "running"}};
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
      fs = bridge::fork_server::start(*loop, opts, [inbox](bridge::exit_status s) {
        inbox->post(caf::make_message(proc_exit_atom::value, s.raw));
      });
    } catch (const std::exception& e) {
      start_error = make_error(errc::init_failed, e.what());
    }
    if (!fs)  // a failed start, as OTP's start_link returning an error
      return start_error;
    auto pid = fs->pid();
    slot->set(fs);
    auto a = ctx->spawn(fork_server_impl, fs, slot, std::move(start_error));
    inbox->bind(a);
    supervision::report_os_pid(ctx, pid);
    return a;
  };
  spec.restart = supervision::restart_type::permanent;
  spec.shutdown = supervision::shutdown_spec::timeout(std::chrono::milliseconds(5000));
  return spec;
}

} // namespace dspex
