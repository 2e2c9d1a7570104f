// The client side of the control socket (`dspex status`, `dspex exec`):
// every wait is bounded, and every failure is a classified error reply.
#include "control.hpp"
#include "control_request.hpp"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace dspex::cli {

namespace {

using clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto connect_timeout = 5s;

json failure(const std::string& cls, const std::string& message) {
  return {{"ok", false}, {"error", {{"class", cls}, {"message", message}}}};
}

int remaining_ms(clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Waits for `events` on a non-blocking fd until `deadline`; false on timeout.
bool wait_for(int fd, short events, clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0)
      return true;
    if (r == 0 || errno != EINTR)
      return false;
  }
}

// How long the node may take to answer: as long as it may take itself
// (node::execute's own bound), plus a margin.
std::chrono::milliseconds reply_budget(const json& request) {
  auto op = request.find("op");
  if (!request.is_object() || op == request.end() || *op != "exec")
    return 60s;
  auto t = request.find("timeout_ms");
  long long ms = t != request.end() && t->is_number_integer() ? t->get<long long>() : 0;
  if (ms <= 0 || ms > max_timeout_ms)
    return std::chrono::milliseconds(10min) + 30s;
  return std::chrono::milliseconds(ms) * 2 + 60s;
}

} // namespace

std::string default_control_path(const std::string& name) {
  if (auto env = std::getenv("DSPEX_CONTROL"); env && *env)
    return env;
  auto dir = "/tmp/dspex-" + std::to_string(::getuid());
  ::mkdir(dir.c_str(), 0700);
  return dir + "/" + name + ".sock";
}

json control_call(const std::string& path, const json& request,
                  std::chrono::milliseconds reply_timeout) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return failure("unavailable", "invalid control path \"" + path + "\"");
  std::memcpy(a.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return failure("unavailable", std::string("socket: ") + std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};

  // A Unix connect never blocks half-way: it succeeds, or the backlog is
  // full (EAGAIN: the node is alive but busy; try again until the deadline).
  auto connect_deadline = clock::now() + connect_timeout;
  for (;;) {
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0)
      break;
    int e = errno;
    if ((e == EAGAIN || e == EINTR) && clock::now() < connect_deadline) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    return failure("unavailable", "cannot reach a running node at " + path + ": "
                                    + (e == EAGAIN ? "it accepts no connection (busy)"
                                                   : std::string(std::strerror(e))));
  }

  auto budget = reply_timeout.count() > 0 ? reply_timeout : reply_budget(request);
  auto deadline = clock::now() + budget;
  auto text = dump_line(request);
  for (std::size_t off = 0; off < text.size();) {
    auto n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait_for(fd, POLLOUT, deadline))
      continue;
    return failure("unavailable", "cannot send the request to " + path + ": "
                                    + (n < 0 ? std::strerror(errno) : "connection closed"));
  }

  std::string line;
  char chunk[4096];
  for (;;) {
    auto nl = line.find('\n');
    if (nl != std::string::npos) {
      line.resize(nl);
      break;
    }
    auto n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      line.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) {
      if (line.empty())
        return failure("protocol_error", "the node at " + path + " closed the connection without a reply");
      break;  // a last line without newline: judge it below
    }
    if (errno == EINTR)
      continue;
    if ((errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_for(fd, POLLIN, deadline))
        continue;
      return failure("unavailable", "no reply from the node at " + path + " within "
                                      + std::to_string(budget.count()) + " ms");
    }
    return failure("protocol_error", std::string("reading the reply: ") + std::strerror(errno));
  }
  auto j = json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return failure("protocol_error", "unreadable reply from the node at " + path);
  return j;
}

} // namespace dspex::cli
