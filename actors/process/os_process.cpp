#include <dspex/actors/process/detail/os_process.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/process/detail/process_link.hpp>
#include <dspex/bridge/python_process.hpp>
#include <dspex/supervision/child_spec.hpp>

#include <caf/all.hpp>

#include <cstdio>

namespace dspex {

namespace {

struct os_process_state {
  std::shared_ptr<bridge::python_process> proc;
  caf::error stop_reason;
  bool stopping = false;
  static inline const char* name = "dspex.process";
};

using os_process_actor = caf::stateful_actor<os_process_state>;

caf::behavior os_process_impl(os_process_actor* self, std::shared_ptr<bridge::python_process> proc,
                              caf::error spawn_error, os_process_config cfg) {
  if (!proc) {
    self->quit(std::move(spawn_error));
    return {};
  }
  self->state.proc = std::move(proc);
  self->set_exit_handler([self, cfg](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.stopping)
      return;
    st.stopping = true;
    st.stop_reason = msg.reason;
    // Asked at once; SIGKILL is the supervisor's call (its shutdown timeout
    // kills this actor, and the dropped handle kills the program).
    st.proc->stop(bridge::stop_plan{std::nullopt, std::chrono::milliseconds{0},
                                    bridge::stop_plan::no_kill, cfg.stop_signal});
  });
  return {
    [self](proc_exit_atom, int raw) {
      auto& st = self->state;
      bridge::exit_status s{raw};
      if (st.stopping)
        self->quit(with_exit_status(st.stop_reason, s));
      else if (s.clean())
        self->quit(with_exit_status(caf::exit_reason::normal, s));
      else
        self->quit(with_exit_status(make_error(errc::process_exited, s.describe()), s));
    },
    [self](stats_atom) -> json {
      return json{{"os_pid", self->state.proc->pid()}, {"state", "running"}};
    },
  };
}

} // namespace

caf::actor spawn_os_process(caf::local_actor* ctx, std::shared_ptr<bridge::io_loop> loop,
                            os_process_config cfg) {
  bridge::process_options o;
  o.executable = cfg.command.at(0);
  o.args.assign(cfg.command.begin() + 1, cfg.command.end());
  o.env = cfg.env;
  o.working_dir = cfg.cwd;
  o.framed = false;
  o.label = cfg.id;
  auto inbox = std::make_shared<process_inbox>();
  bridge::process_callbacks cbs;
  cbs.on_exit = [inbox](bridge::exit_status s) {
    inbox->post(caf::make_message(proc_exit_atom::value, s.raw));
  };
  std::shared_ptr<bridge::python_process> proc;
  caf::error spawn_error;
  try {
    proc = bridge::python_process::spawn(*loop, o, std::move(cbs));
  } catch (const std::exception& e) {
    spawn_error = make_error(errc::init_failed, e.what());
  }
  auto pid = proc ? proc->pid() : -1;
  auto a = ctx->spawn(os_process_impl, std::move(proc), std::move(spawn_error), std::move(cfg));
  inbox->bind(a);
  if (pid > 0)
    supervision::report_os_pid(ctx, pid);
  return a;
}

} // namespace dspex
