#include <dspex/bridge/fork_server.hpp>

#include <dspex/bridge/python_process.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <nlohmann/json.hpp>

#include <condition_variable>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace asio = boost::asio;
using json = nlohmann::json;

namespace dspex::bridge {

namespace {

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

void pidfd_kill(int pidfd, pid_t pid, int sig) {
  if (pidfd >= 0)
    ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0);
  else
    ::kill(pid, sig);
}

constexpr std::size_t max_message = 1 << 20;

} // namespace

struct fork_server::impl : std::enable_shared_from_this<impl> {
  explicit impl(io_loop& loop) : loop(loop), sock(loop.context()) {}

  ~impl() {
    for (auto& [pid, c] : children)
      if (c.pidfd >= 0)
        ::close(c.pidfd);
  }

  io_loop& loop;
  asio::posix::stream_descriptor sock;  // our end; read on the loop, written by callers
  std::function<void(exit_status)> on_exit;

  // A fork request, from the caller's send to the server's answer.
  struct request {
    std::function<void(pid_t)> on_forked;
    std::function<void(exit_status)> on_exit;
    bool done = false;
    bool abandoned = false;  // the caller gave up waiting: kill what comes
    pid_t pid = -1;
    std::string error;
  };
  // A forked worker, until its exit was reported (loop thread only).
  struct child {
    std::function<void(exit_status)> on_exit;
    int pidfd = -1;
  };

  std::mutex mx;  // guards everything below up to `children`
  std::condition_variable cv;
  bool ready = false;
  bool dead = false;
  std::string init_error;
  pid_t server_pid = -1;
  long next_req = 0;
  std::map<long, request> pending;
  std::mutex send_mx;

  std::map<pid_t, child> children;
  std::vector<char> buf = std::vector<char>(max_message);

  void watch() {
    auto self = shared_from_this();
    sock.async_wait(asio::posix::stream_descriptor::wait_read,
                    [self](const boost::system::error_code& ec) {
                      if (ec)
                        return;
                      if (self->drain())
                        self->watch();
                    });
  }

