#include <dspex/actors/remote/remote_pool.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/actors/pool/detail/deadlines.hpp>
#include <dspex/actors/node/detail/io_scheduler.hpp>
#include <dspex/actors/remote/detail/remote_protocol.hpp>
#include <dspex/actors/remote/detail/request_link.hpp>
#include <dspex/actors/remote/detail/router_guard.hpp>

#include <caf/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include <ctime>
#include <map>
#include <unordered_set>

namespace dspex {

namespace {

using reconnect_atom = caf::atom_constant<caf::atom("reconnect")>;
using rflush_atom = caf::atom_constant<caf::atom("rflush")>;
using link_due_atom = caf::atom_constant<caf::atom("linkdue")>;

enum class phase { connecting, connected, down };

const char* to_string(phase p) {
  switch (p) {
    case phase::connecting: return "connecting";
    case phase::connected: return "connected";
    case phase::down: return "down";
  }
  return "?";
}

std::string utc(std::chrono::system_clock::time_point t) {
  auto s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

/// A request on the wire, answered exactly once: by its reply, by node_down
/// when the connection goes, by `cancelled` when its caller cancels it or
/// dies, or by a classified error when its stream breaks the protocol.
struct pending_call {
  caf::response_promise rp;
  std::uint64_t ref = 0;  // the caller's command_request::ref (0: not cancellable)
  caf::actor_addr caller;
  caf::actor sink;            // a stream's: where chunks go
  std::uint64_t next_seq = 0;  // the chunk due next
  std::uint64_t acked = 0;     // chunks acknowledged by the sink and passed on
  deadline_book::clock::time_point due{};  // batched: answered command_timeout then
};

struct remote_state {
  remote_pool_config cfg;
  phase at = phase::connecting;
  std::chrono::system_clock::time_point since = std::chrono::system_clock::now();
  std::string last_error;
  caf::actor router;
  /// Tags one connection attempt (or one connection): callbacks and
  /// timers of an older one find a newer number and do nothing.
  std::uint64_t generation = 0;
  std::chrono::milliseconds backoff{0};
  std::uint64_t connects = 0, failed_attempts = 0, forwarded = 0;
  /// Requests on the wire by id (the remote side's name for them).
  std::map<std::uint64_t, pending_call> pending;
  std::uint64_t next_id = 0;
  /// Callers of cancellable requests, monitored: their death cancels them.
  std::unordered_set<caf::actor_addr> callers;
  std::uint64_t chunks = 0, cancelled = 0;
  /// Stream messages dropped: late (for a request answered already) and
  /// bad (unreadable, from elsewhere, for an id never sent).
  std::uint64_t late_messages = 0, bad_messages = 0;
  bool draining = false;
  /// The router takes batches of at most this many bytes (its hello said
  /// so); 0: an older node, one rexec request each.
  std::size_t batch_bytes = 0;
  /// Requests waiting for the end of this turn (a flush sent to self),
  /// then sent as one (rbatch).
  std::vector<std::uint64_t> out_ids;
  std::vector<std::string> out_texts;
  std::size_t out_bytes = 0;
  std::uint64_t batches = 0;  // (rbatch) messages sent, or link writes
  /// The request link (request_link.hpp): while set, every request, ack
  /// and cancel goes by it. `link_wait`: the hello offered one and it is
  /// being connected (the remote_pool is not connected before it is up, or
  /// has failed: then requests go by BASP, and link_note says why).
  std::shared_ptr<remote::request_link> link;
  bool link_wait = false;
  std::string link_note;
  std::uint64_t links = 0;  // links opened
  /// The request_timeout_ms of batched requests, behind one timer.
  deadline_book deadlines;
  /// BASP messages are screened while it lives, and may come to it
  /// (router_guard::screening).
  std::shared_ptr<void> screening;
  static inline const char* name = "dspex.remote_pool";

  remote_state() = default;
  remote_state(const remote_state&) = delete;
  remote_state& operator=(const remote_state&) = delete;
  ~remote_state() {
    if (link)
      link->close();
  }

  std::string where() const {
    return cfg.host + ":" + std::to_string(cfg.port) + (cfg.pool.empty() ? "" : "/" + cfg.pool);
  }
};

using remote_actor = caf::stateful_actor<remote_state>;

void answer(remote_actor* self, std::uint64_t id, caf::expected<json> r) {
  auto& st = self->state;
  auto i = st.pending.find(id);
  if (i == st.pending.end())
    return;  // answered already (node_down, cancelled): a late reply is dropped
  auto rp = std::move(i->second.rp);
  if (i->second.due != deadline_book::clock::time_point{})
    st.deadlines.remove(i->second.due, id);
  st.pending.erase(i);
  if (r)
    rp.deliver(std::move(*r));
  else
    rp.deliver(std::move(r.error()));
}

// One frame on the link, alone (a cancel or an ack: rare beside requests,
// which go in the turn's batch).
void write_link_frame(remote_state& st, remote::link_kind kind, std::uint64_t id,
                      std::uint64_t seq = 0) {
  std::string f;
  remote::append_link_frame(f, kind, id, {}, seq);
  st.link->write(std::move(f));
}

// Lets the link go (closed, and requests by BASP until another is had).
void forget_link(remote_state& st) {
  if (st.link)
    st.link->close();
  st.link = nullptr;
  st.link_wait = false;
}

// Tells the remote node to stop request `id` (its router cancels it on its
// pool); one way, and harmless when the request ended there meanwhile.
void send_cancel(remote_actor* self, std::uint64_t id) {
  auto& st = self->state;
  if (st.link)
    write_link_frame(st, remote::link_kind::cancel, id);
  else if (st.router)
    self->send(st.router, remote::rcancel_atom::value, remote::head_text({id, 0, false}));
}

// Takes request `id` out of this turn's batch, if it waits there: it never
// leaves then (a cancel sent now would reach the router before it).
bool unsend(remote_actor* self, std::uint64_t id) {
  auto& st = self->state;
  for (std::size_t i = 0; i < st.out_ids.size(); ++i)
    if (st.out_ids[i] == id) {
      st.out_bytes -= st.out_texts[i].size();
      st.out_ids.erase(st.out_ids.begin() + static_cast<std::ptrdiff_t>(i));
      st.out_texts.erase(st.out_texts.begin() + static_cast<std::ptrdiff_t>(i));
      return true;
    }
  return false;
}

// Answered here with `err` at once, and cancelled on the remote node (or
// not sent at all, when it still waits in this turn's batch).
void abandon(remote_actor* self, std::uint64_t id, caf::error err) {
  if (!unsend(self, id))
    send_cancel(self, id);
  answer(self, id, std::move(err));
}

void fail_all(remote_actor* self, const caf::error& err) {
  auto all = std::move(self->state.pending);
  self->state.pending.clear();
  self->state.deadlines.clear();
  self->state.out_ids.clear();
  self->state.out_texts.clear();
  self->state.out_bytes = 0;
  for (auto& kv : all)
    kv.second.rp.deliver(err);
}

void cancel_by_caller(remote_actor* self, const caf::actor_addr& caller, std::uint64_t ref,
                      const std::string& why) {
  std::vector<std::uint64_t> ids;
  for (auto& [id, p] : self->state.pending)
    if (p.ref != 0 && p.caller == caller && (ref == 0 || p.ref == ref))
      ids.push_back(id);
  for (auto id : ids) {
    ++self->state.cancelled;
    abandon(self, id, make_error(errc::cancelled, why));
  }
}

// A chunk, from BASP (rchunk) or the link: to the request's sink in order,
// as a local pool's chunk; anything else is classified, and a stream that
// breaks the protocol is answered with the error and cancelled there.
void take_chunk(remote_actor* self, const remote::stream_head& h, const std::string& data) {
  auto& st = self->state;
  auto i = st.pending.find(h.id);
  if (i == st.pending.end()) {
    ++(h.id <= st.next_id ? st.late_messages : st.bad_messages);
    return;
  }
  auto& p = i->second;
  auto broken = [&](std::string why) {
    ++st.bad_messages;
    abandon(self, h.id, make_error(errc::protocol_error, "remote node " + st.where() + ": " + why));
  };
  if (!p.sink)
    return broken("a chunk for request " + std::to_string(h.id) + ", which asked for no stream");
  if (h.seq != p.next_seq)
    return broken("chunk " + std::to_string(h.seq) + " of request " + std::to_string(h.id)
                  + " where " + std::to_string(p.next_seq) + " was due");
  auto value = remote::parse_data(data, st.cfg.max_json_depth);
  if (!value) {
    ++st.bad_messages;
    return abandon(self, h.id, value.error());
  }
  ++p.next_seq;
  ++st.chunks;
  self->send(p.sink, chunk_atom::value, stream_chunk{p.ref, h.seq, std::move(*value), h.id, h.ack});
}

void on_chunk(remote_actor* self, const std::string& head, const std::string& data) {
  auto& st = self->state;
  auto from = self->current_sender();
  if (!st.router || !from || from->node() != st.router.node()) {
    ++st.bad_messages;  // not from the node connected now
    return;
  }
  auto h = remote::parse_head(head);
  if (!h) {
    ++st.bad_messages;
    return;
  }
  take_chunk(self, *h, data);
}

// (ack, id, seq) from a sink: passed to the router, which acknowledges the
// chunks to its worker only now; an ack for no chunk delivered is dropped.
void on_ack(remote_actor* self, std::uint64_t id, std::uint64_t seq) {
  auto& st = self->state;
  auto i = st.pending.find(id);
  if (i == st.pending.end())
    return;  // the stream ended meanwhile
  auto& p = i->second;
  // (ack_chunk sends it anonymously: the sender cannot be checked.)
  if (!p.sink || seq >= p.next_seq || seq < p.acked || !st.router)
    return;
  p.acked = seq + 1;
  if (st.link)
    return write_link_frame(st, remote::link_kind::ack, id, seq);
  self->send(st.router, remote::rack_atom::value, remote::head_text({id, seq, false}));
}

void schedule_retry(remote_actor* self) {
  auto& st = self->state;
  st.backoff = st.backoff.count() == 0 ? st.cfg.reconnect_min
                                       : std::min(st.backoff * 2, st.cfg.reconnect_max);
  self->delayed_send(self, st.backoff, reconnect_atom::value, st.generation);
}

// The connection is gone or never came: everything in flight gets
// node_down, and a new attempt follows after the backoff.
void went_down(remote_actor* self, const std::string& why) {
  auto& st = self->state;
  if (st.at != phase::down)
    st.since = std::chrono::system_clock::now();
  st.at = phase::down;
  st.last_error = why;
  // The next hello monitors the router again (the same proxy, when only
  // the link was lost): one monitor at a time.
  if (st.router)
    self->demonitor(st.router);
  st.router = nullptr;
  forget_link(st);
  ++st.generation;
  fail_all(self, make_error(errc::node_down, "remote node " + st.where() + ": " + why));
  schedule_retry(self);
}

void now_connected(remote_actor* self) {
  auto& st = self->state;
  st.at = phase::connected;
  st.since = std::chrono::system_clock::now();
  st.last_error.clear();
  st.backoff = std::chrono::milliseconds{0};
  ++st.connects;
}

// Why this side cannot use a request link (its hello then asks for none);
// empty when it can.
std::string link_unusable(remote_actor* self) {
  if (self->state.cfg.tls)
    return "tls: requests go by BASP";
  if (!driven_io_loop(self->home_system()))
    return "this actor system runs no io scheduler: requests go by BASP";
  return {};
}

// The hello offered a request link: connect it, and be connected once it is
// up (or has failed: then by BASP). False when there is none to use (none
// offered, tls, or no io loop in this actor system).
bool open_link(remote_actor* self, const json& offer) {
  auto& st = self->state;
  st.link_note = link_unusable(self);
  auto l = offer.find("link");
  if (!st.link_note.empty() || l == offer.end() || !l->is_object())
    return false;
  auto port = l->find("port");
  auto token = l->find("token");
  if (port == l->end() || !port->is_number_unsigned() || port->get<std::uint64_t>() == 0
      || port->get<std::uint64_t>() > 65535 || token == l->end() || !token->is_string()
      || token->get_ref<const std::string&>().size() > 64) {
    st.link_note = "the hello offered a request link that cannot be read";
    return false;
  }
  auto loop = driven_io_loop(self->home_system());
  // "TOKEN MAX": the router writes no frame larger than this side reads.
  std::string hello;
  remote::append_link_frame(hello, remote::link_kind::hello, 0,
                            token->get_ref<const std::string&>() + " "
                              + std::to_string(router_guard::max_message_bytes()));
  st.link_wait = true;
  remote::connect_link(loop, st.cfg.host, static_cast<std::uint16_t>(port->get<std::uint64_t>()),
                       self->address(), st.generation, router_guard::max_message_bytes(),
                       std::move(hello), st.cfg.connect_timeout);
  self->delayed_send(self, st.cfg.connect_timeout, link_due_atom::value, st.generation);
  return true;
}

// The link could not be had: requests go by BASP, and status says why.
void without_link(remote_actor* self, const std::string& why) {
  auto& st = self->state;
  forget_link(st);
  st.link_note = "request link: " + why + "; requests go by BASP";
  now_connected(self);
}

void on_link_frames(remote_actor* self, std::vector<std::string>& bodies);

void on_link_event(remote_actor* self, remote::link_event& ev) {
  auto& st = self->state;
  switch (ev.what) {
    case remote::link_event::opened:
      if (ev.generation != st.generation || !st.link_wait || st.link) {
        ev.link->close();  // an older attempt's, or too late
        return;
      }
      st.link = ev.link;  // not used before the router's hello says it took it
      return;
    case remote::link_event::closed:
      if (ev.generation != st.generation || (ev.link && ev.link != st.link))
        return;
      if (st.link_wait)
        return without_link(self, ev.why);  // refused, or never connected
      if (st.link)
        went_down(self, "request link lost (" + ev.why + ")");
      return;
    case remote::link_event::frames:
      if (!st.link || ev.link != st.link)
        return;
      if (st.link_wait) {
        // The router's hello first: the link is taken.
        if (ev.bodies.empty())
          return;
        auto f = remote::parse_link_frame(ev.bodies.front());
        if (!f || f->kind != remote::link_kind::hello)
          return without_link(self, "the router's first frame is not its hello");
        st.link_wait = false;
        ++st.links;
        now_connected(self);
        ev.bodies.erase(ev.bodies.begin());
      }
      on_link_frames(self, ev.bodies);
      return;
    case remote::link_event::handshake_due:
      return;
  }
}

void connect(remote_actor* self) {
  auto& st = self->state;
  auto gen = ++st.generation;
  if (st.at != phase::down)
    st.since = std::chrono::system_clock::now();
  if (st.at != phase::down)
    st.at = phase::connecting;
  auto& sys = self->home_system();
  auto mm = st.cfg.tls ? sys.openssl_manager().actor_handle() : sys.middleman().actor_handle();
  auto failed = [self, gen](const std::string& why) {
    auto& s = self->state;
    if (s.generation != gen)
      return;
    ++s.failed_attempts;
    went_down(self, why);
  };
  self->request(mm, st.cfg.connect_timeout, caf::connect_atom::value, st.cfg.host, st.cfg.port)
    .then(
      [self, gen, failed](caf::node_id&, caf::strong_actor_ptr& ptr, std::set<std::string>&) {
        if (self->state.generation != gen)
          return;
        if (!ptr)
          return failed("nothing is published at that port");
        auto router = caf::actor_cast<caf::actor>(ptr);
        self->request(router, self->state.cfg.connect_timeout, remote::rhello_atom::value,
                      remote::hello_text(link_unusable(self).empty()))
          .then(
            [self, gen, failed, router](std::string& text) {
              auto& s = self->state;
              if (s.generation != gen)
                return;
              // CAF matches a response by its id alone: another peer of
              // this process could answer first (docs/security.md).
              if (self->current_sender() != caf::actor_cast<caf::strong_actor_ptr>(router))
                return failed("hello answered by another actor than the router");
              auto r = remote::parse_reply(text);
              if (!r)
                return failed("hello refused: " + describe(r.error()));
              s.router = router;
              s.batch_bytes = 0;
              if (auto b = r->find("batch"); b != r->end() && b->is_number_unsigned())
                s.batch_bytes = std::min(b->get<std::size_t>(),
                                         remote::batch_bytes(router_guard::max_message_bytes()));
              self->monitor(router);
              if (!open_link(self, *r))
                now_connected(self);
            },
            [failed](caf::error& e) { failed("hello: " + caf::to_string(e)); });
      },
      [failed](caf::error& e) { failed("connect: " + caf::to_string(e)); });
}

caf::error translate(caf::error e, const remote_state& st) {
  if (code_of(e))
    return e;
  if (e == caf::sec::request_timeout)
    return make_error(errc::command_timeout, "no reply from remote node " + st.where()
                                               + " within its request_timeout_ms");
  return make_error(errc::node_down, "remote node " + st.where() + ": " + caf::to_string(e));
}

// The requests gathered this turn, as one (rbatch).
void flush_out(remote_actor* self) {
  auto& st = self->state;
  if (st.out_ids.empty())
    return;
  auto ids = std::move(st.out_ids);
  auto texts = std::move(st.out_texts);
  st.out_ids.clear();
  st.out_texts.clear();
  st.out_bytes = 0;
  if (!st.router)
    return;  // gone meanwhile: went_down answered them node_down
  ++st.batches;
  if (st.link) {
    std::string frames;
    for (std::size_t i = 0; i < ids.size(); ++i)
      remote::append_link_frame(frames, remote::link_kind::exec, ids[i], texts[i]);
    st.link->write(std::move(frames));
    return;
  }
  self->send(st.router, remote::rbatch_atom::value, remote::batch_head_text(ids, st.batch_bytes),
             std::move(texts));
}

// A request into this turn's batch: sent when the turn ends (the flush
// queued behind the messages waiting now), or at once when it fills it.
void queue_out(remote_actor* self, std::uint64_t id, std::string text) {
  auto& st = self->state;
  if (!st.out_ids.empty() && st.out_bytes + text.size() > st.batch_bytes)
    flush_out(self);  // it would not fit beside the ones waiting
  const bool first = st.out_ids.empty();
  st.out_ids.push_back(id);
  st.out_bytes += text.size();
  st.out_texts.push_back(std::move(text));
  if (st.out_bytes >= st.batch_bytes)
    flush_out(self);
  else if (first)
    self->send(self, rflush_atom::value);
}

// (rreplies, head, replies) from the router: each answers its request once.
void on_replies(remote_actor* self, const std::string& head, std::vector<std::string>& texts) {
  auto& st = self->state;
  auto from = self->current_sender();
  if (!st.router || !from || from->node() != st.router.node()) {
    ++st.bad_messages;  // not from the node connected now
    return;
  }
  auto h = remote::parse_batch_head(head, texts.size());
  if (!h) {
    ++st.bad_messages;
    return;
  }
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto id = h->ids[i];
    if (st.pending.count(id) == 0) {
      ++(id <= st.next_id ? st.late_messages : st.bad_messages);
      continue;
    }
    answer(self, id, remote::parse_reply(texts[i], st.cfg.max_json_depth));
  }
}

// Frames from the link: replies answer their requests once, chunks go to
// their sinks. A frame a router never sends, or one that cannot be read,
// is counted and dropped.
void on_link_frames(remote_actor* self, std::vector<std::string>& bodies) {
  auto& st = self->state;
  for (auto& body : bodies) {
    auto f = remote::parse_link_frame(body);
    if (!f || (f->kind != remote::link_kind::reply && f->kind != remote::link_kind::chunk)) {
      ++st.bad_messages;
      continue;
    }
    if (f->kind == remote::link_kind::chunk) {
      remote::stream_head h{f->id, f->seq, f->ack};
      take_chunk(self, h, std::string(f->text));
      continue;
    }
    if (st.pending.count(f->id) == 0) {
      ++(f->id <= st.next_id ? st.late_messages : st.bad_messages);
      continue;
    }
    answer(self, f->id, remote::parse_reply(std::string(f->text), st.cfg.max_json_depth));
  }
}

caf::behavior remote_pool(remote_actor* self, remote_pool_config cfg) {
  self->state.cfg = std::move(cfg);
  self->state.screening = router_guard::screening(self->node(), self->id());
  remote::drop_unexpected(self, self->state.bad_messages);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (st.router && msg.source == st.router.address())
      went_down(self, "connection lost (" + caf::to_string(msg.reason) + ")");
    else if (st.callers.erase(msg.source) > 0)
      cancel_by_caller(self, msg.source, 0, "the caller exited");
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    for (auto& kv : self->state.pending)
      send_cancel(self, kv.first);
    fail_all(self, make_error(errc::shutting_down, "the remote_pool " + self->state.cfg.name
                                                     + " is stopping"));
    self->quit(msg.reason);
  });
  connect(self);
  return {
    [self](exec_atom, command_request& cmd) -> caf::result<json> {
      auto& st = self->state;
      if (st.draining)
        return make_error(errc::shutting_down, "the node is stopping");
      if (st.at != phase::connected)
        return make_error(errc::node_down, "remote node " + st.where() + " is "
                                             + to_string(st.at) + " since " + utc(st.since)
                                             + (st.last_error.empty() ? "" : ": " + st.last_error));
      // exec_text copies and dumps the args: both recurse.
      if (bridge::value_depth_exceeds(cmd.args, st.cfg.max_json_depth))
        return make_error(errc::invalid_request,
                          bridge::depth_message("args", st.cfg.max_json_depth));
      // (The promise takes the sender out of the message: ask first.)
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      pending_call p;
      p.rp = self->make_response_promise();
      p.ref = cmd.ref;
      p.caller = caller;
      p.sink = cmd.sink;
      if (p.ref != 0 && caller && st.callers.insert(caller).second)
        self->monitor(caller);
      auto id = ++st.next_id;
      const bool stream = static_cast<bool>(p.sink);
      ++st.forwarded;
      if (st.batch_bytes > 0) {
        // One way, in this turn's batch; the request_timeout_ms is kept
        // here (deadline_book: one timer, not one per request).
        p.due = deadline_book::clock::now() + st.cfg.request_timeout + cmd.timeout;
        arm_deadline(self, st.deadlines.add(p.due, id));
        st.pending.emplace(id, std::move(p));
        queue_out(self, id, remote::exec_text(cmd, st.cfg.pool, id, stream));
        return caf::delegated<json>();
      }
      st.pending.emplace(id, std::move(p));
      auto wait = st.cfg.request_timeout + cmd.timeout;
      self->request(st.router, wait, remote::rexec_atom::value,
                    remote::exec_text(cmd, st.cfg.pool, id, stream))
        .then([self, id](std::string& text) {
                if (self->current_sender() != caf::actor_cast<caf::strong_actor_ptr>(self->state.router))
                  return answer(self, id, make_error(errc::protocol_error,
                                                     "answered by another actor than the router"));
                answer(self, id, remote::parse_reply(text, self->state.cfg.max_json_depth));
              },
              [self, id](caf::error& e) {
                if (e == caf::sec::request_timeout)
                  send_cancel(self, id);
                answer(self, id, translate(std::move(e), self->state));
              });
      return caf::delegated<json>();
    },
    [self](remote::rchunk_atom, const std::string& head, const std::string& data) {
      on_chunk(self, head, data);
    },
    [self](remote::rreplies_atom, const std::string& head, std::vector<std::string>& texts) {
      on_replies(self, head, texts);
    },
    [self](rflush_atom) { flush_out(self); },
    [self](remote::link_event& ev) { on_link_event(self, ev); },
    [self](link_due_atom, std::uint64_t gen) {
      auto& st = self->state;
      if (gen == st.generation && st.link_wait)
        without_link(self, "not up within connect_timeout_ms");
    },
    [self](deadline_atom, std::int64_t at_ns) {
      auto& st = self->state;
      auto now = deadline_book::clock::now();
      for (auto id : st.deadlines.fire(deadline_book::from_ns(at_ns), now)) {
        if (st.pending.count(id) == 0)
          continue;
        if (!unsend(self, id))
          send_cancel(self, id);
        auto& p = st.pending.at(id);
        p.due = {};  // fired: not in the book any more
        answer(self, id, make_error(errc::command_timeout, "no reply from remote node " + st.where()
                                                             + " within its request_timeout_ms"));
      }
      arm_deadline(self, st.deadlines.next());
    },
    [self](ack_atom, std::uint64_t id, std::uint64_t seq) { on_ack(self, id, seq); },
    [self](cancel_atom, std::uint64_t ref) {
      auto caller = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (ref != 0 && caller)
        cancel_by_caller(self, caller, ref, "request cancelled by its caller");
    },
    [self](reconnect_atom, std::uint64_t gen) {
      if (gen == self->state.generation && self->state.at == phase::down)
        connect(self);
    },
    [self](ready_atom) {},
    [self](drain_atom) { self->state.draining = true; },
    // node::status asks every child of the tree.
    [self](stats_atom) -> json { return json{{"state", to_string(self->state.at)}}; },
    [self](status_atom) -> json {
      auto& st = self->state;
      json j = {{"host", st.cfg.host},         {"port", st.cfg.port},
                {"pool", st.cfg.pool},         {"tls", st.cfg.tls},
                {"state", to_string(st.at)},   {"since", utc(st.since)},
                {"connects", st.connects},     {"failed_attempts", st.failed_attempts},
                {"forwarded", st.forwarded},   {"batches", st.batches},
                {"link", st.link ? "up" : st.link_wait ? "connecting" : "none"},
                {"links", st.links},
                {"in_flight", st.pending.size()},
                {"chunks", st.chunks},         {"cancelled", st.cancelled},
                {"late_messages", st.late_messages}, {"bad_messages", st.bad_messages}};
      if (!st.last_error.empty())
        j["last_error"] = st.last_error;
      if (!st.link_note.empty())
        j["link_note"] = st.link_note;
      return j;
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_remote_pool(caf::local_actor* ctx, const remote_pool_config& cfg) {
  auto& sys = ctx->home_system();
  if (!sys.has_middleman())
    return make_error(errc::invalid_config, "remote_pool " + cfg.name
                                              + ": the actor_system has no middleman (call "
                                                "dspex::network_settings before creating it)");
  if (cfg.tls && !sys.has_openssl_manager())
    return make_error(errc::invalid_config, "remote_pool " + cfg.name
                                              + ": tls needs the openssl module (call "
                                                "dspex::network_settings before creating the "
                                                "actor_system)");
  return ctx->spawn(remote_pool, cfg);
}

} // namespace dspex
