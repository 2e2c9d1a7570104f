#include <dspex/actors/remote/detail/request_link.hpp>

#include <dspex/actors/node/error.hpp>

#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <cstdio>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <random>
#include <sys/socket.h>

namespace dspex::remote {

namespace {

using tcp = boost::asio::ip::tcp;

constexpr std::size_t read_buffer_bytes = 64 * 1024;

void put_u64(std::string& out, std::uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i)
    b[i] = static_cast<char>((v >> (8 * (7 - i))) & 0xFF);
  out.append(b, 8);
}

std::uint64_t get_u64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void send_event(const caf::actor_addr& owner, link_event ev) {
  if (auto a = caf::actor_cast<caf::actor>(owner))
    caf::anon_send(a, std::move(ev));
}

} // namespace

void append_link_frame(std::string& out, link_kind kind, std::uint64_t id, std::string_view text,
                       std::uint64_t seq, bool ack) {
  std::size_t extra = kind == link_kind::chunk ? 9 : kind == link_kind::ack ? 8 : 0;
  auto body = link_head_bytes + extra + text.size();
  char header[bridge::frame_header_bytes];
  bridge::write_frame_header(header, static_cast<std::uint32_t>(body));
  out.reserve(out.size() + bridge::frame_header_bytes + body);
  out.append(header, bridge::frame_header_bytes);
  out.push_back(static_cast<char>(kind));
  put_u64(out, id);
  if (kind == link_kind::chunk || kind == link_kind::ack)
    put_u64(out, seq);
  if (kind == link_kind::chunk)
    out.push_back(ack ? 1 : 0);
  out.append(text.data(), text.size());
}

caf::expected<link_frame> parse_link_frame(const std::string& body) {
  auto bad = [](std::string why) { return make_error(errc::protocol_error, "request link: " + why); };
  if (body.size() < link_head_bytes)
    return bad("a frame of " + std::to_string(body.size()) + " bytes (at least "
               + std::to_string(link_head_bytes) + ")");
  link_frame f;
  auto k = static_cast<unsigned char>(body[0]);
  if (k < 1 || k > 6)
    return bad("unknown frame kind " + std::to_string(k));
  f.kind = static_cast<link_kind>(k);
  f.id = get_u64(body.data() + 1);
  std::size_t at = link_head_bytes;
  if (f.kind == link_kind::chunk || f.kind == link_kind::ack) {
    std::size_t need = f.kind == link_kind::chunk ? 9 : 8;
    if (body.size() < at + need)
      return bad("a chunk or ack frame without its seq");
    f.seq = get_u64(body.data() + at);
    at += 8;
    if (f.kind == link_kind::chunk)
      f.ack = body[at++] != 0;
  }
  if ((f.kind == link_kind::hello) != (f.id == 0))
    return bad(f.kind == link_kind::hello ? "a hello with an id" : "a frame with id 0");
  f.text = std::string_view(body).substr(at);
  return f;
}

std::string link_token() {
  std::random_device rd;
  static const char* hex = "0123456789abcdef";
  std::string t;
  for (int i = 0; i < 8; ++i) {
    auto v = rd();
    for (int j = 0; j < 4; ++j) {
      t.push_back(hex[(v >> (8 * j)) & 0xF]);
      t.push_back(hex[(v >> (8 * j + 4)) & 0xF]);
    }
  }
  return t;
}

// -- request_link ------------------------------------------------------------

