#include <dspex/actors/remote/detail/router.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>

#include <caf/all.hpp>

#include <map>
#include <unordered_map>
#include <unordered_set>

namespace dspex {

using namespace std::chrono_literals;

namespace {

/// Room for the BASP header, the message's type names and the sender and
/// receiver beside a chunk's texts (router_guard::max_message_bytes bounds
/// the whole payload).
constexpr std::size_t chunk_envelope_bytes = 4096;

/// A request a remote caller runs here. The router is the pool's caller
/// (its sink, for a stream), so (cancel, ref) it sends reaches the request.
struct remote_call {
  caf::actor_addr caller;  // the remote sender (its proxy): dies with its node's connection
  caf::actor reply_to;     // the same, where chunks go
  std::uint64_t id = 0;    // the caller's id for it (0: none, not cancellable from there)
  caf::actor pool;
  bool stream = false;
  std::uint64_t next_seq = 0;  // chunks forwarded
  std::uint64_t acked = 0;     // chunks acknowledged by the caller and passed on
  caf::actor worker;           // the chunks' sender: acks go to it
  std::uint64_t wire = 0;
  caf::error failed;  // set: answered with this (a chunk too large to send), whatever comes
};

struct router_state {
  router_hooks hooks;
  std::uint64_t next_ref = 0;
  std::unordered_map<std::uint64_t, remote_call> calls;                  // by the pool ref
  std::map<std::pair<caf::actor_addr, std::uint64_t>, std::uint64_t> by_id;  // caller, id -> ref
  std::unordered_set<caf::actor_addr> callers;                           // monitored
  static inline const char* name = "dspex.router";
};

using router_actor = caf::stateful_actor<router_state>;

remote_call* find_by_id(router_actor* self, std::uint64_t id, std::uint64_t* ref = nullptr) {
  auto& st = self->state;
  auto k = st.by_id.find({caf::actor_cast<caf::actor_addr>(self->current_sender()), id});
  if (k == st.by_id.end())
    return nullptr;
  if (ref)
    *ref = k->second;
  return &st.calls.at(k->second);
}

void cancel_call(router_actor* self, std::uint64_t ref) {
  if (auto i = self->state.calls.find(ref); i != self->state.calls.end())
    self->send(i->second.pool, cancel_atom::value, ref);
}

std::string finish(router_actor* self, std::uint64_t ref, caf::expected<json> r) {
  auto& st = self->state;
  if (auto i = st.calls.find(ref); i != st.calls.end()) {
    if (i->second.failed)
      r = i->second.failed;
    if (i->second.id != 0)
      st.by_id.erase({i->second.caller, i->second.id});
    st.calls.erase(i);
  }
  return remote::reply_text(r);
}

// One chunk of a stream this router runs for a remote caller: to it as
// text, in order (one sender, one receiver), acknowledged to the worker
// only when the caller acknowledges it (rack).
void forward_chunk(router_actor* self, stream_chunk& c) {
  auto i = self->state.calls.find(c.ref);
  if (i == self->state.calls.end() || !i->second.stream || i->second.failed)
    return;  // answered, or failed: the rest is dropped
  auto& call = i->second;
  call.worker = caf::actor_cast<caf::actor>(self->current_sender());
  call.wire = c.wire;
  auto head = remote::head_text({call.id, c.seq, c.ack});
  auto data = remote::data_text(c.data);
  auto room = router_guard::max_message_bytes();
  if (head.size() + data.size() + chunk_envelope_bytes > room) {
    call.failed = make_error(errc::resource_exhausted,
                             "chunk " + std::to_string(c.seq) + " of " + std::to_string(data.size())
                               + " bytes exceeds max_remote_message_bytes ("
                               + std::to_string(room) + "): the request is cancelled");
    cancel_call(self, c.ref);
    return;
  }
  ++call.next_seq;
  self->send(call.reply_to, remote::rchunk_atom::value, std::move(head), std::move(data));
}

caf::behavior router(router_actor* self, router_hooks hooks) {
  self->state.hooks = std::move(hooks);
  // A remote caller gone (its node died or disconnected, or the actor
  // exited): everything it runs here is cancelled.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.callers.erase(dm.source) == 0)
      return;
    for (auto& [ref, call] : st.calls)
      if (call.caller == dm.source)
        self->send(call.pool, cancel_atom::value, ref);
  });
  return {
    [self](remote::rhello_atom, const std::string& hello) -> std::string {
      if (auto why = remote::check_hello(hello); !why.empty())
        return remote::reply_text(make_error(errc::invalid_request, why));
      return remote::reply_text(json{{"pools", self->state.hooks.pools}});
    },
    [self](remote::rexec_atom, const std::string& text) -> caf::result<std::string> {
      auto& st = self->state;
      std::string pool;
      remote::exec_ids ids;
      auto cmd = remote::parse_exec(text, pool, st.hooks.max_json_depth, &ids);
      if (!cmd)
        return remote::reply_text(cmd.error());
      auto target = st.hooks.resolve(pool);
      if (!target)
        return remote::reply_text(target.error());
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (ids.id != 0 && (!caller || st.by_id.count({caller, ids.id}) > 0))
        return remote::reply_text(make_error(
          errc::invalid_request, "id " + std::to_string(ids.id) + " is in flight already"));
      // Every request with a sender is the router's own cancellable
      // request on the pool: the sender's death cancels it.
      std::uint64_t ref = 0;
      if (caller) {
        ref = ++st.next_ref;
        remote_call call;
        call.caller = caller;
        call.reply_to = caf::actor_cast<caf::actor>(self->current_sender());
        call.id = ids.id;
        call.pool = *target;
        call.stream = ids.stream;
        st.calls.emplace(ref, std::move(call));
        if (ids.id != 0)
          st.by_id.emplace(std::make_pair(caller, ids.id), ref);
        if (st.callers.insert(caller).second)
          self->monitor(caller);
        cmd->ref = ref;
        if (ids.stream)
          cmd->sink = caf::actor_cast<caf::actor>(self);
      }
      auto rp = self->make_response_promise<std::string>();
      auto wait = cmd->timeout.count() > 0 ? cmd->timeout * 2 + 30s
                                           : std::chrono::milliseconds(10min);
      self->request(*target, wait, exec_atom::value, std::move(*cmd))
        .then([self, rp, ref](json& j) mutable { rp.deliver(finish(self, ref, std::move(j))); },
              [self, rp, ref](caf::error& e) mutable {
                rp.deliver(finish(self, ref, classify(std::move(e))));
              });
      return rp;
    },
    [self](chunk_atom, stream_chunk& c) { forward_chunk(self, c); },
    // Bad input from a peer is dropped: these are one way, and an ack or a
    // cancel for a request that ended meanwhile is no fault.
    [self](remote::rack_atom, const std::string& text) {
      auto h = remote::parse_head(text);
      if (!h)
        return;
      auto* call = find_by_id(self, h->id);
      // Only chunks forwarded, in order: the worker never sees an ack
      // for a chunk the caller cannot have had.
      if (!call || !call->stream || h->seq >= call->next_seq || h->seq < call->acked || !call->worker)
        return;
      call->acked = h->seq + 1;
      self->send(call->worker, ack_atom::value, call->wire, h->seq);
    },
    [self](remote::rcancel_atom, const std::string& text) {
      auto h = remote::parse_head(text);
      std::uint64_t ref = 0;
      if (h && find_by_id(self, h->id, &ref))
        cancel_call(self, ref);
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
