// One node per control path. A node holds an exclusive flock on
// "<path>.lock" for its whole life (the kernel drops it when the process
// dies, however it dies), so two nodes starting at once cannot both win.
// Holding the lock, we still probe the socket: something that answers there
// (a node of a version without the lock) is left alone; a socket nobody
// answers on is a dead node's leftover and is replaced. The lock file itself
// is never removed: unlinking a lock file lets two processes lock two
// different inodes of one name.
#include "control.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace dspex::cli {

namespace {

bool make_address(const std::string& path, sockaddr_un& a) {
  a = sockaddr_un{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path))
    return false;
  std::memcpy(a.sun_path, path.data(), path.size());
  return true;
}

std::string errno_text(int e) {
  return std::strerror(e);
}

enum class probe_result { absent, stale, live, not_a_socket, error };

// Is something listening on `path`? Non-blocking, so a live node whose
// backlog is full (EAGAIN) counts as live instead of hanging us. `pid` is
// the listener's, from SO_PEERCRED, when it answered.
probe_result probe(const std::string& path, int& pid, std::string& why) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0)
    return errno == ENOENT ? probe_result::absent : (why = errno_text(errno), probe_result::error);
  if (!S_ISSOCK(st.st_mode))
    return probe_result::not_a_socket;
  sockaddr_un a;
  make_address(path, a);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return why = errno_text(errno), probe_result::error;
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  int e = errno;
  probe_result r;
  if (rc == 0 || e == EAGAIN || e == EINPROGRESS) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (rc == 0 && ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
      pid = cred.pid;
    r = probe_result::live;
  } else if (e == ECONNREFUSED || e == ENOENT) {
    r = probe_result::stale;
  } else {
    why = errno_text(e);
    r = probe_result::error;
  }
  ::close(fd);
  return r;
}

int read_pid(int fd) {
  char buf[32] = {};
  auto n = ::pread(fd, buf, sizeof buf - 1, 0);
  return n > 0 ? std::atoi(buf) : 0;
}

std::string with_pid(std::string msg, int pid) {
  if (pid > 0)
    msg += " (pid " + std::to_string(pid) + ")";
  return msg;
}

} // namespace

control_socket control_socket::claim(const std::string& path) {
  control_socket s;
  s.path_ = path;
  sockaddr_un a;
  if (!make_address(path, a)) {
    s.error_ = "control path \"" + path + "\" is empty or longer than "
               + std::to_string(sizeof(a.sun_path) - 1) + " bytes";
    return s;
  }
  auto lock_path = path + ".lock";
  s.lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (s.lock_fd_ < 0) {
    s.error_ = "cannot open " + lock_path + ": " + errno_text(errno);
    return s;
  }
  if (::flock(s.lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    int pid = 0;
    std::string why;
    if (e == EWOULDBLOCK) {
      s.in_use_ = true;
      bool live = probe(path, pid, why) == probe_result::live;
      if (pid <= 0)
        pid = read_pid(s.lock_fd_);
      s.error_ = with_pid(live ? "another node is serving " + path
                               : "another node is starting on " + path, pid);
    } else {
      s.error_ = "cannot lock " + lock_path + ": " + errno_text(e);
    }
    s.reset();
    return s;
  }
  // Ours now: say who holds it, for the message a second node prints.
  auto pid_text = std::to_string(::getpid()) + "\n";
  if (::ftruncate(s.lock_fd_, 0) == 0)
    (void)!::pwrite(s.lock_fd_, pid_text.data(), pid_text.size(), 0);

  int pid = 0;
  std::string why;
  switch (probe(path, pid, why)) {
    case probe_result::live:
      s.in_use_ = true;
      s.error_ = with_pid("another process is serving " + path, pid);
      s.reset();
      return s;
    case probe_result::not_a_socket:
      s.error_ = path + " exists and is not a socket; not replacing it";
      s.reset();
      return s;
    case probe_result::error:
      s.error_ = "cannot check " + path + ": " + why;
      s.reset();
      return s;
    case probe_result::stale:
      ::unlink(path.c_str());  // a dead node's socket: nobody listens there
      break;
    case probe_result::absent:
      break;
  }

  s.fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s.fd_ < 0) {
    s.error_ = "socket: " + errno_text(errno);
    s.reset();
    return s;
  }
  auto old = ::umask(0077);
  int rc = ::bind(s.fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  int e = errno;
  ::umask(old);
  if (rc != 0) {
    s.error_ = "cannot bind " + path + ": " + errno_text(e);
    s.reset();
    return s;
  }
  s.bound_ = true;
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    s.dev_ = st.st_dev;
    s.ino_ = st.st_ino;
  }
  if (::listen(s.fd_, SOMAXCONN) != 0) {
    s.error_ = "cannot listen on " + path + ": " + errno_text(errno);
    s.reset();
    return s;
  }
  return s;
}

void control_socket::reset() {
  if (fd_ >= 0)
    ::close(fd_);
  fd_ = -1;
  if (bound_) {
    // Only our own socket file: after a takeover by hand (rm + new node) the
    // name belongs to someone else.
    struct stat st {};
    if (::stat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
      ::unlink(path_.c_str());
    bound_ = false;
  }
  if (lock_fd_ >= 0)
    ::close(lock_fd_);  // releases the flock, after the socket is gone
  lock_fd_ = -1;
}

int control_socket::release_fd() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

control_socket::~control_socket() {
  reset();
}

control_socket::control_socket(control_socket&& other) noexcept {
  *this = std::move(other);
}

control_socket& control_socket::operator=(control_socket&& other) noexcept {
  if (this != &other) {
    reset();
    path_ = std::move(other.path_);
    error_ = std::move(other.error_);
    in_use_ = other.in_use_;
    fd_ = std::exchange(other.fd_, -1);
    lock_fd_ = std::exchange(other.lock_fd_, -1);
    bound_ = std::exchange(other.bound_, false);
    dev_ = other.dev_;
    ino_ = other.ino_;
  }
  return *this;
}

} // namespace dspex::cli
