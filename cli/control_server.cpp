// The control server: one asio thread of its own serves every connection;
// nothing that can take long runs on it. `exec` goes to the pool as an
// asynchronous CAF request (one short-lived actor per request), `status`
// and restart / stop / start (the node's calls block on supervisors) run on
// a few threads of its own, and all post their reply back to the asio
// thread. So an idle or slow client, or a slow exec, never holds up anyone
// else. An events follower gets lines from a forwarder actor through the
// same mailbox into a bounded backlog of its own.
//
// A streaming exec ("stream": true) gets its chunks the same way, one line
// each; a chunk is acknowledged to its worker only once its line is
// written, so a client that does not read stalls the handler (the worker's
// credit window), never the host's memory. A read stays outstanding while a
// request runs: a client that closes its connection (EOF with the socket
// hung up, a reset, or a write past the deadline) has its exec cancelled.
//
// Threads and lifetimes: connections live on the asio thread only, owned by
// `open` until closed. Replies from other threads arrive through the
// mailbox with a weak_ptr to their connection; the mailbox is closed first
// at shutdown, so nothing is posted to a context that is going away, and a
// reply whose connection is gone is dropped.
#include "control.hpp"
#include "control_events.hpp"
#include "control_request.hpp"

#include <dspex/actors/pool/call.hpp>

#include <boost/asio.hpp>
#include <caf/all.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <cstdio>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace dspex::cli {

namespace asio = boost::asio;
using local = asio::local::stream_protocol;
using boost::system::error_code;
using namespace std::chrono_literals;

namespace {

// The class once, in "class"; the message is what follows it (issue 26).
json error_json(const caf::error& e) {
  return error_object(e);
}

void log_error(const char* where, const char* what) {
  std::fprintf(stderr, "dspex: control server: %s: %s\n", where, what);
}

// One line for a connection to write. A chunk's line carries what its
// acknowledgement needs: sent to the worker that sent the chunk once the
// line is written (stream_chunk::ack).
struct out_line {
  explicit out_line(std::string t) : text(std::move(t)) {}
  std::string text;
  bool last = false;        ///< a request's final line: the next request is read then
  bool then_close = false;  ///< the connection ends with it
  bool ack = false;
  caf::actor from;
  std::uint64_t wire = 0, seq = 0;

  static out_line last_line(std::string text, bool then_close) {
    out_line l(std::move(text));
    l.last = true;
    l.then_close = then_close;
    return l;
  }
};

// How an exec's actor reaches its connection (through the mailbox).
struct exec_hooks {
  std::function<void(out_line)> chunk;  ///< one chunk line, in order, before done
  std::function<void(json)> done;       ///< the final line, once
};

// One exec: call (or call_stream) on the pool with a ref, so that (cancel)
// from the connection, when it closes first, cancels it.
caf::behavior exec_call(caf::event_based_actor* self, caf::actor target, command_request cmd,
                        bool stream, exec_hooks hooks) {
  constexpr std::uint64_t ref = 1;  // the actor's only request
  auto done = std::make_shared<exec_hooks>(std::move(hooks));
  auto ok = [self, done](json& j) {
    done->done(json{{"ok", true}, {"result", std::move(j)}});
    self->quit();
  };
  auto failed = [self, done](caf::error& e) {
    json r;
    try {
      r = json{{"ok", false}, {"error", error_json(classify(std::move(e)))}};
    } catch (const std::exception& x) {
      r = error_reply("internal", std::string("exec failed: ") + x.what());
    }
    done->done(std::move(r));
    self->quit();
  };
  if (stream)
    call_stream(self, target, std::move(cmd), ref).then(ok, failed);
  else
    call(self, target, std::move(cmd), ref).then(ok, failed);
  return {
    [self, done](chunk_atom, stream_chunk& c) {
      out_line l(dump_line(json{{"chunk", std::move(c.data)}, {"seq", c.seq}}));
      l.ack = c.ack;
      l.from = caf::actor_cast<caf::actor>(self->current_sender());
      l.wire = c.wire;
      l.seq = c.seq;
      done->chunk(std::move(l));
    },
    [self, target](cancel_atom) { cancel(self, target, ref); },
  };
}

// Where replies computed off the asio thread come back.
class reply_mailbox {
public:
  explicit reply_mailbox(asio::io_context& io) : io_(&io) {}
  template <class F>
  void post(F&& f) {
    std::lock_guard<std::mutex> g(mx_);
    if (io_)
      asio::post(*io_, std::forward<F>(f));
  }
  void close() {
    std::lock_guard<std::mutex> g(mx_);
    io_ = nullptr;
  }

private:
  std::mutex mx_;
  asio::io_context* io_;
};

// Node calls and execs in flight, for a graceful stop (control_server::drain).
// Shared with the exec actors, which may outlive the server.
class drain_gate {
public:
  /// A node call may start; false once draining.
  bool enter() {
    std::lock_guard<std::mutex> g(mx_);
    if (draining_)
      return false;
    ++calls_;
    return true;
  }
  void leave() {
    std::lock_guard<std::mutex> g(mx_);
    --calls_;
    cv_.notify_all();
  }
  void exec_started() {
    std::lock_guard<std::mutex> g(mx_);
    ++execs_;
  }
  void exec_done() {
    std::lock_guard<std::mutex> g(mx_);
    --execs_;
    cv_.notify_all();
  }
  /// No node call starts from now on; waits for those running.
  void drain() {
    std::unique_lock<std::mutex> g(mx_);
    draining_ = true;
    cv_.wait(g, [&] { return calls_ == 0; });
  }
  bool draining() {
    std::lock_guard<std::mutex> g(mx_);
    return draining_;
  }
  /// Waits up to `limit` for every exec to have posted its reply.
  void await_execs(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> g(mx_);
    cv_.wait_for(g, limit, [&] { return execs_ == 0; });
  }

private:
  std::mutex mx_;
  std::condition_variable cv_;
  bool draining_ = false;
  int calls_ = 0;
  long execs_ = 0;
};

} // namespace

