#include <dspex/actors/os_process.hpp>

#include <dspex/actors/error.hpp>
#include <dspex/actors/messages.hpp>
#include <dspex/bridge/python_process.hpp>

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

caf::behavior os_process_impl(os_process_actor* self, std::shared_ptr<bridge::io_loop> loop,
                              os_process_config cfg) {
  bridge::process_options o;
  o.executable = cfg.command.at(0);
  o.args.assign(cfg.command.begin() + 1, cfg.command.end());
  o.env = cfg.env;
  o.working_dir = cfg.cwd;
  o.framed = false;
  o.label = cfg.id;
  caf::actor_addr weak = self->address();
  bridge::process_callbacks cbs;
  cbs.on_exit = [weak](bridge::exit_status s) {
    if (auto hdl = caf::actor_cast<caf::actor>(weak))
      caf::anon_send(hdl, proc_exit_atom::value, s.raw);
  };
  try {
    self->state.proc = bridge::python_process::spawn(*loop, o, cbs);
  } catch (const std::exception& e) {
    self->quit(make_error(errc::init_failed, e.what()));
    return {};
  }
  self->set_exit_handler([self, cfg](caf::exit_msg& msg) {
    auto& st = self->state;
    if (st.stopping)
      return;
    st.stopping = true;
    st.stop_reason = msg.reason;
    st.proc->stop(bridge::stop_plan{std::nullopt, cfg.stop_grace, cfg.term_grace});
  });
  return {
    [self](proc_exit_atom, int raw) {
      auto& st = self->state;
      bridge::exit_status s{raw};
      if (st.stopping)
        self->quit(st.stop_reason);
      else if (s.clean())
        self->quit(caf::exit_reason::normal);
      else
        self->quit(make_error(errc::process_exited, s.describe()));
    },
    [self](stats_atom) -> json {
      return json{{"os_pid", self->state.proc->pid()}, {"state", "running"}};
    },
  };
}

} // namespace

caf::actor spawn_os_process(caf::local_actor* ctx, std::shared_ptr<bridge::io_loop> loop,
                            os_process_config cfg) {
  return ctx->spawn(os_process_impl, std::move(loop), std::move(cfg));
}

} // namespace dspex