request_link::request_link(std::shared_ptr<bridge::io_loop> loop, tcp::socket sock,
                           std::size_t max_frame_bytes)
  : loop_(std::move(loop)), sock_(std::move(sock)), max_(max_frame_bytes),
    decoder_(max_frame_bytes) {
  boost::system::error_code ignore;
  sock_.set_option(tcp::no_delay(true), ignore);
  sock_.non_blocking(true, ignore);
  // BASP's heartbeats watch the node, not this connection: a link dropped
  // silently on the way (a NAT, a firewall) is found by the kernel, which
  // probes an idle link and gives up on data unacknowledged this long.
  int fd = sock_.native_handle();
  int on = 1, idle = link_keepalive_s, interval = link_keepalive_s, count = 3;
  unsigned user_timeout_ms = link_user_timeout_ms;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

request_link::~request_link() {
  boost::system::error_code ignore;
  sock_.close(ignore);
  if (counters_)
    --counters_->live;
}

void request_link::count_in(std::shared_ptr<link_port_counters> c) {
  counters_ = std::move(c);
  ++counters_->live;
}

void request_link::start(caf::actor_addr owner, std::uint64_t generation, bool hello_first) {
  // At once on the loop's thread (a connect's handler: the owner must be
  // known before its hello is written, or a failed write would tell nobody).
  auto run = [self = shared_from_this(), owner = std::move(owner), generation, hello_first] {
    self->owner_ = owner;
    self->generation_ = generation;
    if (self->done_)
      return;
    if (hello_first)
      self->read_hello();
    else
      self->read_more();
  };
  if (loop_->on_loop_thread())
    run();
  else
    loop_->post(std::move(run));
}

void request_link::read_hello() {
  boost::asio::async_read(
    sock_, boost::asio::buffer(hello_head_),
    [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
      if (self->done_)
        return;
      if (ec)
        return self->fail(ec == boost::asio::error::eof ? "closed before its hello" : ec.message());
      std::size_t len = 0;
      for (char c : self->hello_head_)
        len = (len << 8) | static_cast<unsigned char>(c);
      if (len > link_hello_max_bytes)
        return self->fail("a first frame of " + std::to_string(len) + " bytes (a hello is at most "
                          + std::to_string(link_hello_max_bytes) + ")");
      self->hello_body_.resize(len);
      boost::asio::async_read(
        self->sock_, boost::asio::buffer(self->hello_body_),
        [self](const boost::system::error_code& ec2, std::size_t) {
          if (self->done_)
            return;
          if (ec2)
            return self->fail(ec2 == boost::asio::error::eof ? "closed in its hello" : ec2.message());
          std::vector<std::string> one;
          one.push_back(std::move(self->hello_body_));
          self->deliver(std::move(one));
          if (!self->done_)
            self->read_on();
        });
    });
}

void request_link::read_more() {
  if (rbuf_.empty())
    rbuf_.resize(read_buffer_bytes);
  sock_.async_read_some(
    boost::asio::buffer(rbuf_),
    [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
      if (self->done_)
        return;
      if (ec)
        return self->fail(ec == boost::asio::error::eof ? "closed by the peer" : ec.message());
      std::vector<std::string> bodies;
      if (self->decoder_.feed(self->rbuf_.data(), n, bodies) != bridge::frame_decoder::status::ok)
        return self->fail("a frame of " + std::to_string(self->decoder_.rejected_length())
                          + " bytes exceeds max_remote_message_bytes ("
                          + std::to_string(self->max_) + ")");
      if (!bodies.empty())
        self->deliver(std::move(bodies));
      if (!self->done_)
        self->read_on();
    });
}

void request_link::read_on() {
  if (unread_.load() > link_unread_bound) {
    paused_.store(true);
    // The owner may have taken them all between the check and the store:
    // then exactly one of it (taken) and this reads on.
    if (unread_.load() > link_unread_bound || !paused_.exchange(false))
      return;
  }
  read_more();
}

void request_link::taken(std::size_t bytes) {
  if (unread_.fetch_sub(bytes) - bytes <= link_unread_bound && paused_.exchange(false))
    loop_->post([self = shared_from_this()] {
      if (!self->done_)
        self->read_more();
    });
}

void request_link::deliver(std::vector<std::string> bodies) {
  // What the frames hold in the owner's mailbox, the strings' own share
  // included, until the event's last copy gives it back.
  std::size_t bytes = 0;
  for (auto& b : bodies)
    bytes += b.size() + sizeof(std::string);
  unread_ += bytes;
  struct credit_back {
    credit_back(std::weak_ptr<request_link> l, std::size_t n) : link(std::move(l)), bytes(n) {}
    credit_back(const credit_back&) = delete;
    credit_back& operator=(const credit_back&) = delete;
    ~credit_back() {
      if (auto l = link.lock())
        l->taken(bytes);
    }
    std::weak_ptr<request_link> link;
    std::size_t bytes;
  };
  link_event ev;
  ev.what = link_event::frames;
  ev.link = shared_from_this();
  ev.bodies = std::move(bodies);
  ev.generation = generation_;
  ev.credit = std::make_shared<credit_back>(weak_from_this(), bytes);
  if (auto a = caf::actor_cast<caf::actor>(owner_))
    caf::anon_send(a, std::move(ev));
  else
    close();  // nobody reads it any more
}

void request_link::shut() {
  done_ = true;
  boost::system::error_code ignore;
  sock_.shutdown(tcp::socket::shutdown_both, ignore);
  sock_.close(ignore);
  writing_.clear();
  pending_.clear();
}

void request_link::fail(std::string why) {
  if (done_)
    return;
  shut();
  link_event ev;
  ev.what = link_event::closed;
  ev.link = shared_from_this();
  ev.why = std::move(why);
  ev.generation = generation_;
  send_event(owner_, std::move(ev));
}

void request_link::close() {
  loop_->post([self = shared_from_this()] {
    if (!self->done_)
      self->shut();
  });
}

void request_link::write(std::string bytes) {
  if (bytes.empty())
    return;
  if (loop_->on_loop_thread())
    return write_on_loop(std::move(bytes));
  loop_->post([self = shared_from_this(), b = std::move(bytes)]() mutable {
    self->write_on_loop(std::move(b));
  });
}

void request_link::write_on_loop(std::string bytes) {
  if (done_)
    return;
  if (!writing_.empty()) {
    if (pending_.size() + bytes.size() > 2 * max_ + 2 * bridge::frame_header_bytes)
      return fail("the peer does not read (more than " + std::to_string(2 * max_)
                  + " bytes wait for it)");
    pending_ += bytes;
    return;
  }
  // Speculative: the socket is non-blocking, so this is one send(2) and,
  // when the kernel takes it all (the common case), nothing else.
  boost::system::error_code ec;
  auto n = sock_.write_some(boost::asio::buffer(bytes), ec);
  if (ec == boost::asio::error::would_block || ec == boost::asio::error::try_again) {
    ec = {};
    n = 0;
  }
  if (ec)
    return fail(ec.message());
  if (n == bytes.size())
    return;
  writing_ = bytes.substr(n);
  write_pending();
}

void request_link::write_pending() {
  boost::asio::async_write(sock_, boost::asio::buffer(writing_),
                           [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                             if (self->done_)
                               return;
                             if (ec)
                               return self->fail(ec.message());
                             self->writing_.clear();
                             if (self->pending_.empty())
                               return;
                             self->writing_.swap(self->pending_);
                             self->write_pending();
                           });
}

// -- link_listener -----------------------------------------------------------

caf::expected<std::shared_ptr<link_listener>>
link_listener::open(std::shared_ptr<bridge::io_loop> loop, const std::string& host,
                    std::uint16_t port, std::size_t max_frame_bytes, std::size_t max_links) {
  boost::system::error_code ec;
  // A name is resolved here, on the caller's thread (node::start), as
  // CAF's publish does; its first address is the one.
  tcp::resolver resolver(loop->context());
  auto found = resolver.resolve(host == "localhost" ? std::string("127.0.0.1") : host,
                                std::to_string(port), ec);
  if (ec || found.empty())
    return make_error(errc::invalid_config, "request link: cannot resolve " + host + ": "
                                              + (ec ? ec.message() : "no address"));
  tcp::acceptor acc(loop->context());
  tcp::endpoint ep = found.begin()->endpoint();
  acc.open(ep.protocol(), ec);
  if (!ec)
    acc.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec)
    acc.bind(ep, ec);
  if (!ec)
    acc.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec)
    return make_error(errc::invalid_config, "request link: cannot listen on " + host + ":"
                                              + std::to_string(port) + ": " + ec.message());
  return std::make_shared<link_listener>(std::move(loop), std::move(acc), max_frame_bytes,
                                         max_links);
}

