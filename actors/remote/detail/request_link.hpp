// The request link: a TCP connection of its own beside BASP, between one
// remote_pool and the router it reached, that carries the requests, replies,
// chunks, acks and cancels of that remote_pool (docs/remote.md "The request
// link").
//
// Why: a BASP leg costs about 60 us of host CPU more than a local one
// (docs/performance.md, Through a remote_pool), mostly in system calls CAF's
// multiplexer makes per message: it reads a header, a payload and then
// EAGAIN, and adds write interest to epoll before each message and removes
// it after, on both nodes. On this link the io loop writes everything an
// actor queued in one turn with one send (speculative, no epoll
// registration), and reads whatever arrived with one recv; the frames are
// bridge/frame.hpp's (a 4-byte length, then the body) with a binary head.
//
// BASP keeps what it is good at: the hello (where the router hands out a
// one-time token for the link), monitoring (a node's death or hang is seen
// by its heartbeats, and ends the link with it), TLS (a remote_pool with
// tls never uses the link) and status.
//
// Frame bodies: kind (1 byte), the request's id (8 bytes, big-endian), then
//   hello   "TOKEN MAX" (id 0)           caller -> router, first and once: the
//                                        token, and the largest frame the
//                                        caller reads
//   hello   - (id 0)                     router -> caller, once: the link is
//                                        taken (until then the caller waits)
//   exec    the exec text                caller -> router
//   reply   the reply text               router -> caller
//   chunk   seq (8), ack (1), data text  router -> caller
//   ack     seq (8)                      caller -> router
//   cancel  -                            caller -> router
// Texts are remote_protocol.hpp's, checked as on BASP.
//
// Threads: the socket is the io loop's. write() and close() may be called
// from any thread (they post to the loop when not on it); what arrives goes
// to the owning actor as a link_event message, a type that cannot come over
// BASP (CAF drops a type it cannot deserialize), so a peer cannot forge one.
#pragma once

#include <dspex/bridge/frame.hpp>
#include <dspex/bridge/io_loop.hpp>

#include <caf/actor_addr.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/expected.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace dspex::remote {

enum class link_kind : std::uint8_t { hello = 1, exec = 2, reply = 3, chunk = 4, ack = 5, cancel = 6 };

/// Bytes of a frame body before its text: kind and id.
inline constexpr std::size_t link_head_bytes = 9;
/// The largest hello a listening side reads before it knows the peer.
inline constexpr std::size_t link_hello_max_bytes = 256;
/// TCP keepalive on an idle link (idle and interval, seconds; 3 probes),
/// and the most a link's sent data may wait for the peer's kernel to
/// acknowledge it (TCP_USER_TIMEOUT): past either, the link fails.
inline constexpr int link_keepalive_s = 2;
inline constexpr unsigned link_user_timeout_ms = 10000;

/// Bytes of frames a link hands its owner that the owner has not yet taken
/// (its link_event messages still in the mailbox). Past it the link reads
/// no more until they are taken: with the io loop on a thread of its own,
/// a peer's cheap frames (cancels, acks) could otherwise be read faster than
/// the owner takes them and pile up in its mailbox. One read's frames always
/// go, so a frame of any allowed size passes.
inline constexpr std::size_t link_unread_bound = 1 << 20;

/// A link port's counters, shared by its listener and its links.
struct link_port_counters {
  std::atomic<std::size_t> live{0};       ///< links whose socket exists
  std::atomic<std::uint64_t> refused{0};  ///< shut at accept, over the cap
};

struct link_frame {
  link_kind kind = link_kind::hello;
  std::uint64_t id = 0;
  std::uint64_t seq = 0;  ///< chunk, ack
  bool ack = false;       ///< chunk: answer with an ack once taken
  std::string_view text;  ///< into the body parsed
};

/// Appends one frame (length, kind, id, [seq, ack,] text) to `out`.
void append_link_frame(std::string& out, link_kind kind, std::uint64_t id,
                       std::string_view text = {}, std::uint64_t seq = 0, bool ack = false);

/// Reads a frame body; a protocol_error naming what is wrong (unknown kind,
/// too short, id 0 where one is needed). `text` points into `body`.
caf::expected<link_frame> parse_link_frame(const std::string& body);

class request_link;

/// What a link (or its listener, or a connect) tells its owner.
struct link_event {
  enum what_t { opened, frames, closed, handshake_due } what = frames;
  std::shared_ptr<request_link> link;
  std::vector<std::string> bodies;  ///< frames: their bodies, in order
  std::string why;                  ///< closed: the reason
  std::uint64_t generation = 0;     ///< the owner's tag, given to start or connect
  /// handshake_due: the link it is for, by address and the owner's serial
  /// for it, without holding it (a timer must not keep a link alive, nor
  /// its count against the cap).
  const request_link* key = nullptr;
  /// frames: gives the bytes back to the link (link_unread_bound) when the
  /// last copy of this event is gone: handled, or dropped with a dead owner.
  std::shared_ptr<void> credit;
};

