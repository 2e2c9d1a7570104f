#include <dspex/actors/remote/detail/router.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/request_link.hpp>
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
  std::shared_ptr<remote::request_link> link;  // came by it: chunks go back on it
  caf::error failed;  // set: answered with this (a chunk too large to send), whatever comes
};

/// Replies to one remote caller's batched requests, gathered while the
/// router runs and sent as one (rreplies) when its turn ends (a flush it
/// sends itself, behind what its mailbox holds), or once they fill the
/// caller's batch bytes.
struct outbox {
  caf::actor to;
  std::size_t budget = 0;
  std::vector<std::uint64_t> ids;
  std::vector<std::string> texts;
  std::size_t bytes = 0;
};

using rflush_atom = caf::atom_constant<caf::atom("rflush")>;
using lflush_atom = caf::atom_constant<caf::atom("lflush")>;

/// A request link accepted on the link port: a stranger until its first
/// frame, a hello with a token this router handed out; then the caller the
/// token was made for, whose requests it carries.
struct link_entry {
  std::shared_ptr<remote::request_link> link;
  caf::actor_addr caller;  // set by a valid hello
  std::string out;         // reply and chunk frames of this turn
  std::size_t max_frame = 0;  // the smaller of the two sides' frame bounds
  std::uint64_t serial = 0;   // its number here (link_opened when it came)
};

/// A token a hello reply handed out, until a link brings it back.
struct link_ticket {
  caf::actor_addr caller;
  std::chrono::steady_clock::time_point expires;
};

struct router_state {
  router_hooks hooks;
  std::unordered_map<caf::actor_addr, outbox> outboxes;  // by caller, while not empty
  std::uint64_t next_ref = 0;
  std::unordered_map<std::uint64_t, remote_call> calls;                  // by the pool ref
  std::map<std::pair<caf::actor_addr, std::uint64_t>, std::uint64_t> by_id;  // caller, id -> ref
  std::unordered_set<caf::actor_addr> callers;                           // monitored
  std::unordered_map<remote::request_link*, link_entry> links;  // by the link, while open
  std::unordered_map<std::string, link_ticket> tickets;         // by token
  std::vector<remote::request_link*> dirty;                     // links with frames to flush
  /// Links shut for no valid hello in time, shut for breaking the
  /// protocol (a bad first frame or token included), and lost (closed by
  /// the peer, or failed: an oversized frame, a peer that does not read).
  /// (Refused over the cap: the listener's counters.)
  std::uint64_t link_timeouts = 0, link_bad = 0, link_lost = 0, link_opened = 0;
  /// Messages of no kind the router takes (remote::drop_unexpected).
  std::uint64_t dropped_messages = 0;
  static inline const char* name = "dspex.router";

  router_state() = default;
  router_state(const router_state&) = delete;
  router_state& operator=(const router_state&) = delete;
  ~router_state() {
    for (auto& kv : links)
      kv.second.link->close();
  }
};

using router_actor = caf::stateful_actor<router_state>;

