#include <dspex/actors/pool/detail/inflight_table.hpp>

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>

#include <caf/actor_cast.hpp>
#include <caf/actor_control_block.hpp>
#include <caf/mailbox_element.hpp>
#include <caf/message_id.hpp>

#include <algorithm>

namespace dspex {

void inflight_table::bind(const caf::actor_addr& worker, const caf::actor& pool) {
  std::lock_guard<std::mutex> g(mx_);
  worker_ = worker;
  pool_ = pool;
}

void inflight_table::set_pool(const caf::actor& pool) {
  std::lock_guard<std::mutex> g(mx_);
  pool_ = pool;
}

void inflight_table::set_direct(bool on) {
  std::lock_guard<std::mutex> g(mx_);
  direct_ = on;
}

void inflight_table::set_accepting(bool on) {
  std::lock_guard<std::mutex> g(mx_);
  accepting_ = on && !closed_;
}

bool inflight_table::add_if_accepting(std::uint64_t id, inflight_request& r, bool in_session,
                                      std::optional<clock::time_point>& arm) {
  std::lock_guard<std::mutex> g(mx_);
  if (!accepting_)
    return false;
  arm = add_locked(id, std::move(r));
  ++port_sends_;
  if (in_session)
    ++port_session_sends_;
  return true;
}

std::optional<inflight_table::clock::time_point> inflight_table::add(std::uint64_t id,
                                                                     inflight_request r) {
  std::lock_guard<std::mutex> g(mx_);
  return add_locked(id, std::move(r));
}

std::optional<inflight_table::clock::time_point> inflight_table::add_locked(std::uint64_t id,
                                                                            inflight_request r) {
  auto at = r.deadline;
  requests_.emplace(id, std::move(r));
  return deadlines_.add(at, id);
}

std::optional<inflight_request> inflight_table::take(std::uint64_t id, bool moot) {
  std::lock_guard<std::mutex> g(mx_);
  auto r = take_locked(id);
  if (r && moot)
    moot_.insert(id);
  return r;
}

void inflight_table::forget_moot(std::uint64_t id) {
  std::lock_guard<std::mutex> g(mx_);
  moot_.erase(id);
}

std::optional<inflight_request> inflight_table::take_locked(std::uint64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end())
    return std::nullopt;
  auto r = std::move(it->second);
  requests_.erase(it);
  deadlines_.remove(r.deadline, id);
  return r;
}

std::optional<std::pair<std::uint64_t, inflight_request>>
inflight_table::take_by_ref(const caf::actor_addr& caller, std::uint64_t ref) {
  std::lock_guard<std::mutex> g(mx_);
  if (ref == 0)
    return std::nullopt;
  // A scan: cancels are rare, and a worker holds at most max_concurrency.
  for (auto& [id, r] : requests_)
    if (r.ref == ref && caf::actor_cast<caf::actor_addr>(r.rp.source()) == caller) {
      auto key = id;
      moot_.insert(key);
      return std::make_pair(key, std::move(*take_locked(key)));
    }
  return std::nullopt;
}

std::optional<inflight_table::call_context> inflight_table::context_of(std::uint64_t id) {
  std::lock_guard<std::mutex> g(mx_);
  auto it = requests_.find(id);
  if (it == requests_.end())
    return std::nullopt;
  it->second.has_calls = true;
  return call_context{it->second.deadline, it->second.depth, it->second.session};
}

bool inflight_table::contains(std::uint64_t id) const {
  std::lock_guard<std::mutex> g(mx_);
  return requests_.count(id) > 0;
}

chunk_verdict inflight_table::chunk_locked(bridge::reply& rep, caf::actor& sink, caf::message& msg,
                                           std::string& why) {
  auto it = requests_.find(rep.id);
  if (it == requests_.end())
    return chunk_verdict::unknown;
  auto& r = it->second;
  if (!r.sink) {
    why = "chunk for request " + std::to_string(rep.id) + ", which asked for no stream";
    return chunk_verdict::bad;
  }
  if (rep.seq != r.next_seq) {
    why = "chunk " + std::to_string(rep.seq) + " of request " + std::to_string(rep.id)
          + " where " + std::to_string(r.next_seq) + " was due";
    return chunk_verdict::bad;
  }
  ++r.next_seq;
  const bool ack = r.credit.take(rep.bytes);
  sink = r.sink;
  msg = caf::make_message(chunk_atom::value,
                          stream_chunk{r.ref, rep.seq, std::move(rep.result), rep.id, ack});
  return chunk_verdict::delivered;
}

chunk_verdict inflight_table::chunk(bridge::reply& rep, std::string& why) {
  return deliver_chunk(rep, why, false);
}