  // Loop thread. Handles every queued message; false once the socket is done.
  bool drain() {
    if (!sock.is_open())
      return false;
    for (;;) {
      auto n = ::recv(sock.native_handle(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) {
        handle(std::string(buf.data(), static_cast<std::size_t>(n)));
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return true;
      return false;  // EOF or a broken socket: the server is going
    }
  }

  void handle(const std::string& text) {
    json m = json::parse(text, nullptr, false);
    if (!m.is_object())
      return;
    auto op = m.value("op", std::string());
    if (op == "exit") {
      auto pid = m.value("pid", -1);
      auto it = children.find(pid);
      if (it == children.end())
        return;
      auto c = std::move(it->second);
      children.erase(it);
      if (c.pidfd >= 0)
        ::close(c.pidfd);
      if (c.on_exit)
        c.on_exit(exit_status{m.value("status", 0)});
      return;
    }
    std::unique_lock<std::mutex> g(mx);
    if (op == "ready") {
      ready = true;
      server_pid = m.value("pid", -1);
    } else if (op == "init_failed") {
      init_error = m.value("error", std::string("the fork server failed to start"));
    } else if (op == "forked" || op == "fork_failed") {
      auto it = pending.find(m.value("req", -1L));
      if (it == pending.end())
        return;
      auto& r = it->second;
      r.done = true;
      if (op == "fork_failed") {
        r.error = m.value("error", std::string("fork failed"));
      } else {
        auto pid = static_cast<pid_t>(m.value("pid", -1));
        r.pid = pid;
        child c{std::move(r.on_exit), pidfd_open(pid)};
        auto on_forked = std::move(r.on_forked);
        bool abandoned = r.abandoned;
        if (abandoned)
          pending.erase(it);
        g.unlock();
        if (abandoned)
          pidfd_kill(c.pidfd, pid, SIGKILL);
        if (on_forked)
          on_forked(pid);
        children.emplace(pid, std::move(c));
        cv.notify_all();
        return;
      }
      if (r.abandoned)
        pending.erase(it);
    }
    g.unlock();
    cv.notify_all();
  }

  // Loop thread: the server process ended.
  void server_exited(exit_status s) {
    drain();  // exits it relayed just before it went
    {
      std::lock_guard<std::mutex> gs(send_mx);  // no sender holds the number now
      std::lock_guard<std::mutex> g(mx);
      boost::system::error_code ignore;
      sock.close(ignore);
      dead = true;
      for (auto& [req, r] : pending)
        if (!r.done) {
          r.done = true;
          r.error = "the fork server exited (" + s.describe() + ")";
        }
    }
    cv.notify_all();
    // Its workers die with it (parent-death signal); nobody can tell us their
    // statuses now, so each is reported as killed once it is really gone.
    auto orphans = std::move(children);
    children.clear();
    for (auto& [pid, c] : orphans) {
      pidfd_kill(c.pidfd, pid, SIGKILL);
      if (c.pidfd < 0) {
        if (c.on_exit)
          c.on_exit(exit_status::from_signal(SIGKILL));
        continue;
      }
      auto d = std::make_shared<asio::posix::stream_descriptor>(loop.context(), c.pidfd);
      auto cb = std::move(c.on_exit);
      d->async_wait(asio::posix::stream_descriptor::wait_read,
                    [d, cb](const boost::system::error_code&) {
                      boost::system::error_code ignore;
                      d->close(ignore);
                      if (cb)
                        cb(exit_status::from_signal(SIGKILL));
                    });
    }
    auto cb = std::move(on_exit);
    on_exit = nullptr;
    if (cb)
      cb(s);
  }
};

std::shared_ptr<fork_server> fork_server::start(io_loop& loop, fork_server_options o,
                                                std::function<void(exit_status)> on_exit) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    throw std::system_error(errno, std::generic_category(), "socketpair");
  auto im = std::make_shared<impl>(loop);
  im->on_exit = std::move(on_exit);
  loop.run_sync([&] { im->sock.assign(sv[0]); });

  process_options po;
  po.executable = o.python;
  po.args = {"-u", "-m", "dspex_worker.fork_server", "--run-id", o.run_id,
             "--parent-pid", std::to_string(::getpid()), "--socket-fd", "3"};
  std::string pre;
  for (auto& m : o.preload)
    pre += (pre.empty() ? "" : ",") + m;
  if (!pre.empty()) {
    po.args.push_back("--preload");
    po.args.push_back(pre);
  }
  po.env = o.env;
  po.framed = false;
  po.label = o.label;
  po.pass_fds = {sv[1]};
  po.batch_scheduling = o.batch_scheduling;
  process_callbacks cbs;
  std::weak_ptr<impl> weak = im;
  cbs.on_exit = [weak](exit_status s) {
    if (auto im = weak.lock())
      im->server_exited(s);
  };
  std::shared_ptr<python_process> proc;
  try {
    proc = python_process::spawn(loop, po, std::move(cbs));
  } catch (...) {
    ::close(sv[1]);
    loop.run_sync([&] { boost::system::error_code ignore; im->sock.close(ignore); });
    throw;
  }
  ::close(sv[1]);
  loop.run_sync([&] { im->watch(); });

  std::unique_lock<std::mutex> g(im->mx);
  bool answered = loop.wait_for(g, im->cv, o.ready_timeout, [&] {
    return im->ready || im->dead || !im->init_error.empty();
  });
  if (im->ready) {
    auto fs = std::shared_ptr<fork_server>(new fork_server());
    fs->impl_ = std::move(im);
    fs->proc_ = std::move(proc);
    return fs;
  }
  std::string why = !im->init_error.empty() ? im->init_error
                    : !answered ? "not ready within " + std::to_string(o.ready_timeout.count()) + " ms"
                                : "exited before it was ready";
  g.unlock();
  proc->kill();
  throw fork_server_error("fork server: " + why);
}

fork_server::~fork_server() {
  if (proc_)
    proc_->kill();  // its workers follow (parent-death signal)
}

pid_t fork_server::pid() const noexcept {
  return proc_ ? proc_->pid() : -1;
}

bool fork_server::alive() const noexcept {
  std::lock_guard<std::mutex> g(impl_->mx);
  return !impl_->dead;
}

void fork_server::stop() {
  auto im = impl_;
  im->loop.post([im] {
    // EOF tells it to go; shutdown() rather than close() keeps the reads
    // of its last exits working until it is gone.
    if (im->sock.is_open())
      ::shutdown(im->sock.native_handle(), SHUT_WR);
  });
  proc_->stop(stop_plan{std::nullopt, std::chrono::milliseconds(2000),
                           std::chrono::milliseconds(1000), SIGTERM});
}

void fork_server::kill() {
  proc_->kill();
}

pid_t fork_server::fork_worker(const std::vector<std::string>& argv,
                               const std::vector<std::pair<std::string, std::string>>& env,
                               int in_fd, int out_fd, int err_fd,
                               std::function<void(pid_t)> on_forked,
                               std::function<void(exit_status)> on_exit,
                               std::chrono::milliseconds timeout) {
  auto& im = *impl_;
  json envj = json::object();
  for (auto& [k, v] : env)
    envj[k] = v;
  long req;
  {
    std::lock_guard<std::mutex> g(im.mx);
    if (im.dead)
      throw fork_server_error("the fork server is not running");
    req = ++im.next_req;
    auto& r = im.pending[req];
    r.on_forked = std::move(on_forked);
    r.on_exit = std::move(on_exit);
  }
  auto body = json{{"op", "fork"}, {"req", req}, {"argv", argv}, {"env", envj}}.dump();

  int fds[3] = {in_fd, out_fd, err_fd};
  iovec iov{body.data(), body.size()};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(fds))];
  std::memset(ctrl, 0, sizeof(ctrl));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof(ctrl);
  auto* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(fds));
  std::memcpy(CMSG_DATA(cm), fds, sizeof(fds));
  ssize_t sent = -1;
  {
    std::lock_guard<std::mutex> g(im.send_mx);
    errno = EPIPE;
    if (im.sock.is_open())
      do
      sent = ::sendmsg(im.sock.native_handle(), &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
  }
  std::unique_lock<std::mutex> g(im.mx);
  if (sent < 0) {
    im.pending.erase(req);
    throw fork_server_error(std::string("cannot reach the fork server: ") + std::strerror(errno));
  }
  bool answered = im.loop.wait_for(g, im.cv, timeout, [&] { return im.pending[req].done; });
  auto& r = im.pending[req];
  if (!answered) {
    r.abandoned = true;  // a late fork is killed on arrival
    throw fork_server_error("the fork server did not answer within "
                            + std::to_string(timeout.count()) + " ms");
  }
  auto pid = r.pid;
  auto error = r.error;
  im.pending.erase(req);
  if (pid <= 0)
    throw fork_server_error("fork server: " + error);
  return pid;
}

} // namespace dspex::bridge
