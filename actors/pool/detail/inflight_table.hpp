// The requests a worker has in flight, shared by the worker actor and the
// io thread that reads the worker's replies.
//
// Why: a reply used to travel io thread -> worker actor -> caller, two
// mailbox hops and on a quiet machine two thread wake-ups, each of them
// tens of microseconds on a 2-core VM (docs/architecture.md, The request
// path). The io thread now answers an ordinary reply itself: it takes the
// request out of this table, tells the pool (done) in the worker's name and
// then answers the caller, so the worker actor does not run at all for it.
//
// Who answers: whoever takes a request out of the table under its lock (the
// io thread for a reply, the actor for a timeout or a fault), so each caller
// is answered exactly once. Everything else stays with the actor: a frame
// the io thread does not answer (the init ping, a late or unknown id, a
// malformed frame) goes to the actor as before, and so do all frames while
// direct answers are off (the worker retired, or adopted by a new pool and
// not yet joined). Order holds: the pool's mailbox gets (done) before the
// caller can send its next request, and the frame of an entry added later
// cannot arrive before the entry.
#pragma once

#include <dspex/actors/pool/detail/deadlines.hpp>
#include <dspex/actors/pool/detail/stream_credit.hpp>
#include <dspex/bridge/protocol.hpp>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/response_promise.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace dspex {

struct inflight_request {
  caf::response_promise rp;
  bool is_init = false;
  bool pooled = false;
  std::uint64_t tag = 0;  // the pool's job (pooled only)
  std::chrono::milliseconds timeout{0};
  deadline_book::clock::time_point deadline;
  std::uint64_t ref = 0;        // the caller's name for it (command_request::ref)
  caf::actor sink;              // a stream's: where chunks go
  stream_credit credit;         // a stream's: which chunks ask for an ack
  std::uint64_t next_seq = 0;   // the chunk expected next
  std::uint8_t depth = 0;       // host-call depth (command_request::depth)
  std::optional<std::string> session;  // for its host calls' session rule
  bool has_calls = false;       // made host calls: its reply is the actor's
};

/// What became of a chunk frame (inflight_table::chunk).
enum class chunk_verdict {
  delivered,  ///< sent to its request's sink
  moot,       ///< its request's caller was answered early: dropped
  unknown,    ///< no such request in the table (finished, cancelled, timed out, or never)
  bad,        ///< a request that asked for no stream, or a seq out of order
};

class inflight_table {
public:
  using clock = deadline_book::clock;

  // -- the actor's side ------------------------------------------------------

  /// The worker (named as the sender of direct answers) and the pool it
  /// tells (done); invalid pool: a worker on its own.
  void bind(const caf::actor_addr& worker, const caf::actor& pool);
  void set_pool(const caf::actor& pool);

  /// Whether the io thread may answer replies (see above).
  void set_direct(bool on);
  /// Whether the pool may add requests itself (worker_port.hpp): on while
  /// the worker serves, off while it starts, is in its grace or is being
  /// adopted. take_all turns it off for good.
  void set_accepting(bool on);
  /// The next request id; the actor and the port draw from one sequence.
  std::uint64_t next_id() noexcept { return next_id_.fetch_add(1, std::memory_order_relaxed); }

  /// Adds `id` before its frame is written; returns the time to arm the
  /// actor's deadline timer for, if any (deadline_book::add).
  std::optional<clock::time_point> add(std::uint64_t id, inflight_request r);

  /// Takes `id` out (with its deadline); nullopt when already answered.
  /// `moot`: its caller is answered early (a timeout, a chunk too deep),
  /// the handler runs on: chunks it still sends are dropped on the io
  /// thread until forget_moot(id).
  std::optional<inflight_request> take(std::uint64_t id, bool moot = false);

  /// Takes out the request `ref` that `caller` sent, moot; its id too.
  std::optional<std::pair<std::uint64_t, inflight_request>>
  take_by_ref(const caf::actor_addr& caller, std::uint64_t ref);