class request_link : public std::enable_shared_from_this<request_link> {
public:
  using tcp = boost::asio::ip::tcp;

  request_link(std::shared_ptr<bridge::io_loop> loop, tcp::socket sock, std::size_t max_frame_bytes);
  ~request_link();
  request_link(const request_link&) = delete;
  request_link& operator=(const request_link&) = delete;

  /// Starts reading, on the loop thread: the frames each read completes go
  /// to `owner` as one link_event, the end of the link as a last one
  /// (closed). `hello_first`: the first frame is read alone and may be at
  /// most link_hello_max_bytes (a listener's side, before the token is
  /// checked: a stranger cannot make it reserve a large frame).
  void start(caf::actor_addr owner, std::uint64_t generation, bool hello_first);

  /// Queues encoded frames and writes them (at once when on the loop
  /// thread and nothing is being written). Any thread. A peer that does
  /// not read past twice the frame bound ends the link.
  void write(std::string bytes);

  /// Shuts the link; no closed event follows. Any thread; idempotent.
  void close();

  std::size_t max_frame_bytes() const noexcept { return max_; }

  /// Counts this link in `c` (live) until it is destroyed.
  void count_in(std::shared_ptr<link_port_counters> c);

private:
  void read_hello();
  void read_more();
  void read_on();  // read_more, unless link_unread_bound is passed: then paused
  void taken(std::size_t bytes);  // any thread: the owner took that many
  void deliver(std::vector<std::string> bodies);
  void shut();  // on the loop: closes the socket, drops what waits
  void fail(std::string why);
  void write_on_loop(std::string bytes);
  void write_pending();

  std::shared_ptr<bridge::io_loop> loop_;
  tcp::socket sock_;
  std::size_t max_;
  caf::actor_addr owner_;
  std::uint64_t generation_ = 0;
  bridge::frame_decoder decoder_;
  std::vector<char> rbuf_;
  char hello_head_[bridge::frame_header_bytes] = {};
  std::string hello_body_;
  std::string writing_;  // handed to async_write; not empty while it runs
  std::string pending_;  // queued behind it
  bool done_ = false;    // closed or failed: nothing more is read or written
  std::atomic<std::size_t> unread_{0};  // delivered, not yet taken by the owner
  std::atomic<bool> paused_{false};     // no read outstanding until taken() resumes
  std::shared_ptr<link_port_counters> counters_;
};

/// A listening port for request links, on the loop. Opened (bound) on the
/// caller's thread, so its port is known at once; accepting starts with
/// start(). Each accepted connection goes to the owner as link_event
/// {opened} (not yet reading: the owner starts it); one over `max_links`
/// live links is closed at accept and counted.
class link_listener : public std::enable_shared_from_this<link_listener> {
public:
  static caf::expected<std::shared_ptr<link_listener>> open(std::shared_ptr<bridge::io_loop> loop,
                                                            const std::string& host,
                                                            std::uint16_t port,
                                                            std::size_t max_frame_bytes,
                                                            std::size_t max_links);
  link_listener(std::shared_ptr<bridge::io_loop> loop, boost::asio::ip::tcp::acceptor acc,
                std::size_t max_frame_bytes, std::size_t max_links);
  std::uint16_t port() const noexcept { return port_; }
  const std::shared_ptr<link_port_counters>& counters() const noexcept { return counters_; }
  void start(caf::actor_addr owner);
  void close();

private:
  void accept();

  std::shared_ptr<bridge::io_loop> loop_;
  boost::asio::ip::tcp::acceptor acc_;
  boost::asio::steady_timer backoff_;
  std::size_t max_;
  std::size_t max_links_;
  std::shared_ptr<link_port_counters> counters_;
  std::uint16_t port_ = 0;
  caf::actor_addr owner_;
  bool closed_ = false;
};

/// Connects a request link to host:port on the loop, starts reading and
/// writes `hello` (the hello frame) first; `owner` gets link_event{opened}
/// (then perhaps {closed}) or {closed, why}, tagged with `generation`. The
/// attempt gives up after `timeout`; the owner also closes a link that
/// opens too late for it.
void connect_link(std::shared_ptr<bridge::io_loop> loop, const std::string& host, std::uint16_t port,
                  caf::actor_addr owner, std::uint64_t generation, std::size_t max_frame_bytes,
                  std::string hello, std::chrono::milliseconds timeout);

/// A fresh random token (hex) for one link.
std::string link_token();

} // namespace dspex::remote

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspex::remote::link_event)