remote_call* find_by_id(router_actor* self, const caf::actor_addr& caller, std::uint64_t id,
                        std::uint64_t* ref = nullptr) {
  auto& st = self->state;
  auto k = st.by_id.find({caller, id});
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

void flush_links(router_actor* self) {
  auto& st = self->state;
  auto dirty = std::move(st.dirty);
  st.dirty.clear();
  for (auto* key : dirty)
    if (auto i = st.links.find(key); i != st.links.end() && !i->second.out.empty())
      i->second.link->write(std::move(i->second.out)), i->second.out = std::string{};
}

// A frame for a link's caller, written with the others of this turn (a
// flush the router sends itself, behind what its mailbox holds), or at once
// when they fill a batch. Dropped when the link is gone: its caller had
// node_down for it.
void queue_link(router_actor* self, const std::shared_ptr<remote::request_link>& link,
                 remote::link_kind kind, std::uint64_t id, std::string_view text,
                 std::uint64_t seq = 0, bool ack = false) {
  auto& st = self->state;
  auto i = st.links.find(link.get());
  if (i == st.links.end())
    return;
  auto& out = i->second.out;
  if (out.empty()) {
    if (st.dirty.empty())
      self->send(self, lflush_atom::value);
    st.dirty.push_back(link.get());
  }
  remote::append_link_frame(out, kind, id, text, seq, ack);
  if (out.size() >= remote::batch_bytes(router_guard::max_message_bytes()))
    link->write(std::move(out)), out = std::string{};
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
  if (call.link)
    if (auto l = self->state.links.find(call.link.get()); l != self->state.links.end())
      room = static_cast<std::uint32_t>(std::min<std::size_t>(l->second.max_frame, room));
  if (head.size() + data.size() + chunk_envelope_bytes > room) {
    call.failed = make_error(errc::resource_exhausted,
                             "chunk " + std::to_string(c.seq) + " of " + std::to_string(data.size())
                               + " bytes exceeds max_remote_message_bytes ("
                               + std::to_string(room) + "): the request is cancelled");
    cancel_call(self, c.ref);
    return;
  }
  ++call.next_seq;
  if (call.link)
    return queue_link(self, call.link, remote::link_kind::chunk, call.id, data, c.seq, c.ack);
  self->send(call.reply_to, remote::rchunk_atom::value, std::move(head), std::move(data));
}

void flush(router_actor* self, const caf::actor_addr& caller) {
  auto& st = self->state;
  auto i = st.outboxes.find(caller);
  if (i == st.outboxes.end())
    return;
  auto box = std::move(i->second);
  st.outboxes.erase(i);
  if (!box.ids.empty())
    self->send(box.to, remote::rreplies_atom::value, remote::batch_head_text(box.ids),
               std::move(box.texts));
}

void queue_reply(router_actor* self, const caf::actor_addr& caller, const caf::actor& to,
                 std::size_t budget, std::uint64_t id, std::string text) {
  auto& st = self->state;
  if (auto i = st.outboxes.find(caller);
      i != st.outboxes.end() && i->second.bytes + text.size() > budget)
    flush(self, caller);  // it would not fit beside the ones waiting
  auto& box = st.outboxes[caller];
  const bool first = box.ids.empty();
  box.to = to;
  box.budget = budget;
  box.ids.push_back(id);
  box.bytes += text.size();
  box.texts.push_back(std::move(text));
  if (box.bytes >= budget)
    flush(self, caller);
  else if (first)
    self->send(self, rflush_atom::value, caller);
}

// One request of a remote caller: parsed, checked, run on its pool as the
// router's own cancellable request; `done` gets the reply text, once (at
// once when the request is refused). `batch_id` (not 0): the id a batch
// gave it (or its link frame), which its text must carry. `link`: the
// request link it came by, where its chunks go.
template <class Done>
void run_request(router_actor* self, const caf::actor_addr& caller, const caf::actor& reply_to,
                 const std::string& text, std::uint64_t batch_id, Done done,
                 std::shared_ptr<remote::request_link> link = nullptr) {
  auto& st = self->state;
  std::string pool;
  remote::exec_ids ids;
  auto cmd = remote::parse_exec(text, pool, st.hooks.max_json_depth, &ids);
  if (!cmd)
    return done(remote::reply_text(cmd.error()));
  if (batch_id != 0 && ids.id != batch_id)
    return done(remote::reply_text(make_error(
      errc::invalid_request, "a batched request's id must be the batch's id for it ("
                               + std::to_string(batch_id) + ")")));
  auto target = st.hooks.resolve(pool);
  if (!target)
    return done(remote::reply_text(target.error()));
  if (ids.id != 0 && (!caller || st.by_id.count({caller, ids.id}) > 0))
    return done(remote::reply_text(make_error(
      errc::invalid_request, "id " + std::to_string(ids.id) + " is in flight already")));
  // Every request with a sender is the router's own cancellable
  // request on the pool: the sender's death cancels it.
  std::uint64_t ref = 0;
  if (caller) {
    ref = ++st.next_ref;
    remote_call call;
    call.caller = caller;
    call.reply_to = reply_to;
    call.id = ids.id;
    call.pool = *target;
    call.stream = ids.stream;
    call.link = std::move(link);
    st.calls.emplace(ref, std::move(call));
    if (ids.id != 0)
      st.by_id.emplace(std::make_pair(caller, ids.id), ref);
    if (st.callers.insert(caller).second)
      self->monitor(caller);
    cmd->ref = ref;
    if (ids.stream)
      cmd->sink = caf::actor_cast<caf::actor>(self);
  }
  // The pool answers every request by its deadline (the request's
  // timeout_ms, else its workers' request_timeout_ms): no timer here, which
  // would wake the clock thread twice per request.
  self->request(*target, caf::infinite, exec_atom::value, std::move(*cmd))
    .then([self, ref, done](json& j) mutable { done(finish(self, ref, std::move(j))); },
          [self, ref, done](caf::error& e) mutable { done(finish(self, ref, classify(std::move(e)))); });
}

void take_ack(router_actor* self, const caf::actor_addr& caller, std::uint64_t id, std::uint64_t seq) {
  auto* call = find_by_id(self, caller, id);
  // Only chunks forwarded, in order: the worker never sees an ack for a
  // chunk the caller cannot have had.
  if (!call || !call->stream || seq >= call->next_seq || seq < call->acked || !call->worker)
    return;
  call->acked = seq + 1;
  self->send(call->worker, ack_atom::value, call->wire, seq);
}

void take_cancel(router_actor* self, const caf::actor_addr& caller, std::uint64_t id) {
  std::uint64_t ref = 0;
  if (find_by_id(self, caller, id, &ref))
    cancel_call(self, ref);
}

// A link gone (closed by its peer, failed, or shut here): what its caller
// runs by it is cancelled; their replies find no link and are dropped.
void drop_link(router_actor* self, remote::request_link* key) {
  auto& st = self->state;
  auto i = st.links.find(key);
  if (i == st.links.end())
    return;
  i->second.link->close();
  st.links.erase(i);
  for (auto& [ref, call] : st.calls)
    if (call.link.get() == key)
      self->send(call.pool, cancel_atom::value, ref);
}

// One frame from a link: false when it breaks the protocol (the link is
// then shut: nothing after it can be trusted).
bool on_link_frame(router_actor* self, link_entry& e, const std::string& body) {
  auto& st = self->state;
  auto f = remote::parse_link_frame(body);
  if (!f)
    return false;
  if (!e.caller) {
    // The first frame: a hello with a token handed out to a caller, once.
    if (f->kind != remote::link_kind::hello)
      return false;
    // "TOKEN MAX": MAX the largest frame the caller reads (at least 1 KiB).
    auto text = f->text;
    auto space = text.find(' ');
    if (space == std::string_view::npos)
      return false;
    std::size_t their_max = 0;
    for (char c : text.substr(space + 1)) {
      if (c < '0' || c > '9' || their_max > (std::size_t{1} << 40))
        return false;
      their_max = their_max * 10 + static_cast<std::size_t>(c - '0');
    }
    auto t = st.tickets.find(std::string(text.substr(0, space)));
    if (t == st.tickets.end() || t->second.expires < std::chrono::steady_clock::now()
        || their_max < 1024)
      return false;
    e.caller = t->second.caller;
    e.max_frame = std::min(their_max, e.link->max_frame_bytes());
    st.tickets.erase(t);
    // Taken: the caller sends requests only after this.
    queue_link(self, e.link, remote::link_kind::hello, 0, {});
    return true;
  }
  switch (f->kind) {
    case remote::link_kind::exec:
      run_request(self, e.caller, caf::actor{}, std::string(f->text), f->id,
                  [self, link = e.link, max_frame = e.max_frame, id = f->id](std::string reply) {
                    if (reply.size() + remote::link_head_bytes > max_frame)
                      reply = remote::reply_text(make_error(
                        errc::resource_exhausted, "a reply of " + std::to_string(reply.size())
                                                    + " bytes exceeds max_remote_message_bytes"));
                    queue_link(self, link, remote::link_kind::reply, id, reply);
                  },
                  e.link);
      return true;
    case remote::link_kind::ack:
      take_ack(self, e.caller, f->id, f->seq);
      return true;
    case remote::link_kind::cancel:
      take_cancel(self, e.caller, f->id);
      return true;
    default:
      return false;  // a second hello, or what only a router sends
  }
}

void on_link_event(router_actor* self, remote::link_event& ev) {
  auto& st = self->state;
  if (ev.what == remote::link_event::handshake_due) {
    auto i = st.links.find(const_cast<remote::request_link*>(ev.key));
    if (i != st.links.end() && i->second.serial == ev.generation && !i->second.caller) {
      ++st.link_timeouts;
      drop_link(self, i->first);
    }
    return;
  }
  auto* key = ev.link.get();
  if (!key)
    return;
  switch (ev.what) {
    case remote::link_event::opened: {
      if (st.hooks.link_port == 0) {
        ev.link->close();
        return;
      }
      link_entry e{ev.link, {}, {}, 0, ++st.link_opened};
      st.links.emplace(key, std::move(e));
      ev.link->start(self->address(), 0, true);
      remote::link_event due;
      due.what = remote::link_event::handshake_due;
      due.key = key;
      due.generation = st.link_opened;
      self->delayed_send(self, st.hooks.limits.handshake_timeout, std::move(due));
      return;
    }
    case remote::link_event::handshake_due:
      return;
    case remote::link_event::closed:
      if (st.links.count(key) > 0)
        ++st.link_lost;
      drop_link(self, key);
      return;
    case remote::link_event::frames: {
      auto i = st.links.find(key);
      if (i == st.links.end())
        return;  // shut meanwhile
      for (auto& body : ev.bodies)
        if (!on_link_frame(self, i->second, body)) {
          ++st.link_bad;
          return drop_link(self, key);
        }
      return;
    }
  }
}

// The link a hello reply offers its caller: the port and a token valid for
// one link within the handshake timeout. None for an anonymous hello, or
// while as many tokens wait as links may be open.
void offer_link(router_actor* self, json& reply) {
  auto& st = self->state;
  auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
  if (st.hooks.link_port == 0 || !caller)
    return;
  auto now = std::chrono::steady_clock::now();
  for (auto i = st.tickets.begin(); i != st.tickets.end();)
    i = i->second.expires < now ? st.tickets.erase(i) : std::next(i);
  if (st.tickets.size() >= st.hooks.limits.max_connections)
    return;
  auto token = remote::link_token();
  st.tickets[token] = link_ticket{caller, now + st.hooks.limits.handshake_timeout};
  if (st.callers.insert(caller).second)
    self->monitor(caller);
  reply["link"] = {{"port", st.hooks.link_port}, {"token", token}};
}

caf::behavior router(router_actor* self, router_hooks hooks) {
  self->state.hooks = std::move(hooks);
  remote::drop_unexpected(self, self->state.dropped_messages);
  // A remote caller gone (its node died or disconnected, or the actor
  // exited): everything it runs here is cancelled.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (st.callers.erase(dm.source) == 0)
      return;
    st.outboxes.erase(dm.source);
    for (auto i = st.tickets.begin(); i != st.tickets.end();)
      i = i->second.caller == dm.source ? st.tickets.erase(i) : std::next(i);
    std::vector<remote::request_link*> gone;
    for (auto& [key, e] : st.links)
      if (e.caller == dm.source)
        gone.push_back(key);
    for (auto* key : gone)
      drop_link(self, key);
    for (auto& [ref, call] : st.calls)
      if (call.caller == dm.source)
        self->send(call.pool, cancel_atom::value, ref);
  });
  return {
    [self](remote::rhello_atom, const std::string& hello) -> std::string {
      bool wants_link = true;
      if (auto why = remote::check_hello(hello, &wants_link); !why.empty())
        return remote::reply_text(make_error(errc::invalid_request, why));
      // "batch": this router takes (rbatch), with at most that many bytes;
      // "link": where the caller's request link goes.
      json reply{{"pools", self->state.hooks.pools},
                 {"batch", remote::batch_bytes(router_guard::max_message_bytes())}};
      if (wants_link)
        offer_link(self, reply);
      return remote::reply_text(reply);
    },
    [self](remote::rexec_atom, const std::string& text) -> caf::result<std::string> {
      // (The promise takes the sender out of the message: ask first.)
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto reply_to = caf::actor_cast<caf::actor>(self->current_sender());
      auto rp = self->make_response_promise<std::string>();
      run_request(self, caller, reply_to, text, 0,
                  [rp](std::string reply) mutable { rp.deliver(std::move(reply)); });
      return rp;
    },
    // Several requests in one message, answered in (rreplies) one way. A
    // head that cannot be read names no request to answer: dropped.
    [self](remote::rbatch_atom, const std::string& head, const std::vector<std::string>& texts) {
      auto h = remote::parse_batch_head(head, texts.size());
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (!h || !caller)
        return;
      auto reply_to = caf::actor_cast<caf::actor>(self->current_sender());
      const auto budget = std::min(h->reply_bytes, remote::batch_bytes(router_guard::max_message_bytes()));
      for (std::size_t i = 0; i < texts.size(); ++i) {
        const auto id = h->ids[i];
        run_request(self, caller, reply_to, texts[i], id,
                    [self, caller, reply_to, budget, id](std::string reply) {
                      queue_reply(self, caller, reply_to, budget, id, std::move(reply));
                    });
      }
    },
    [self](rflush_atom, const caf::actor_addr& caller) { flush(self, caller); },
    [self](chunk_atom, stream_chunk& c) { forward_chunk(self, c); },
    // Bad input from a peer is dropped: these are one way, and an ack or a
    // cancel for a request that ended meanwhile is no fault.
    [self](remote::rack_atom, const std::string& text) {
      if (auto h = remote::parse_head(text))
        take_ack(self, caf::actor_cast<caf::actor_addr>(self->current_sender()), h->id, h->seq);
    },
    [self](remote::rcancel_atom, const std::string& text) {
      if (auto h = remote::parse_head(text))
        take_cancel(self, caf::actor_cast<caf::actor_addr>(self->current_sender()), h->id);
    },
    [self](remote::link_event& ev) { on_link_event(self, ev); },
    [self](lflush_atom) { flush_links(self); },
    // node::status: what was dropped, and the request link's counters
    // (null: no link port).
    [self](status_atom) -> json {
      auto& st = self->state;
      json link = nullptr;
      if (st.hooks.link_port != 0)
        link = json{{"port", st.hooks.link_port},      {"open", st.links.size()},
                    {"opened", st.link_opened},
                    {"refused", st.hooks.link_counters ? st.hooks.link_counters->refused.load() : 0},
                    {"handshake_timeouts", st.link_timeouts}, {"bad", st.link_bad},
                    {"lost", st.link_lost}};
      return json{{"dropped_messages", st.dropped_messages}, {"request_link", std::move(link)}};
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