chunk_verdict inflight_table::deliver_chunk(bridge::reply& rep, std::string& why, bool direct_only) {
  caf::actor sink;
  caf::message msg;
  caf::actor_addr worker;
  chunk_verdict v;
  {
    std::lock_guard<std::mutex> g(mx_);
    if (direct_only && !direct_)
      return chunk_verdict::unknown;
    if (moot_.count(rep.id) > 0)
      return chunk_verdict::moot;
    v = chunk_locked(rep, sink, msg, why);
    // Anything else the actor must judge (a protocol error, as it stands):
    // later frames go to it too, so none is answered before it has.
    if (direct_only && v != chunk_verdict::delivered)
      direct_ = false;
    worker = worker_;
  }
  if (v == chunk_verdict::delivered)
    caf::actor_cast<caf::abstract_actor*>(sink)->enqueue(
      caf::actor_cast<caf::strong_actor_ptr>(worker), caf::make_message_id(), std::move(msg), nullptr);
  return v;
}

std::vector<inflight_request> inflight_table::take_all() {
  std::lock_guard<std::mutex> g(mx_);
  accepting_ = false;
  closed_ = true;
  moot_.clear();
  std::vector<inflight_request> out;
  out.reserve(requests_.size());
  for (auto& kv : requests_)
    out.push_back(std::move(kv.second));
  requests_.clear();
  deadlines_.clear();
  return out;
}

std::vector<std::uint64_t> inflight_table::fire(clock::time_point fired, clock::time_point now) {
  std::lock_guard<std::mutex> g(mx_);
  return deadlines_.fire(fired, now);
}

std::optional<inflight_table::clock::time_point> inflight_table::next_timer() {
  std::lock_guard<std::mutex> g(mx_);
  return deadlines_.next();
}

void inflight_table::note_answer(bool success) {
  std::lock_guard<std::mutex> g(mx_);
  count_answer_locked(success);
}

void inflight_table::count_answer_locked(bool success) {
  ++answered_;
  if (!success)
    ++errors_;
  consecutive_faults_ = 0;
  last_answer_ = clock::now();
}

void inflight_table::note_fault() {
  std::lock_guard<std::mutex> g(mx_);
  ++consecutive_faults_;
}

inflight_table::counts inflight_table::snapshot() const {
  std::lock_guard<std::mutex> g(mx_);
  return counts{requests_.size(), answered_, errors_, direct_answers_,
                port_sends_, port_session_sends_, consecutive_faults_, last_answer_};
}

bool inflight_table::answer(bridge::reply& rep) {
  if (rep.kind == bridge::frame_kind::call || rep.kind == bridge::frame_kind::cancel_call)
    return false;  // host calls are the actor's
  if (rep.is_chunk()) {
    // In order and for a known stream: straight to its sink; anything else
    // (a too-deep chunk, one the actor must classify) goes to the actor.
    std::string why;
    if (!rep.too_deep.empty()) {
      std::lock_guard<std::mutex> g(mx_);
      direct_ = false;  // the actor fails the stream; what follows is its
      return false;
    }
    auto v = deliver_chunk(rep, why, true);
    return v == chunk_verdict::delivered || v == chunk_verdict::moot;
  }
  inflight_request req;
  caf::actor pool;
  caf::actor_addr worker;
  {
    std::lock_guard<std::mutex> g(mx_);
    if (!direct_)
      return false;
    auto it = requests_.find(rep.id);
    if (it == requests_.end() || it->second.is_init || it->second.has_calls)
      return false;
    req = std::move(*take_locked(rep.id));
    count_answer_locked(rep.success && rep.too_deep.empty());
    ++direct_answers_;
    pool = pool_;
    worker = worker_;
  }
  // As response_promise::deliver would, but from this thread: no execution
  // unit (the scheduler's external queue), the worker named as the sender.
  auto me = caf::actor_cast<caf::strong_actor_ptr>(worker);
  const bool plain = rep.success && rep.too_deep.empty();
  if (req.pooled && pool)
    caf::actor_cast<caf::abstract_actor*>(pool)->enqueue(
      me, caf::make_message_id(),
      plain ? caf::make_message(done_atom::value, true, req.tag)
            : caf::make_message(done_atom::value, rep.success, req.tag, std::string(reply_class(rep))),
      nullptr);
  auto msg = plain ? caf::make_message(std::move(rep.result)) : caf::make_message(reply_error(rep));
  auto& rp = req.rp;
  if (!rp.stages().empty()) {
    auto stages = rp.stages();
    auto next = std::move(stages.back());
    stages.pop_back();
    if (next)
      next->enqueue(caf::make_mailbox_element(rp.source(), rp.id(), std::move(stages), std::move(msg)),
                    nullptr);
  } else if (rp.source()) {
    rp.source()->enqueue(me, rp.id().response_id(), std::move(msg), nullptr);
  }
  return true;
}

} // namespace dspex
