#include <dspex/actors/remote/detail/router_guard.hpp>

#include <dspex/actors/remote/detail/basp_screen.hpp>

#include <caf/all.hpp>
#include <caf/io/basp/connection_state.hpp>
#include <caf/io/basp/header.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/system_messages.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <atomic>
#include <cerrno>
#include <dlfcn.h>
#include <fcntl.h>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>

namespace dspex {

// -- shared state ----------------------------------------------------------------

struct router_guard::state {
  std::uint16_t port = 0;
  listen_limits limits;
  struct conn {
    ino_t ino = 0;  ///< the socket's inode: a reused descriptor number is not ours
    std::chrono::steady_clock::time_point accepted;
    bool hello = false;  ///< the peer's BASP client handshake arrived
    bool shut = false;   ///< shut down by the sweep; CAF closes it
    /// The peer's actors that sent here and are not known to be down: CAF
    /// keeps a proxy for each (and the router a caller) until a down
    /// message or the connection's end.
    std::unordered_set<caf::actor_id> sources;
  };
  std::unordered_map<int, conn> conns;  // by descriptor; guarded by `mtx`
  std::uint64_t accepted = 0, refused = 0, handshake_timeouts = 0;
};

namespace {

using steady = std::chrono::steady_clock;

std::mutex mtx;  // ports and every state's conns (the middleman thread, the sweep)
std::map<std::uint16_t, std::weak_ptr<router_guard::state>> ports;
std::atomic<int> nports{0};
std::atomic<std::uint32_t> max_payload{default_max_remote_message_bytes};
std::atomic<std::uint32_t> max_asked{0};  // the largest any node set; 0: none did
std::atomic<std::uint64_t> oversized{0};
std::atomic<std::uint64_t> relays{0};            // basp_screen: relay
std::atomic<std::uint64_t> refused_messages{0};  // basp_screen: refuse
std::atomic<std::uint64_t> dropped{0};           // basp_screen: drop
std::atomic<std::uint64_t> actors_refused{0};    // over max_peer_actors
std::atomic<int> screeners{0};  // router_guard::screening() tokens alive
// The local actors that take messages from peers, by node and id (a
// process may hold several actor systems); guarded by `mtx`.
std::map<std::pair<caf::node_id, caf::actor_id>, basp_screen::receiver> receivers;
int spare_fd = -1;  // the descriptor given up to shed a connection on EMFILE

ino_t inode_of(int fd) {
  struct stat sb;
  return ::fstat(fd, &sb) == 0 && S_ISSOCK(sb.st_mode) ? sb.st_ino : 0;
}

// Drops the connections CAF has closed since (their descriptor is gone or
// names another file now).
void prune(router_guard::state& st) {
  for (auto i = st.conns.begin(); i != st.conns.end();)
    i = inode_of(i->first) != i->second.ino ? st.conns.erase(i) : std::next(i);
}

std::shared_ptr<router_guard::state> guarded_listener(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return nullptr;
  std::uint16_t port;
  if (a.ss_family == AF_INET)
    port = ntohs(reinterpret_cast<sockaddr_in&>(a).sin_port);
  else if (a.ss_family == AF_INET6)
    port = ntohs(reinterpret_cast<sockaddr_in6&>(a).sin6_port);
  else
    return nullptr;
  std::lock_guard<std::mutex> g(mtx);
  auto i = ports.find(port);
  return i == ports.end() ? nullptr : i->second.lock();
}

template <class Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

using accept_fn = int (*)(int, sockaddr*, socklen_t*);

int guarded_accept(router_guard::state& st, accept_fn next, int fd, sockaddr* addr,
                   socklen_t* len) {
  int c = next(fd, addr, len);
  if (c < 0) {
    if (errno == EMFILE || errno == ENFILE) {
      // The listener stays readable while the connection waits: without
      // shedding it CAF's multiplexer would spin on it.
      std::lock_guard<std::mutex> g(mtx);
      if (spare_fd >= 0) {
        ::close(spare_fd);
        if (int shed = next(fd, nullptr, nullptr); shed >= 0)
          ::close(shed);
        spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      }
      ++st.refused;
      errno = EAGAIN;
    }
    return -1;
  }
  std::lock_guard<std::mutex> g(mtx);
  if (st.conns.size() >= st.limits.max_connections)
    prune(st);
  if (st.conns.size() >= st.limits.max_connections) {
    ::close(c);
    ++st.refused;
    errno = EAGAIN;  // CAF's acceptors take that as "nothing to accept"
    return -1;
  }
  ++st.accepted;
  st.conns[c] = {inode_of(c), steady::now(), false, false, {}};
  return c;
}

void note_hello(int fd) {
  std::lock_guard<std::mutex> g(mtx);
  for (auto& [port, weak] : ports)
    if (auto st = weak.lock())
      if (auto i = st->conns.find(fd); i != st->conns.end() && i->second.ino == inode_of(fd))
        i->second.hello = true;
}

// The peer on `fd` (a connection accepted on a guarded port) sends from
// actor `id`, or says it is down (`gone`): false when that makes more than
// max_peer_actors of its actors known here at once.
bool note_source(int fd, caf::actor_id id, bool gone) {
  std::lock_guard<std::mutex> g(mtx);
  for (auto& [port, weak] : ports)
    if (auto st = weak.lock())
      if (auto i = st->conns.find(fd); i != st->conns.end()) {
        auto& known = i->second.sources;
        if (gone) {
          known.erase(id);
        } else if (known.insert(id).second) {
          if (i->second.ino != inode_of(fd)) {  // CAF closed that one: not ours
            st->conns.erase(i);
            return true;
          }
          return known.size() <= router_guard::max_peer_actors;
        }
        return true;
      }
  return true;
}

// Runs on the middleman's thread (posted), the one that accepts and closes
// these descriptors, so none is closed and reused between check and use.
void sweep(const std::shared_ptr<router_guard::state>& st) {
  std::lock_guard<std::mutex> g(mtx);
  prune(*st);
  auto now = steady::now();
  for (auto& [fd, c] : st->conns)
    if (!c.hello && !c.shut && now - c.accepted > st->limits.handshake_timeout) {
      ::shutdown(fd, SHUT_RDWR);  // CAF reads EOF and closes it itself
      c.shut = true;
      ++st->handshake_timeouts;
    }
}

} // namespace

// -- the interposed functions ------------------------------------------------------

extern "C" int accept(int fd, sockaddr* addr, socklen_t* len) {
  static const auto next = real<accept_fn>("accept");
  if (nports.load(std::memory_order_acquire) > 0)
    if (auto st = guarded_listener(fd))
      return guarded_accept(*st, next, fd, addr, len);
  return next(fd, addr, len);
}

// OpenSSL's manual: the error queue must be empty before an SSL I/O call
// whose result SSL_get_error classifies. caf_openssl never empties it.
#define DSPEX_SSL_CLEARED(name, params, args)                         \
  extern "C" int name params {                                        \
    static const auto next = real<int(*) params>(#name);              \
    ERR_clear_error();                                                \
    return next args;                                                 \
  }
DSPEX_SSL_CLEARED(SSL_read, (SSL * s, void* buf, int n), (s, buf, n))
DSPEX_SSL_CLEARED(SSL_write, (SSL * s, const void* buf, int n), (s, buf, n))
DSPEX_SSL_CLEARED(SSL_accept, (SSL * s), (s))
DSPEX_SSL_CLEARED(SSL_connect, (SSL * s), (s))
DSPEX_SSL_CLEARED(SSL_do_handshake, (SSL * s), (s))
DSPEX_SSL_CLEARED(SSL_shutdown, (SSL * s), (s))
#undef DSPEX_SSL_CLEARED

// The mangled name of basp::instance::handle (below), as libcaf_io exports
// it (an asm label needs a literal).
#define DSPEX_BASP_HANDLE \
  "_ZN3caf2io4basp8instance6handleEPNS_14execution_unitERNS0_12new_data_msgERNS1_6headerEb"

namespace {

using caf::io::basp::connection_state;
using handle_fn = connection_state (*)(void*, caf::execution_unit*, caf::io::new_data_msg&,
                                       caf::io::basp::header&, bool);

} // namespace

// caf::io::basp::instance::handle(execution_unit*, new_data_msg&, header&,
// bool): the BASP broker hands it every header and payload it reads, and
// reads a payload of the header's payload_len next. (External linkage,
// under CAF's symbol name.)
connection_state basp_handle(void* self, caf::execution_unit* ctx, caf::io::new_data_msg& dm,
                             caf::io::basp::header& hdr, bool is_payload)
  __asm__(DSPEX_BASP_HANDLE);

namespace {

basp_screen::receiver who(const caf::node_id& node, caf::actor_id id) {
  std::lock_guard<std::mutex> g(mtx);
  auto i = receivers.find({node, id});
  return i == receivers.end() ? basp_screen::receiver::other : i->second;
}

// Screening on while it lives; `id` (not 0) a receiver of `node` meanwhile.
std::shared_ptr<void> hold(const caf::node_id& node, caf::actor_id id, basp_screen::receiver as) {
  screeners.fetch_add(1, std::memory_order_acq_rel);
  if (id != 0) {
    std::lock_guard<std::mutex> g(mtx);
    receivers[{node, id}] = as;
  }
  return std::shared_ptr<void>(nullptr, [node, id](void*) {
    if (id != 0) {
      std::lock_guard<std::mutex> g(mtx);
      receivers.erase({node, id});
    }
    screeners.fetch_sub(1, std::memory_order_acq_rel);
  });
}

} // namespace

connection_state basp_handle(void* self, caf::execution_unit* ctx, caf::io::new_data_msg& dm,
                             caf::io::basp::header& hdr, bool is_payload) {
  static const auto next = real<handle_fn>(DSPEX_BASP_HANDLE);
  if (is_payload
      && (nports.load(std::memory_order_acquire) > 0 || screeners.load(std::memory_order_acquire) > 0)) {
    // Refused: closes this connection alone, as for an oversized header.
    switch (basp_screen::screen(self, ctx, dm, hdr, who)) {
      case basp_screen::verdict::pass:
        if (hdr.source_actor != 0
            && !note_source(static_cast<int>(dm.handle.id()), hdr.source_actor,
                            hdr.operation == caf::io::basp::message_type::down_message)) {
          actors_refused.fetch_add(1, std::memory_order_relaxed);
          return connection_state::malformed_basp_message;
        }
        break;
      case basp_screen::verdict::drop:
        dropped.fetch_add(1, std::memory_order_relaxed);
        return connection_state::await_header;
      case basp_screen::verdict::relay:
        relays.fetch_add(1, std::memory_order_relaxed);
        return connection_state::malformed_basp_message;
      case basp_screen::verdict::refuse:
        refused_messages.fetch_add(1, std::memory_order_relaxed);
        return connection_state::malformed_basp_message;
    }
  }
  auto res = next(self, ctx, dm, hdr, is_payload);
  if (is_payload)
    return res;
  if (res == connection_state::await_payload
      && hdr.payload_len > max_payload.load(std::memory_order_relaxed)) {
    // The broker's cleanup for a malformed message runs, and closes this
    // connection alone, before it would size its read buffer to payload_len.
    oversized.fetch_add(1, std::memory_order_relaxed);
    return connection_state::malformed_basp_message;
  }
  if (hdr.operation == caf::io::basp::message_type::client_handshake
      && nports.load(std::memory_order_acquire) > 0)
    note_hello(static_cast<int>(dm.handle.id()));
  return res;
}

// -- router_guard --------------------------------------------------------------------

namespace {

using guard_tick_atom = caf::atom_constant<caf::atom("guardtick")>;

caf::behavior ticker(caf::event_based_actor* self, caf::io::middleman* mm,
                     std::shared_ptr<router_guard::state> st, caf::timespan every) {
  self->send(self, guard_tick_atom::value);
  return {[=](guard_tick_atom) {
    mm->backend().post([st] { sweep(st); });
    self->delayed_send(self, every, guard_tick_atom::value);
  }};
}

} // namespace

router_guard::router_guard(caf::actor_system& sys, std::shared_ptr<state> st)
  : sys_(sys), st_(std::move(st)) {
}

std::unique_ptr<router_guard> router_guard::watch(caf::actor_system& sys, std::uint16_t port,
                                                  caf::actor_id router, listen_limits limits) {
  auto st = std::make_shared<state>();
  st->port = port;
  st->limits = limits;
  {
    std::lock_guard<std::mutex> g(mtx);
    if (spare_fd < 0)
      spare_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ports[port] = st;
    nports.store(static_cast<int>(ports.size()), std::memory_order_release);
  }
  std::unique_ptr<router_guard> g(new router_guard(sys, st));
  g->router_ = hold(sys.node(), router, basp_screen::receiver::router);
  // A quarter of the timeout: a silent connection goes within 1.25x of it.
  auto every = std::max(std::chrono::milliseconds(10), limits.handshake_timeout / 4);
  g->ticker_ = sys.spawn<caf::hidden>(ticker, &sys.middleman(), st,
                                                      caf::timespan{every});
  return g;
}

router_guard::~router_guard() {
  caf::anon_send_exit(ticker_, caf::exit_reason::user_shutdown);
  std::lock_guard<std::mutex> g(mtx);
  if (auto i = ports.find(st_->port); i != ports.end() && i->second.lock() == st_)
    ports.erase(i);
  nports.store(static_cast<int>(ports.size()), std::memory_order_release);
}

nlohmann::json router_guard::counters() const {
  std::lock_guard<std::mutex> g(mtx);
  return {{"connections", st_->conns.size()},
          {"max_connections", st_->limits.max_connections},
          {"accepted", st_->accepted},
          {"refused", st_->refused},
          {"handshake_timeouts", st_->handshake_timeouts},
          {"handshake_timeout_ms", st_->limits.handshake_timeout.count()},
          {"oversized_messages", oversized.load()},
          {"relays_refused", relays.load()},
          {"messages_refused", refused_messages.load()},
          {"messages_dropped", dropped.load()},
          {"actors_refused", actors_refused.load()},
          {"max_message_bytes", max_payload.load()},
          {"guard_active", active()}};
}

void router_guard::max_message_bytes(std::uint32_t n) {
  auto cur = max_asked.load();
  while (n > cur && !max_asked.compare_exchange_weak(cur, n)) {
  }
  max_payload.store(max_asked.load());
}

std::shared_ptr<void> router_guard::screening(const caf::node_id& node, caf::actor_id client) {
  return hold(node, client, basp_screen::receiver::client);
}

std::uint32_t router_guard::max_message_bytes() {
  return max_payload.load();
}

bool router_guard::active() {
  // The exported definitions win only where the executable exports them;
  // compare what the dynamic linker resolves with our own.
  static const bool bound = [] {
    auto mine = reinterpret_cast<void*>(&basp_handle);
    auto found = ::dlsym(RTLD_DEFAULT, DSPEX_BASP_HANDLE);
    auto acc = ::dlsym(RTLD_DEFAULT, "accept");
    auto rd = ::dlsym(RTLD_DEFAULT, "SSL_read");
    return found == mine && acc == reinterpret_cast<void*>(&::accept)
           && rd == reinterpret_cast<void*>(&::SSL_read);
  }();
  return bound;
}

} // namespace dspex