struct control_server::impl {
  struct connection;

  node& n;
  control_options opts;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> guard{io.get_executor()};
  local::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  std::shared_ptr<reply_mailbox> mailbox = std::make_shared<reply_mailbox>(io);
  std::shared_ptr<drain_gate> gate = std::make_shared<drain_gate>();
  asio::thread_pool status_pool;
  // Live operations (scale, reload) run for as long as their workers start
  // and drain: on threads of their own, so that status stays answered, and
  // outside the drain gate, so that a stop does not wait for them (the
  // stopping node answers them shutting_down).
  asio::thread_pool ops_pool{4};
  std::map<std::uint64_t, std::shared_ptr<connection>> open;  // asio thread only
  std::uint64_t next_id = 0;
  bool stopping = false;
  /// One descriptor held in reserve (on /dev/null): out of descriptors,
  /// it is let go to accept a waiting client and refuse it (asio thread).
  int spare_fd = -1;
  bool out_of_fds = false;  ///< logged once per episode
  std::thread thread;

  impl(node& nd, control_options o)
    : n(nd), opts(o), status_pool(std::max<std::size_t>(1, o.status_threads)) {}

  void start(int fd);
  void shutdown();
  void accept_next();
  void accept_ready();
  void refuse(int fd);
  bool shed_one(int accept_errno);
  void retry_accept_later();
};

struct control_server::impl::connection : std::enable_shared_from_this<connection> {
  // reading: waiting for a request line (the read deadline runs);
  // busy: serving one (its lines are written as they come, the last one
  // ends it); following: the events op, until the connection closes.
  enum class state { reading, busy, following, closed };
  impl& srv;
  std::uint64_t id;
  local::socket sock;
  asio::steady_timer deadline;  ///< of the read in `reading`, else of the write in flight
  asio::streambuf buf;          ///< what the peer sent and we have not handled yet
  state st = state::busy;
  std::uint64_t generation = 0;  ///< tags the deadline of one read or write

  // One read is always outstanding (but when `buf` is full or the peer has
  // shut down its side): so the peer's close is seen while a request runs,
  // and lines it sends meanwhile wait in `buf`, answered in order.
  bool read_pending = false;
  bool peer_done = false;  ///< EOF read: no more requests come

  // Lines to write, one write at a time, each within the read deadline.
  std::deque<out_line> outq;
  bool write_pending = false;
  bool closing = false;  ///< a line that ends the connection is queued