  /// The handler of moot request `id` ended (its reply came).
  void forget_moot(std::uint64_t id);

  /// A copy of what request `id`'s host calls need (its deadline, depth,
  /// session); nothing when it is not in the table.
  struct call_context {
    clock::time_point deadline;
    std::uint8_t depth = 0;
    std::optional<std::string> session;
  };
  /// ... and marks it as having made host calls: its reply then goes to
  /// the actor, which cancels the calls still open.
  std::optional<call_context> context_of(std::uint64_t id);

  /// Whether request `id` is in the table.
  bool contains(std::uint64_t id) const;

  /// Delivers the chunk `rep` (is_chunk) to its request's sink, in the
  /// worker's name; `why` says what is wrong when bad.
  chunk_verdict chunk(bridge::reply& rep, std::string& why);

  /// Takes every request out (a fault fails them all) and accepts none
  /// from the port after: whoever failed them is on its way out.
  std::vector<inflight_request> take_all();

  /// The actor's deadline timer went off (deadline_book::fire / next).
  std::vector<std::uint64_t> fire(clock::time_point fired, clock::time_point now);
  std::optional<clock::time_point> next_timer();

  /// An answer the actor gave itself (so the counts below see every one).
  void note_answer(bool success);
  /// A worker-level fault (a timeout): counts until the next answer.
  void note_fault();

  struct counts {
    std::size_t inflight = 0;
    std::uint64_t requests = 0;  // answers, Python exceptions included
    std::uint64_t errors = 0;    // Python exceptions
    std::uint64_t direct = 0;    // answered on the io thread
    std::uint64_t port_sends = 0;          // written by the pool itself
    std::uint64_t port_session_sends = 0;  // ... of them in a session
    std::uint64_t consecutive_faults = 0;
    clock::time_point last_answer;
  };
  counts snapshot() const;

  // -- the pool's side (worker_port) -------------------------------------------
  /// add(), while accepting: then moves `r` in, sets `arm` as add() returns
  /// it and counts the send. False, with `r` untouched, otherwise.
  bool add_if_accepting(std::uint64_t id, inflight_request& r, bool in_session,
                        std::optional<clock::time_point>& arm);

  // -- the io thread's side --------------------------------------------------

  /// Answers `rep` when it is an ordinary reply to a request in the table
  /// and direct answers are on, or delivers it when it is a chunk that is
  /// in order. False: the actor must see the frame.
  bool answer(bridge::reply& rep);

private:
  // All with mx_ held.
  std::optional<clock::time_point> add_locked(std::uint64_t id, inflight_request r);
  std::optional<inflight_request> take_locked(std::uint64_t id);
  // chunk(), or with direct_only nothing while direct answers are off.
  chunk_verdict deliver_chunk(bridge::reply& rep, std::string& why, bool direct_only);
  // The chunk's message for its sink, when it is in order (next_seq moves on).
  chunk_verdict chunk_locked(bridge::reply& rep, caf::actor& sink, caf::message& msg,
                             std::string& why);
  void count_answer_locked(bool success);

  mutable std::mutex mx_;
  caf::actor_addr worker_;
  caf::actor pool_;
  bool direct_ = true;
  bool accepting_ = false;
  bool closed_ = false;  // take_all ran
  std::atomic<std::uint64_t> next_id_{1};
  std::uint64_t port_sends_ = 0;
  std::uint64_t port_session_sends_ = 0;
  std::unordered_map<std::uint64_t, inflight_request> requests_;
  std::unordered_set<std::uint64_t> moot_;  // see take
  deadline_book deadlines_;
  std::uint64_t answered_ = 0;
  std::uint64_t errors_ = 0;
  std::uint64_t direct_answers_ = 0;
  std::uint64_t consecutive_faults_ = 0;
  clock::time_point last_answer_ = clock::now();
};

} // namespace dspex