link_listener::link_listener(std::shared_ptr<bridge::io_loop> loop, tcp::acceptor acc,
                             std::size_t max_frame_bytes, std::size_t max_links)
  : loop_(std::move(loop)), acc_(std::move(acc)), backoff_(loop_->context()),
    max_(max_frame_bytes), max_links_(max_links),
    counters_(std::make_shared<link_port_counters>()) {
  boost::system::error_code ec;
  port_ = acc_.local_endpoint(ec).port();
}

void link_listener::start(caf::actor_addr owner) {
  loop_->post([self = shared_from_this(), owner = std::move(owner)] {
    self->owner_ = owner;
    self->accept();
  });
}

void link_listener::accept() {
  if (closed_)
    return;
  acc_.async_accept([self = shared_from_this()](const boost::system::error_code& ec, tcp::socket s) {
    if (self->closed_)
      return;
    if (ec) {
      // Out of descriptors (EMFILE) and the like: the listener stays
      // readable, so accepting again at once would spin; wait a little.
      self->backoff_.expires_after(std::chrono::milliseconds(50));
      self->backoff_.async_wait([self](const boost::system::error_code& e) {
        if (!e)
          self->accept();
      });
      return;
    }
    // The cap holds here, before the router hears of it: a flood of
    // connections is shed as fast as it is accepted, whatever the router's
    // mailbox holds. A link counts until its object is gone.
    if (self->counters_->live.load() >= self->max_links_) {
      ++self->counters_->refused;
      boost::system::error_code ignore;
      s.close(ignore);
      return self->accept();
    }
    link_event ev;
    ev.what = link_event::opened;
    ev.link = std::make_shared<request_link>(self->loop_, std::move(s), self->max_);
    ev.link->count_in(self->counters_);
    send_event(self->owner_, std::move(ev));
    self->accept();
  });
}