  caf::actor exec;       ///< the exec in flight: told to cancel if we close first
  caf::actor forwarder;  ///< the events op

  connection(impl& s, std::uint64_t i, int fd)
    : srv(s), id(i), sock(s.io), deadline(s.io), buf(s.opts.max_line + 1) {
    sock.assign(local(), fd);
  }
  ~connection() { stop_forwarder(); }

  void read_next() {
    if (st == state::closed)
      return;
    st = state::reading;
    auto gen = ++generation;
    auto self = shared_from_this();
    deadline.expires_after(srv.opts.read_deadline);
    deadline.async_wait([self, gen](const error_code& ec) {
      if (!ec && self->st == state::reading && self->generation == gen)
        self->on_deadline();
    });
    next_line();
  }

  void read_more() {
    if (read_pending || peer_done || st == state::closed)
      return;
    auto room = buf.max_size() - buf.size();
    if (room == 0)
      return;  // resumes once a line is taken from the full buffer
    read_pending = true;
    auto self = shared_from_this();
    sock.async_read_some(buf.prepare(std::min<std::size_t>(room, 64 * 1024)),
                         [self](const error_code& ec, std::size_t n) {
                           self->read_pending = false;
                           if (self->st == state::closed)
                             return;
                           if (ec) {
                             self->on_read_end(ec);
                             return;
                           }
                           self->buf.commit(n);
                           if (self->st == state::following)
                             self->buf.consume(self->buf.size());  // a follower's bytes: ignored
                           if (self->st == state::reading)
                             self->next_line();
                           else
                             self->read_more();
                         });
  }

  // The peer shut down its side, or the connection failed.
  void on_read_end(const error_code& ec) {
    peer_done = true;
    switch (st) {
      case state::reading:
        next_line();  // a line still buffered is answered; else closed
        return;
      case state::busy:
        // Only shut down for writing (a client that sent its requests and
        // waits for the answers): serve on. Gone: nobody takes the answer.
        if (ec == asio::error::eof && !peer_gone())
          return;
        close();  // cancels the exec in flight
        return;
      default:
        close();
    }
  }

