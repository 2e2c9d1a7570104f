#include <dspex/bench/tcp_floor.hpp>

#include <dspex/bench/subprocess.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

namespace dspex::bench {

namespace {

constexpr std::size_t message_bytes = 64;

struct fd_guard {
  int fd = -1;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

bool read_all(int fd, char* buf) {
  std::size_t got = 0;
  while (got < message_bytes) {
    auto n = ::read(fd, buf + got, message_bytes - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

// One message each way; the thread must block SIGPIPE (sigpipe_block), as
// write_all writes to a socket whose peer may be gone.
bool exchange(int fd, char* buf, bool send_first) {
  return send_first ? write_all(fd, buf, message_bytes) && read_all(fd, buf)
                    : read_all(fd, buf) && write_all(fd, buf, message_bytes);
}

void no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

} // namespace

void measure_tcp_floor(int n, tcp_floor& into) {
  constexpr int warm_up = 200;
  sigpipe_block no_sigpipe;
  const bool failed_before = into.failed;
  into.failed = true;  // until the round trips below are done
  fd_guard listener{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener.fd < 0 || ::bind(listener.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
      || ::listen(listener.fd, 1) != 0
      || ::getsockname(listener.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return;
  fd_guard client{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (client.fd < 0 || ::connect(client.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return;
  fd_guard served{::accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC)};
  if (served.fd < 0)
    return;
  no_delay(client.fd);
  no_delay(served.fd);
  // The echoing side ends when the client side closes its end.
  std::thread echo([fd = served.fd] {
    sigpipe_block no_sigpipe;
    char buf[message_bytes];
    while (exchange(fd, buf, false)) {
    }
  });
  char buf[message_bytes] = {};
  bool ok = true;
  for (int i = 0; i < warm_up && ok; ++i)
    ok = exchange(client.fd, buf, true);
  auto use0 = host_usage_now();
  int done = 0;
  while (done < n && ok) {
    auto t = std::chrono::steady_clock::now();
    ok = exchange(client.fd, buf, true);
    if (ok) {
      into.rt.add(std::chrono::steady_clock::now() - t);
      ++done;
    }
  }
  auto use1 = host_usage_now();
  ::shutdown(client.fd, SHUT_RDWR);
  echo.join();
  into.cpu_us += use1.cpu_us - use0.cpu_us;
  into.round_trips += done;
  into.failed = failed_before || !ok;
}

} // namespace dspex::bench
