#include <dspex/actors/remote/detail/router.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>

#include <caf/all.hpp>

namespace dspex {

using namespace std::chrono_literals;

namespace {

struct router_state {
  router_hooks hooks;
  static inline const char* name = "dspex.router";
};

using router_actor = caf::stateful_actor<router_state>;

caf::behavior router(router_actor* self, router_hooks hooks) {
  self->state.hooks = std::move(hooks);
  return {
    [self](remote::rhello_atom, const std::string& hello) -> std::string {
      if (auto why = remote::check_hello(hello); !why.empty())
        return remote::reply_text(make_error(errc::invalid_request, why));
      return remote::reply_text(json{{"pools", self->state.hooks.pools}});
    },
    [self](remote::rexec_atom, const std::string& text) -> caf::result<std::string> {
      std::string pool;
      auto cmd = remote::parse_exec(text, pool, self->state.hooks.max_json_depth);
      if (!cmd)
        return remote::reply_text(cmd.error());
      auto target = self->state.hooks.resolve(pool);
      if (!target)
        return remote::reply_text(target.error());
      auto rp = self->make_response_promise<std::string>();
      auto wait = cmd->timeout.count() > 0 ? cmd->timeout * 2 + 30s
                                           : std::chrono::milliseconds(10min);
      self->request(*target, wait, exec_atom::value, std::move(*cmd))
        .then([rp](json& j) mutable { rp.deliver(remote::reply_text(std::move(j))); },
              [rp](caf::error& e) mutable {
                rp.deliver(remote::reply_text(classify(std::move(e))));
              });
      return rp;
    },
    [self](remote::rstatus_atom, const std::string& text) -> caf::result<std::string> {
      if (auto why = remote::check_hello(text); !why.empty())
        return remote::reply_text(make_error(errc::invalid_request, why));
      auto rp = self->make_response_promise<std::string>();
      auto status = self->state.hooks.status;
      // node::status blocks on several asks: not on a scheduler thread.
      self->spawn<caf::detached>([rp, status](caf::event_based_actor* helper) mutable {
        json j;
        try {
          j = status();
        } catch (const std::exception& e) {
          rp.deliver(remote::reply_text(make_error(errc::unavailable, e.what())));
          helper->quit();
          return;
        }
        rp.deliver(remote::reply_text(std::move(j)));
        helper->quit();
      });
      return rp;
    },
  };
}

} // namespace

caf::actor spawn_router(caf::actor_system& sys, router_hooks hooks) {
  return sys.spawn(router, std::move(hooks));
}

} // namespace dspex
