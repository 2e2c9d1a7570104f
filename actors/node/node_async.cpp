// A node's asynchronous calls (node.hpp: call, stream, call_handle): one
// small actor per call sends the request with its deadline in it (no CAF
// timer), takes the chunks and the answer, runs the caller's callbacks and
// ends. Cancelling the handle, or the pool dying with the request, ends the
// call too; the pool answers every request it holds.
#include <dspex/actors/node/detail/node_impl.hpp>

#include <dspex/actors/pool/call.hpp>

#include <caf/all.hpp>

#include <cstdio>
#include <exception>

namespace dspex {

namespace {

// The call's name for its one request (unique per caller: each call is an
// actor of its own).
constexpr std::uint64_t call_ref = 1;

struct call_state {
  caf::actor target;
  chunk_callback on_chunk;
  result_callback on_result;
  bool done = false;
  static inline const char* name = "dspex.call";
};

using call_actor = caf::stateful_actor<call_state>;

// A callback's exception must not escape onto a scheduler thread.
template <class F, class... Ts>
void run_callback(const char* what, F& f, Ts&&... xs) {
  try {
    f(std::forward<Ts>(xs)...);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dspex: a call's %s callback threw: %s\n", what, e.what());
  } catch (...) {
    std::fprintf(stderr, "dspex: a call's %s callback threw\n", what);
  }
}

void finish(call_actor* self, caf::expected<json> r) {
  auto& st = self->state;
  if (st.done)
    return;
  st.done = true;
  run_callback("result", st.on_result, std::move(r));
  self->quit();
}

caf::behavior call_impl(call_actor* self, caf::actor target, command_request req,
                        chunk_callback on_chunk, result_callback on_result) {
  auto& st = self->state;
  st.target = target;
  st.on_chunk = std::move(on_chunk);
  st.on_result = std::move(on_result);
  // A pool that exits holding the request would leave it unanswered (CAF
  // 0.17 drops promises silently).
  self->monitor(target);
  self->set_down_handler([self](caf::down_msg& dm) {
    if (dm.source == self->state.target.address())
      finish(self, make_error(errc::unavailable, "the pool exited without answering ("
                                                   + supervision::render_reason(dm.reason) + ")"));
  });
  if (st.on_chunk)
    req.sink = self;
  call(self, target, std::move(req), call_ref)
    .then([self](json& j) { finish(self, std::move(j)); },
          [self](caf::error& e) { finish(self, classify(std::move(e))); });
  return {
    [self](chunk_atom, stream_chunk& c) {
      if (self->state.done)
        return;
      run_callback("chunk", self->state.on_chunk, std::move(c.data));
      ack_chunk(self, c);  // after the callback: credit follows the caller's pace
    },
    [self](cancel_atom) {
      if (!self->state.done)
        cancel(self, self->state.target, call_ref);
    },
  };
}

} // namespace

void call_handle::cancel() const {
  if (actor_)
    caf::anon_send(actor_, cancel_atom::value);
}

call_handle node::stream(const std::string& command, json args, call_options opts,
                         chunk_callback on_chunk, result_callback on_result) {
  auto t = call_target(opts.pool, args, opts.session);
  if (!t) {
    run_callback("result", on_result, caf::expected<json>{t.error()});
    return {};
  }
  // Hidden: a call in flight does not hold actor_system shutdown (the tree
  // answers it when it stops).
  return call_handle{impl_->sys.spawn<caf::hidden>(
    call_impl, *t, make_command(command, std::move(args), std::move(opts.session), opts.timeout),
    std::move(on_chunk), std::move(on_result))};
}

call_handle node::call(const std::string& command, json args, call_options opts,
                       result_callback on_result) {
  return stream(command, std::move(args), std::move(opts), nullptr, std::move(on_result));
}

std::future<caf::expected<json>> node::call(const std::string& command, json args,
                                            call_options opts) {
  auto p = std::make_shared<std::promise<caf::expected<json>>>();
  auto f = p->get_future();
  call(command, std::move(args), std::move(opts),
       [p](caf::expected<json> r) { p->set_value(std::move(r)); });
  return f;
}

} // namespace dspex