void link_listener::close() {
  loop_->post([self = shared_from_this()] {
    self->closed_ = true;
    boost::system::error_code ignore;
    self->acc_.close(ignore);
    self->backoff_.cancel();
  });
}

// -- connect_link ------------------------------------------------------------

void connect_link(std::shared_ptr<bridge::io_loop> loop, const std::string& host, std::uint16_t port,
                  caf::actor_addr owner, std::uint64_t generation, std::size_t max_frame_bytes,
                  std::string hello, std::chrono::milliseconds timeout) {
  struct attempt {
    tcp::resolver resolver;
    tcp::socket sock;
    boost::asio::steady_timer timer;
    explicit attempt(boost::asio::io_context& ctx) : resolver(ctx), sock(ctx), timer(ctx) {}
  };
  loop->post([loop, host, port, owner = std::move(owner), generation, max_frame_bytes,
              hello = std::move(hello), timeout]() mutable {
    auto at = std::make_shared<attempt>(loop->context());
    // A port that swallows SYNs would keep the socket trying for minutes,
    // once per reconnect: the attempt ends with the owner's patience.
    at->timer.expires_after(timeout);
    at->timer.async_wait([at](const boost::system::error_code& ec) {
      if (ec)
        return;
      boost::system::error_code ignore;
      at->resolver.cancel();
      at->sock.close(ignore);
    });
    auto failed = [owner, generation](std::string why) {
      link_event ev;
      ev.what = link_event::closed;
      ev.why = std::move(why);
      ev.generation = generation;
      send_event(owner, std::move(ev));
    };
    at->resolver.async_resolve(
      host == "localhost" ? std::string("127.0.0.1") : host, std::to_string(port),
      [=, hello = std::move(hello)](const boost::system::error_code& ec,
                                    tcp::resolver::results_type results) mutable {
        if (ec)
          return failed("resolve " + host + ": " + ec.message());
        boost::asio::async_connect(
          at->sock, results,
          [=, hello = std::move(hello)](const boost::system::error_code& ec2, const tcp::endpoint&) mutable {
            at->timer.cancel();
            if (ec2)
              return failed("connect " + host + ":" + std::to_string(port) + ": " + ec2.message());
            auto link = std::make_shared<request_link>(loop, std::move(at->sock), max_frame_bytes);
            // Opened first: a hello that fails at once is then a closed
            // event the owner can place.
            link_event ev;
            ev.what = link_event::opened;
            ev.link = link;
            ev.generation = generation;
            send_event(owner, std::move(ev));
            link->start(owner, generation, false);
            link->write(std::move(hello));
          });
      });
  });
}

} // namespace dspex::remote
