// The blocking calls of a node into its tree (node::execute*, the session
// calls), from threads outside the actors, with their reusable callers.
#pragma once

#include <dspex/actors/node/error.hpp>
#include <dspex/supervision/supervisor.hpp>

#include <caf/all.hpp>
#include <caf/detail/scope_guard.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace dspex {

using gone_atom = caf::atom_constant<caf::atom("gone")>;

// Stands in for the answer of an actor that died holding a request: CAF 0.17
// drops a response_promise silently, so without it the caller would wait
// for its whole backstop. Attached to the callee once the request is sent
// (a request to an actor already dead bounces first, with CAF's own
// request_receiver_down, so that case is classified as before).
class exit_notice : public caf::attachable {
public:
  static constexpr size_t token_type = 0x64737078;  // "dspx": matched by no other attachable

  exit_notice(caf::strong_actor_ptr caller, caf::message_id response_id, const void* tag)
      : caller_(std::move(caller)), response_id_(response_id), tag_(tag) {}

  void actor_exited(const caf::error& reason, caf::execution_unit* host) override {
    caller_->enqueue(nullptr, response_id_, caf::make_message(gone_atom::value, reason), host);
  }

  bool matches(const token& what) override {
    return what.subtype == token_type && what.ptr == tag_;
  }

private:
  caf::strong_actor_ptr caller_;
  caf::message_id response_id_;
  const void* tag_;
};

// Blocking calls into the tree from threads outside the actors, at no cost
// in CAF's clock thread: a request with a finite timeout arms a timer there
// (two wake-ups of caf.clock per call). The backstop is the blocking actor's
// own timed wait on its mailbox, and a callee that dies holding the request
// is noticed at once by an exit_notice. Blocking actors are kept for reuse
// (constructing one costs a few microseconds); one goes back only after a
// call that got its callee's answer and nothing else can still arrive.
struct caller_pool {
  explicit caller_pool(caf::actor_system& s) : sys(s) {}

  /// Sends (xs...) to `callee` and hands its answer to on_reply or on_error,
  /// exactly once: the callee's own error as it is, unavailable when the
  /// callee exited without answering, CAF's request_timeout after `backstop`.
  template <class OnReply, class OnError, class... Ts>
  void call(const caf::actor& callee, std::chrono::milliseconds backstop, OnReply on_reply,
            OnError on_error, Ts&&... xs) {
    if (!callee) {
      caf::error e = make_error(errc::unavailable, "no actor to ask");
      on_error(e);
      return;
    }
    auto self = acquire();
    auto& me = **self;
    auto response_id = me.request(callee, caf::infinite, std::forward<Ts>(xs)...).id();
    // The tag is this call's own: a freed notice's address may be reused by
    // another call's notice on the same callee.
    char tag = 0;
    auto cp = caf::actor_cast<caf::abstract_actor*>(callee);
    cp->attach(caf::attachable_ptr{
      new exit_notice(caf::actor_cast<caf::strong_actor_ptr>(me.ctrl()), response_id, &tag)});
    bool answered = true;
    // A notice no longer attached has fired: its message may still arrive.
    // (Detached on every way out: an attached one holds this caller.)
    bool attached = true;
    {
      auto detach = caf::detail::make_scope_guard([&] {
        attached = cp->detach(caf::attachable::token{exit_notice::token_type, &tag}) > 0;
      });
      caf::blocking_actor::accept_one_cond rc;
      me.varargs_receive(
        rc, response_id, std::move(on_reply), [&](caf::error& e) { on_error(e); },
        [&](gone_atom, caf::error& reason) {
          answered = false;
          caf::error e = make_error(errc::unavailable,
                                    "the actor serving the request exited without answering ("
                                      + supervision::render_reason(reason) + ")");
          on_error(e);
        },
        caf::after(backstop) >> [&] {
          answered = false;
          caf::error e = caf::make_error(caf::sec::request_timeout);
          on_error(e);
        });
    }
    if (answered && attached)
      release(std::move(self));
  }

  /// Drops the idle callers (node::stop).
  void clear();

private:
  /// Enough for the callers a node serves at once; more are made and dropped.
  static constexpr size_t max_idle = 64;

  std::unique_ptr<caf::scoped_actor> acquire();
  void release(std::unique_ptr<caf::scoped_actor> self);

  caf::actor_system& sys;
  std::mutex mx;
  std::vector<std::unique_ptr<caf::scoped_actor>> idle;
};

} // namespace dspex
