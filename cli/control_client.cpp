// The client side of the control socket (`dspex status`, `exec`, `events`...):
// every wait is bounded, and every failure is a classified error reply.
#include "control.hpp"
#include "control_request.hpp"

#include <cerrno>
#include <cstring>
#include <optional>
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

namespace {

struct fd_closer {
  int fd = -1;
  ~fd_closer() {
    if (fd >= 0)
      ::close(fd);
  }
};

// Reads the next line from `fd` into `line` (kept in `buf` across calls);
// a failure reply, or nothing. `deadline` unset: waits as long as it takes.
std::optional<json> read_line(int fd, const std::string& path, std::string& buf,
                              std::optional<clock::time_point> deadline,
                              std::chrono::milliseconds budget, std::string& line) {
  char chunk[4096];
  for (;;) {
    auto nl = buf.find('\n');
    if (nl != std::string::npos) {
      line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      return std::nullopt;
    }
    auto n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf.append(chunk, static_cast<std::size_t>(n));
      continue;
    }
    if (n == 0) {
      if (buf.empty())
        return error_reply("protocol_error",
                           "the node at " + path + " closed the connection without a reply");
      line = std::move(buf);  // a last line without newline: judged by the caller
      buf.clear();
      return std::nullopt;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!deadline) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, -1) >= 0 || errno == EINTR)
          continue;
        return error_reply("protocol_error", std::string("waiting for a line: ") + std::strerror(errno));
      }
      if (wait_for(fd, POLLIN, *deadline))
        continue;
      return error_reply("unavailable", "no reply from the node at " + path + " within "
                                          + std::to_string(budget.count()) + " ms");
    }
    return error_reply("protocol_error", std::string("reading the reply: ") + std::strerror(errno));
  }
}

std::optional<json> parse_reply(const std::string& path, const std::string& line, json& out) {
  out = json::parse(line, nullptr, false);
  if (out.is_discarded() || !out.is_object())
    return error_reply("protocol_error", "unreadable reply from the node at " + path);
  return std::nullopt;
}

// A node that refuses a connection (too many) writes its one error line and
// closes at once, possibly before the request went out: then that line,
// already buffered here, is the answer rather than the failed send.
json refusal_or(int fd, const std::string& path, json send_failure) {
  std::string buf, line;
  json j;
  if (read_line(fd, path, buf, clock::now() + 1s, 1s, line) || parse_reply(path, line, j))
    return send_failure;
  return j;
}

// Connects to `path` and sends `request` as one line; a failure reply, or
// nothing with the connected descriptor in `out`.
std::optional<json> connect_and_send(const std::string& path, const json& request,
                                     clock::time_point deadline, fd_closer& out) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return error_reply("unavailable", "invalid control path \"" + path + "\"");
  std::memcpy(a.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return error_reply("unavailable", std::string("socket: ") + std::strerror(errno));
  out.fd = fd;

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
    return error_reply("unavailable", "cannot reach a running node at " + path + ": "
                                        + (e == EAGAIN ? "it accepts no connection (busy)"
                                                       : std::string(std::strerror(e))));
  }

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
    return refusal_or(fd, path,
                      error_reply("unavailable", "cannot send the request to " + path + ": "
                                                   + (n < 0 ? std::strerror(errno) : "connection closed")));
  }
  return std::nullopt;
}

} // namespace

json control_call(const std::string& path, const json& request,
                  std::chrono::milliseconds reply_timeout) {
  auto budget = reply_timeout.count() > 0 ? reply_timeout : reply_budget(request);
  auto deadline = clock::now() + budget;
  fd_closer fd;
  if (auto f = connect_and_send(path, request, deadline, fd))
    return *f;
  std::string buf, line;
  if (auto f = read_line(fd.fd, path, buf, deadline, budget, line))
    return *f;
  json j;
  if (auto f = parse_reply(path, line, j))
    return *f;
  return j;
}

json control_stream(const std::string& path, const json& request,
                    const std::function<bool(const json&)>& on_line) {
  auto budget = reply_budget(request);
  fd_closer fd;
  if (auto f = connect_and_send(path, request, clock::now() + budget, fd))
    return *f;
  // The first line (an acknowledgement or an error) comes at once; the
  // events after it whenever they happen.
  std::string buf, line;
  std::optional<clock::time_point> deadline = clock::now() + budget;
  json last;
  for (;;) {
    if (auto f = read_line(fd.fd, path, buf, deadline, budget, line))
      return last.is_null() ? *f : last;
    deadline.reset();
    if (auto f = parse_reply(path, line, last))
      return *f;
    if (!on_line(last))
      return last;
  }
}

json error_reply(const std::string& cls, const std::string& message) {
  return {{"ok", false}, {"error", {{"class", cls}, {"message", message}}}};
}

} // namespace dspex::cli
