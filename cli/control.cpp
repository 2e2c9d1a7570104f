#include "control.hpp"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace dspex::cli {

namespace {

bool read_line(int fd, std::string& out, std::size_t limit = 64u << 20) {
  char c;
  while (out.size() < limit) {
    auto n = ::read(fd, &c, 1);
    if (n <= 0)
      return !out.empty();
    if (c == '\n')
      return true;
    out.push_back(c);
  }
  return false;
}

void write_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    auto n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0)
      return;
    off += static_cast<std::size_t>(n);
  }
}

sockaddr_un address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof(a.sun_path) - 1);
  return a;
}

json error_json(const caf::error& e) {
  auto c = code_of(e);
  json j = {{"class", c ? to_string(*c) : "error"}, {"message", describe(e)}};
  if (auto pe = python_error_of(e))
    j["python"] = {{"type", pe->type}, {"message", pe->message}, {"traceback", pe->traceback}};
  return j;
}

} // namespace

std::string default_control_path(const std::string& name) {
  if (auto env = std::getenv("DSPEX_CONTROL"); env && *env)
    return env;
  auto dir = "/tmp/dspex-" + std::to_string(::getuid());
  ::mkdir(dir.c_str(), 0700);
  return dir + "/" + name + ".sock";
}

control_server::control_server(node& n, std::string path) : node_(n), path_(std::move(path)) {
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0)
    return;
  ::unlink(path_.c_str());
  auto a = address(path_);
  auto old = ::umask(0077);
  bool ok = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd_, 16) == 0;
  ::umask(old);
  if (!ok) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  thread_ = std::thread([this] { serve(); });
}

control_server::~control_server() {
  stop_ = true;
  if (thread_.joinable())
    thread_.join();
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

void control_server::serve() {
  while (!stop_) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0)
      continue;
    std::string line;
    json reply;
    if (read_line(c, line)) {
      auto req = json::parse(line, nullptr, false);
      auto op = req.is_object() ? req.value("op", "") : "";
      if (op == "status") {
        reply = node_.status();
      } else if (op == "exec" && req.value("command", "") != "") {
        std::optional<std::string> sid;
        if (req.contains("session_id") && req["session_id"].is_string())
          sid = req["session_id"].get<std::string>();
        auto r = node_.execute(req["command"].get<std::string>(),
                               req.value("args", json::object()), sid,
                               std::chrono::milliseconds(req.value("timeout_ms", 0)));
        reply = r ? json{{"ok", true}, {"result", *r}} : json{{"ok", false}, {"error", error_json(r.error())}};
      } else {
        reply = {{"ok", false},
                 {"error", {{"class", "invalid_request"},
                            {"message", "expected {\"op\": \"status\"} or {\"op\": \"exec\", \"command\": ...}"}}}};
      }
    }
    write_all(c, reply.dump() + "\n");
    ::close(c);
  }
}

json control_call(const std::string& path, const json& request) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto a = address(path);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    auto msg = std::string("cannot reach a running node at ") + path + ": " + std::strerror(errno);
    if (fd >= 0)
      ::close(fd);
    return {{"ok", false}, {"error", {{"class", "unavailable"}, {"message", msg}}}};
  }
  write_all(fd, request.dump() + "\n");
  std::string line;
  read_line(fd, line);
  ::close(fd);
  auto j = json::parse(line, nullptr, false);
  if (j.is_discarded())
    return {{"ok", false}, {"error", {{"class", "protocol_error"}, {"message", "unreadable reply"}}}};
  return j;
}

} // namespace dspex::cli