  // The peer closed the socket (not only its sending side): a Unix stream
  // socket is then hung up both ways.
  bool peer_gone() {
    pollfd p{sock.native_handle(), POLLOUT, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR));
  }

  // In `reading`: handles the next buffered line, or reads on.
  void next_line() {
    auto data = buf.data();
    auto begin = asio::buffers_begin(data), end = asio::buffers_end(data);
    auto nl = std::find(begin, end, '\n');
    if (nl == end) {
      if (buf.size() >= buf.max_size()) {  // full, and no newline
        st = state::busy;
        deadline.cancel();
        reply(error_reply("invalid_request",
                          "request line above " + std::to_string(srv.opts.max_line) + " bytes"),
              true);
      } else if (peer_done) {
        // EOF (maybe after half a line): nobody asks anything more.
        close();
      } else {
        read_more();
      }
      return;
    }
    std::string line(begin, nl);
    buf.consume(line.size() + 1);
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    st = state::busy;
    deadline.cancel();
    try {
      handle(line);
    } catch (const std::exception& e) {
      reply(error_reply("internal", std::string("control request failed: ") + e.what()), false);
    } catch (...) {
      reply(error_reply("internal", "control request failed"), false);
    }
    read_more();  // meanwhile: the peer's close, and the lines it pipelines
  }

  void on_deadline() {
    st = state::busy;
    reply(error_reply("invalid_request", "no complete request within "
                                           + std::to_string(srv.opts.read_deadline.count())
                                           + " ms"),
          true);
  }

  void handle(const std::string& line) {
    control_request req;
    std::string problem;
    if (!parse_control_request(line, req, problem, srv.n.max_json_depth())) {
      reply(error_reply("invalid_request", problem), false);
      return;
    }
    node& nd = srv.n;
    using kind = control_request::kind;
    if (req.op != kind::exec && srv.gate->draining()) {
      reply(error_reply("shutting_down", "the node is stopping"), false);
      return;
    }
    switch (req.op) {
      case kind::status:
        off_thread("status", [&nd] { return nd.status(); });
        return;
      case kind::restart:
      case kind::stop:
      case kind::start:
        off_thread("control", [&nd, req] {
          auto err = req.op == kind::restart ? nd.restart_child(req.path)
                     : req.op == kind::stop  ? nd.stop_child(req.path)
                                             : nd.start_child(req.path);
          if (err)
            return json{{"ok", false}, {"error", error_json(err)}};
          auto op = req.op == kind::restart ? "restart" : req.op == kind::stop ? "stop" : "start";
          return json{{"ok", true}, {"result", {{"op", op}, {"path", req.path}}}};
        });
        return;
      case kind::scale:
      case kind::reload:
        off_thread("control", [&nd, req] {
          auto r = req.op == kind::scale ? nd.scale_pool(req.pool, req.size)
                                         : nd.reload_pool(req.pool, req.size);
          if (!r)
            return json{{"ok", false}, {"error", error_json(r.error())}};
          return json{{"ok", true}, {"result", std::move(*r)}};
        }, srv.ops_pool, false);
        return;
      case kind::events:
        start_follow();
        return;
      case kind::exec:
        break;
    }
    start_exec(std::move(req));
  }

  // Runs `f` (which blocks on the node) on the status threads (or `pool`);
  // its reply comes back through the mailbox. `gated`: a drain waits for it.
  template <class F>
  void off_thread(const char* what, F f) {
    off_thread(what, std::move(f), srv.status_pool, true);
  }
  template <class F>
  void off_thread(const char* what, F f, asio::thread_pool& pool, bool gated) {
    std::weak_ptr<connection> weak = shared_from_this();
    auto mb = srv.mailbox;
    auto gate = srv.gate;
    asio::post(pool, [weak, mb, gate, gated, what, f = std::move(f)] {
      json r;
      if (gated ? !gate->enter() : gate->draining()) {
        r = error_reply("shutting_down", "the node is stopping");
      } else {
        try {
          r = f();
        } catch (const std::exception& e) {
          r = error_reply("internal", std::string(what) + " failed: " + e.what());
        } catch (...) {
          r = error_reply("internal", std::string(what) + " failed");
        }
        if (gated)
          gate->leave();
      }
      mb->post([weak, r = std::move(r)]() mutable {
        if (auto c = weak.lock())
          c->reply(std::move(r), false);
      });
    });
  }

  // The events op: a forwarder actor subscribed to the root posts each
  // event line here; the acknowledgement goes first.
  void start_follow() {
    auto root = srv.n.root();
    if (!root) {
      reply(error_reply("unavailable", "the tree is not running"), true);
      return;
    }
    st = state::following;
    buf.consume(buf.size());  // what a follower sends is ignored
    std::weak_ptr<connection> weak = shared_from_this();
    auto mb = srv.mailbox;
    forwarder = spawn_event_forwarder(root.home_system(), [weak, mb](std::string line) {
      mb->post([weak, line = std::move(line)]() mutable {
        if (auto c = weak.lock())
          c->push_event(std::move(line));
      });
    });
    srv.n.subscribe(forwarder);
    push_event(dump_line(json{{"ok", true}, {"following", "events"}}));
  }

  void push_event(std::string line) {
    if (st != state::following || closing)
      return;
    if (outq.size() >= srv.opts.follow_backlog) {
      // Too slow: never let the node wait, nor the backlog grow.
      outq.clear();
      stop_forwarder();
      push(out_line::last_line(dump_line(error_reply(
                            "unavailable", "events follower too slow: more than "
                                             + std::to_string(srv.opts.follow_backlog)
                                             + " event lines behind; dropped")),
                          true));
      return;
    }
    push(out_line(std::move(line)));
  }

  void stop_forwarder() {
    if (!forwarder)
      return;
    srv.n.unsubscribe(forwarder);
    caf::anon_send_exit(forwarder, caf::exit_reason::kill);
    forwarder = nullptr;
  }

  // As node::execute, but asynchronous: one short-lived actor per request
  // (exec_call) posts its chunk lines and its reply back through the
  // mailbox, and nothing waits for it. Closing the connection first
  // cancels it (close()).
  void start_exec(control_request req) {
    auto resolved = srv.n.resolve(req.pool);
    if (!resolved) {
      reply(json{{"ok", false}, {"error", error_json(resolved.error())}}, false);
      return;
    }
    auto t = *resolved;
    auto cmd = make_command(std::move(req.command), std::move(req.args), std::move(req.session_id),
                            req.timeout);
    std::weak_ptr<connection> weak = shared_from_this();
    auto mb = srv.mailbox;
    auto gate = srv.gate;
    gate->exec_started();
    exec_hooks hooks;
    hooks.chunk = [weak, mb](out_line l) {
      mb->post([weak, l = std::move(l)]() mutable {
        if (auto c = weak.lock())
          c->push_chunk(std::move(l));
      });
    };
    hooks.done = [weak, mb, gate](json r) {  // called once: reply or error
      mb->post([weak, r = std::move(r)]() mutable {
        if (auto c = weak.lock())
          c->exec_done(std::move(r));
      });
      gate->exec_done();
    };
    exec = t.home_system().spawn(exec_call, t, std::move(cmd), req.stream, std::move(hooks));
  }

  // No bound of our own: the worker's credit window bounds the chunks not
  // yet acknowledged, and a chunk is acknowledged once written.
  void push_chunk(out_line l) {
    if (st != state::busy || !exec || closing)
      return;
    push(std::move(l));
  }

  void exec_done(json r) {
    if (!exec)
      return;
    exec = nullptr;
    reply(std::move(r), false);
  }

  // The request's last line: then the next request is read (or the
  // connection closed).
  void reply(json j, bool then_close) {
    if (st == state::closed || closing)
      return;
    push(out_line::last_line(dump_line(j), then_close));
  }

  void push(out_line l) {
    closing = closing || l.then_close;
    outq.push_back(std::move(l));
    write_next();
  }

  // A client that stops reading gets the same deadline for taking a line
  // as for sending a request; then it is cut off, so it cannot hold a
  // connection slot (nor a stream's worker) forever. A chunk is
  // acknowledged to its worker once its line is written, so a client that
  // does not read stalls the handler, not the host's memory.
  void write_next() {
    if (write_pending || outq.empty() || st == state::closed)
      return;
    write_pending = true;
    auto line = std::make_shared<out_line>(std::move(outq.front()));
    outq.pop_front();
    auto gen = ++generation;
    auto self = shared_from_this();
    deadline.expires_after(srv.opts.read_deadline);
    deadline.async_wait([self, gen](const error_code& ec) {
      if (!ec && self->write_pending && self->generation == gen)
        self->close();
    });
    asio::async_write(sock, asio::buffer(line->text),
                      [self, line](const error_code& ec, std::size_t) {
                        if (self->st == state::closed)
                          return;
                        self->write_pending = false;
                        self->deadline.cancel();
                        if (ec || line->then_close) {
                          self->close();
                          return;
                        }
                        if (line->ack)
                          caf::anon_send(line->from, ack_atom::value, line->wire, line->seq);
                        if (line->last && self->st == state::busy)
                          self->read_next();
                        else
                          self->write_next();
                      });
  }

  void close() {
    if (st == state::closed)
      return;
    st = state::closed;
    stop_forwarder();
    if (exec) {  // the request's answer has nobody to go to: stop its handler
      caf::anon_send(exec, cancel_atom::value);
      exec = nullptr;
    }
    outq.clear();
    error_code ig;
    deadline.cancel();
    sock.close(ig);
    srv.open.erase(id);  // may drop the last owner: touch nothing after this
  }
};

