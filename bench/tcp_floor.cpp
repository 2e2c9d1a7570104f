#include <dspex/bench/tcp_floor.hpp>

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

bool exchange(int fd, char* buf, bool send_first) {
  auto read_all = [&] {
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
  };
  auto write_all = [&] {
    std::size_t put = 0;
    while (put < message_bytes) {
      auto n = ::send(fd, buf + put, message_bytes - put, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        return false;
      put += static_cast<std::size_t>(n);
    }
    return true;
  };
  return send_first ? write_all() && read_all() : read_all() && write_all();
}

void no_delay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

} // namespace

void measure_tcp_floor(int n, tcp_floor& into) {
  constexpr int warm_up = 200;
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
    char buf[message_bytes];
    while (exchange(fd, buf, false)) {
    }
  });
  char buf[message_bytes] = {};
  bool ok = true;
  for (int i = 0; i < warm_up && ok; ++i)
    ok = exchange(client.fd, buf, true);
  auto use0 = host_usage_now();
  for (int i = 0; i < n && ok; ++i) {
    auto t = std::chrono::steady_clock::now();
    ok = exchange(client.fd, buf, true);
    into.rt.add(std::chrono::steady_clock::now() - t);
  }
  auto use1 = host_usage_now();
  ::shutdown(client.fd, SHUT_RDWR);
  echo.join();
  into.cpu_us += use1.cpu_us - use0.cpu_us;
  into.switches += use1.switches - use0.switches;
  into.round_trips += n;
  into.ok = ok;
}

} // namespace dspex::bench
