// A node's blocking calls into its tree (node.hpp: execute_on,
// create_session, end_session) through its caller_pool
// (detail/caller_pool.hpp).
#include <dspex/actors/node/detail/node_impl.hpp>

#include <dspex/actors/node/detail/caller_pool.hpp>
#include <dspex/bridge/json_limits.hpp>

#include <caf/all.hpp>

namespace dspex {

using namespace std::chrono_literals;

void caller_pool::clear() {
  std::vector<std::unique_ptr<caf::scoped_actor>> gone;
  std::lock_guard<std::mutex> g(mx);
  gone.swap(idle);
}

std::unique_ptr<caf::scoped_actor> caller_pool::acquire() {
  {
    std::lock_guard<std::mutex> g(mx);
    if (!idle.empty()) {
      auto self = std::move(idle.back());
      idle.pop_back();
      return self;
    }
  }
  // Hidden: an idle caller must not count as a running actor for
  // actor_system::await_all_actors_done().
  return std::make_unique<caf::scoped_actor>(sys, true);
}

void caller_pool::release(std::unique_ptr<caf::scoped_actor> self) {
  // A second answer to a past request (a callee answering twice) waits in
  // the mailbox, skipped by every later receive (they match their own
  // request id only): such an actor is dropped.
  auto& mb = (*self)->mailbox();
  mb.flush_cache();
  if (!mb.empty())
    return;
  std::lock_guard<std::mutex> g(mx);
  if (idle.size() < max_idle)
    idle.push_back(std::move(self));
}

caf::expected<caf::actor> node::call_target(const std::string& pool, const json& args,
                                            const std::optional<std::string>& session) {
  if (impl_->stopped)
    return make_error(errc::shutting_down, "the node is stopped");
  // Before the args are sent anywhere (a copy of them recurses).
  if (bridge::value_depth_exceeds(args, impl_->max_json_depth))
    return make_error(errc::invalid_request, bridge::depth_message("args", impl_->max_json_depth));
  auto resolved = resolve(pool);
  if (!resolved)
    return resolved.error();
  // In single mode no pool asks the registry: the session is admitted here
  // (a new one must fit under max_sessions).
  if (session && impl_->pool_names.empty())
    if (auto reg = impl_->dir->get("registry")) {
      caf::error refused;
      impl_->callers->call(reg, 10s, [] {}, [&](caf::error& e) { refused = classify(std::move(e)); },
                           sess_use_atom::value, *session);
      if (refused)
        return refused;
    }
  return resolved;
}

caf::expected<json> node::execute_on(const std::string& pool, const std::string& command,
                                     json args, std::optional<std::string> session,
                                     std::chrono::milliseconds timeout) {
  auto t = call_target(pool, args, session);
  if (!t)
    return t.error();
  caf::expected<json> result{caf::error{}};
  auto wait = timeout.count() > 0 ? timeout * 2 + 30s : std::chrono::milliseconds(10min);
  impl_->callers->call(
    *t, wait, [&](json& j) { result = std::move(j); },
    [&](caf::error& e) { result = classify(std::move(e)); }, exec_atom::value,
    make_command(command, std::move(args), session, timeout));
  return result;
}

namespace {

// A session registry call from outside the actors: unit or a classified error.
template <class Atom>
caf::error ask_registry(caller_pool& callers, const caf::actor& reg, Atom what,
                        const std::string& session) {
  if (!reg)
    return make_error(errc::unavailable, "no session registry in this tree");
  caf::error err;
  callers.call(reg, 10s, [] {}, [&](caf::error& e) { err = std::move(e); }, what, session);
  return err;
}

} // namespace

caf::error node::create_session(const std::string& session) {
  return ask_registry(*impl_->callers, impl_->dir->get("registry"), sess_new_atom::value, session);
}

caf::error node::end_session(const std::string& session) {
  return ask_registry(*impl_->callers, impl_->dir->get("registry"), sess_end_atom::value, session);
}

} // namespace dspex