void control_server::impl::start(int fd) {
  spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  acceptor.assign(local(), fd);
  accept_next();
  thread = std::thread([this] {
    // A handler that throws must not end the server (nor, escaping the
    // thread, the host): log it and go on serving.
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {
        log_error("handler failed", e.what());
      } catch (...) {
        log_error("handler failed", "unknown exception");
      }
    }
  });
}

void control_server::impl::accept_next() {
  acceptor.async_wait(local::acceptor::wait_read, [this](const error_code& ec) {
    if (stopping || ec == asio::error::operation_aborted)
      return;
    if (ec) {
      retry_accept_later();
      return;
    }
    accept_ready();
  });
}

void control_server::impl::retry_accept_later() {
  accept_retry.expires_after(100ms);
  accept_retry.async_wait([this](const error_code& e) {
    if (!e && !stopping)
      accept_next();
  });
}

// Out of descriptors (EMFILE, ENFILE): a client left in the backlog would
// keep the socket readable, so the server would either spin or leave it
// waiting unanswered. Instead the spare descriptor is let go, the client
// accepted on it and told why in one line, closed, and the spare taken
// again. False when that cannot be done (no spare, or another thread took
// the descriptor freed meanwhile).
bool control_server::impl::shed_one(int accept_errno) {
  if (!out_of_fds) {
    out_of_fds = true;
    log_error("accept", (std::string(std::strerror(accept_errno))
                         + "; refusing control connections until descriptors are free")
                          .c_str());
  }
  if (spare_fd < 0)
    spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (spare_fd < 0)
    return false;
  ::close(spare_fd);
  spare_fd = -1;
  int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) {
    auto line = dump_line(error_reply(
      "resource_exhausted",
      "the node is out of file descriptors (" + std::string(std::strerror(accept_errno))
        + "); control connection refused, try again later"));
    // One short line into an empty socket buffer; never blocks, never SIGPIPE.
    [[maybe_unused]] auto n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(fd);
  }
  spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0 && spare_fd >= 0;
}

// accept4 ourselves, not asio's accept: the descriptor must be close-on-exec
// from its first instant, or a worker forked meanwhile inherits it and the
// client never sees our close.
void control_server::impl::accept_ready() {
  for (int round = 0; round < 64; ++round) {
    int fd = ::accept4(acceptor.native_handle(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      if ((errno == EMFILE || errno == ENFILE) && shed_one(errno))
        continue;
      // Out of memory, or no spare descriptor: the client waits in the
      // backlog, and accepting is tried again after a pause (no spin).
      if (!out_of_fds)
        log_error("accept", std::strerror(errno));
      retry_accept_later();
      return;
    }
    if (out_of_fds) {
      out_of_fds = false;
      log_error("accept", "descriptors available again; accepting control connections");
    }
    if (open.size() >= opts.max_connections) {
      refuse(fd);
      continue;
    }
    auto id = ++next_id;
    auto c = std::make_shared<connection>(*this, id, fd);
    open.emplace(id, c);
    c->read_next();
  }
  accept_next();
}

void control_server::impl::refuse(int fd) {
  auto s = std::make_shared<local::socket>(io);
  s->assign(local(), fd);
  auto line = std::make_shared<std::string>(dump_line(error_reply(
    "unavailable",
    "too many control connections (" + std::to_string(opts.max_connections) + ")")));
  asio::async_write(*s, asio::buffer(*line), [s, line](const error_code&, std::size_t) {
    error_code ig;
    s->close(ig);
  });
}

void control_server::impl::shutdown() {
  // After drain() and node::stop(), every exec has its answer on the way:
  // let those replies reach the mailbox, ahead of the closing below.
  if (gate->draining())
    gate->await_execs(opts.read_deadline);
  mailbox->close();
  asio::post(io, [this] {
    stopping = true;
    error_code ig;
    acceptor.close(ig);
    accept_retry.cancel();
    auto conns = std::move(open);
    open.clear();
    for (auto& kv : conns)
      kv.second->close();
  });
  guard.reset();
  if (thread.joinable())
    thread.join();  // run() returns once every cancelled handler ran
  if (spare_fd >= 0)
    ::close(spare_fd);
  spare_fd = -1;
  status_pool.stop();
  status_pool.join();
  ops_pool.join();  // the node stopped first: what runs there has its answer
}

control_server::control_server(node& n, std::string path, control_options opts)
  : control_server(n, control_socket::claim(path), opts) {}

control_server::control_server(node& n, control_socket sock, control_options opts)
  : sock_(std::move(sock)) {
  if (!sock_.listening())
    return;
  impl_ = std::make_shared<impl>(n, opts);
  impl_->start(sock_.release_fd());
}

void control_server::drain() {
  if (impl_)
    impl_->gate->drain();
}

control_server::~control_server() {
  if (impl_)
    impl_->shutdown();
  impl_.reset();
  // sock_ then removes the socket file (if still ours) and drops the lock.
}

} // namespace dspex::cli
