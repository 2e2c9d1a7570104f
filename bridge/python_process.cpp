#include <dspex/bridge/python_process.hpp>

#include <dspex/bridge/batch_scheduling.hpp>
#include <dspex/bridge/descriptor_limit.hpp>
#include <dspex/bridge/fork_server.hpp>
#include <dspex/bridge/process_scope.hpp>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/process/args.hpp>
#include <boost/process/async_pipe.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/search_path.hpp>
#include <boost/process/start_dir.hpp>

#include <array>
#include <atomic>
#include <csignal>
#include <deque>
#include <mutex>
#include <fcntl.h>
#include <iostream>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <unistd.h>

extern char** environ;

namespace bp = boost::process;
namespace asio = boost::asio;

namespace dspex::bridge {

namespace {

// Sets the child's environment and, between fork and exec, its signal mask,
// process group and parent-death signal (only async-signal-safe calls there).
// The environment is built here rather than with bp::environment, whose
// find() in Boost 1.74 reads past the end of shorter entries (ASan).
struct child_setup : bp::extend::handler {
  pid_t parent;
  bool batch_scheduling = false;
  std::vector<int> pass_fds;
  std::vector<std::string> env_strings;
  std::vector<char*> envp;

  void build_env(const std::vector<std::pair<std::string, std::string>>& overrides) {
    for (char** e = ::environ; e && *e; ++e) {
      std::string entry = *e;
      auto eq = entry.find('=');
      auto key = entry.substr(0, eq);
      bool replaced = false;
      for (auto& [k, v] : overrides)
        replaced = replaced || k == key;
      if (!replaced)
        env_strings.push_back(std::move(entry));
    }
    for (auto& [k, v] : overrides)
      env_strings.push_back(k + "=" + v);
    for (auto& s : env_strings)
      envp.push_back(s.data());
    envp.push_back(nullptr);
  }

  template <class Executor>
  void on_setup(Executor& exec) {
    exec.env = envp.data();
  }

  template <class Executor>
  void on_exec_setup(Executor&) const {
    sigset_t none;  // the loop thread blocks SIGPIPE; the child must not inherit that
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // Nor an ignored SIGPIPE (`dspex run` ignores it; an ignored signal
    // stays ignored across exec): a child starts with the default action.
    signal(SIGPIPE, SIG_DFL);
    // Nor a raised RLIMIT_NOFILE (bridge/descriptor_limit.hpp).
    if (auto soft = inherited_descriptor_soft_limit()) {
      rlimit r{};
      if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur > soft) {
        r.rlim_cur = soft;
        setrlimit(RLIMIT_NOFILE, &r);
      }
    }
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)  // the host died before prctl took effect
      _exit(127);
    if (batch_scheduling)
      enter_batch_scheduling();
    for (std::size_t i = 0; i < pass_fds.size(); ++i) {
      int target = 3 + static_cast<int>(i);
      if (pass_fds[i] == target)
        fcntl(target, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
      else
        dup2(pass_fds[i], target);
    }
  }
};

void set_cloexec(int fd) {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0)
    ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

// A pipe whose both ends are close-on-exec. Created on the loop thread,
// which is also the only thread that forks our children, so no fork of ours
// can happen between pipe() and fcntl().
bp::async_pipe make_pipe(asio::io_context& ctx) {
  bp::async_pipe p(ctx);
  set_cloexec(p.native_source());
  set_cloexec(p.native_sink());
  return p;
}

// Our end of the child's stdin never blocks a sender's thread.
void set_nonblocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0)
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

constexpr std::size_t read_chunk = 64 * 1024;
constexpr auto eof_grace = std::chrono::milliseconds(200);

// The sweep at reaping reads every process's environment in /proc, and one
// caught between the two halves of its exec (the old image gone, the new
// one's environment not yet set up) reads as empty, so it seems to carry
// no scope: a Popen child started just before its parent died was missed
// that way, 3 runs in 8 on a busy machine. The scope is swept again a
// little later, three times.
void sweep_again(asio::io_context& ctx, std::string scope, int round = 0) {
  static constexpr std::chrono::milliseconds after[] = {std::chrono::milliseconds(10),
                                                        std::chrono::milliseconds(100),
                                                        std::chrono::milliseconds(1000)};
  if (scope.empty() || round >= 3)
    return;
  auto t = std::make_shared<asio::steady_timer>(ctx, after[round]);
  t->async_wait([t, &ctx, scope = std::move(scope), round](const boost::system::error_code& ec) mutable {
    if (ec)
      return;
    sweep_scope(scope);
    sweep_again(ctx, std::move(scope), round + 1);
  });
}

} // namespace

struct python_process::impl : std::enable_shared_from_this<impl> {
  impl(io_loop& loop, process_options opts, process_callbacks cbs)
    : loop(loop), opts(std::move(opts)), cbs(std::move(cbs)),
      in(make_pipe(loop.context())), out(make_pipe(loop.context())),
      err(make_pipe(loop.context())), pidfd(loop.context()), decoder(this->opts.max_frame_bytes),
      stop_timer(loop.context()), eof_timer(loop.context()) {
    set_nonblocking(in.native_sink());
  }

  ~impl() {
    if (forked) {  // not ours to reap: the fork server does
      if (!reaped.load() && signal_fd >= 0)
        ::syscall(SYS_pidfd_send_signal, signal_fd, SIGKILL, nullptr, 0);
      if (signal_fd >= 0)
        ::close(signal_fd);
      return;
    }
    // Last line of defence: whatever happened to the loop, never leave a
    // live or zombie child behind, nor anything it started.
    if (pid > 0 && !reaped.load()) {
      ::kill(pid, SIGKILL);
      int st = 0;
      ::waitpid(pid, &st, 0);
      sweep_scope(scope);
    }
  }

  io_loop& loop;
  process_options opts;
  process_callbacks cbs;
  bp::async_pipe in, out, err;
  asio::posix::stream_descriptor pidfd;
  frame_decoder decoder;
  asio::steady_timer stop_timer, eof_timer;
  pid_t pid = -1;
  std::string scope;  // process_scope.hpp; empty: not contained
  // Forked by a fork server: it reaps and relays the status (on_reaped);
  // signals go through a pidfd, so a recycled pid is never hit.
  bool forked = false;
  int signal_fd = -1;

  std::atomic<bool> reaped{false};
  exit_status status;
  bool stdout_done = false;
  bool stderr_done = false;
  bool exit_reported = false;

  // The write side is shared: a sender writes directly from its own thread
  // when nothing is queued (one io-thread wake-up less per request), and the
  // io thread drains whatever did not fit. wmx guards all four fields and
  // the descriptor's lifetime (it is closed only under wmx).
  std::mutex wmx;
  std::deque<std::string> write_queue;
  bool writing = false;  // the io thread owns the writes until the queue is empty
  bool close_after_drain = false;
  bool input_closed = false;

  std::array<char, read_chunk> out_buf;
  std::array<char, 4096> err_buf;
  std::string err_line, out_line;
  std::vector<std::string> frames;

  void start_reading() {
    read_stdout();
    read_stderr();
    if (!forked)
      watch_exit();
  }

  void read_stdout() {
    auto self = shared_from_this();
    out.async_read_some(asio::buffer(out_buf), [self](const boost::system::error_code& ec,
                                                      std::size_t n) {
      if (n > 0)
        self->on_stdout(n);
      if (ec) {
        self->stdout_done = true;
        if (self->opts.framed && self->decoder.mid_frame() && !self->decoder.failed())
          self->protocol_failure({protocol_errc::truncated_frame,
                                  "the stream ended inside a frame"});
        if (!self->opts.framed)
          self->flush_line(self->out_line);
        self->maybe_report_exit();
        return;
      }
      self->read_stdout();
    });
  }

  void on_stdout(std::size_t n) {
    if (!opts.framed) {
      split_lines(out_line, out_buf.data(), n);
      return;
    }
    if (decoder.failed())
      return;  // drain and discard: the stream cannot be resynchronised
    frames.clear();
    auto st = decoder.feed(out_buf.data(), n, frames);
    for (auto& f : frames)
      if (cbs.on_frame)
        cbs.on_frame(std::move(f));
    if (st == frame_decoder::status::too_large)
      protocol_failure({protocol_errc::frame_too_large,
                        "frame of " + std::to_string(decoder.rejected_length())
                          + " bytes announced; the maximum is "
                          + std::to_string(decoder.max_frame_bytes())});
  }

  void protocol_failure(protocol_error e) {
    if (cbs.on_protocol_error)
      cbs.on_protocol_error(std::move(e));
  }

  void read_stderr() {
    auto self = shared_from_this();
    err.async_read_some(asio::buffer(err_buf), [self](const boost::system::error_code& ec,
                                                      std::size_t n) {
      if (n > 0)
        self->split_lines(self->err_line, self->err_buf.data(), n);
      if (ec) {
        self->flush_line(self->err_line);
        self->stderr_done = true;
        return;
      }
      self->read_stderr();
    });
  }

  void split_lines(std::string& pending, const char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      if (data[i] == '\n')
        flush_line(pending);
      else if (pending.size() < 64 * 1024)  // a line without end must not grow forever
        pending.push_back(data[i]);
    }
  }

  void flush_line(std::string& line) {
    if (line.empty())
      return;
    if (cbs.on_output)
      cbs.on_output(line);
    else  // one insertion, so lines of different processes do not interleave
      std::cerr << ("[" + (opts.label.empty() ? opts.executable + " " + std::to_string(pid) : opts.label)
                    + "] " + line + "\n");
    line.clear();
  }

  void watch_exit() {
    int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) {
      poll_exit();  // kernels before 5.3: poll instead
      return;
    }
    pidfd.assign(fd);
    auto self = shared_from_this();
    pidfd.async_wait(asio::posix::stream_descriptor::wait_read,
                     [self](const boost::system::error_code&) { self->try_reap(); });
  }

  void poll_exit() {
    auto self = shared_from_this();
    auto t = std::make_shared<asio::steady_timer>(loop.context(), std::chrono::milliseconds(5));
    t->async_wait([self, t](const boost::system::error_code&) {
      if (!self->try_reap())
        self->poll_exit();
    });
  }

  bool try_reap() {
    if (reaped.load())
      return true;
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == 0) {
      if (pidfd.is_open()) {  // spurious wake-up: keep watching
        auto self = shared_from_this();
        pidfd.async_wait(asio::posix::stream_descriptor::wait_read,
                         [self](const boost::system::error_code&) { self->try_reap(); });
      }
      return false;
    }
    on_reaped(r == pid ? st : 0);
    return true;
  }

  // Gives the process to start a scope of its own, in its environment.
  void enter_scope() {
    if (!opts.contain)
      return;
    scope = new_scope();
    opts.env.emplace_back(scope_variable, scope);
  }

  // Loop thread: the process is gone (reaped by us or by the fork server).
  void on_reaped(int raw) {
    if (reaped.load())
      return;
    status.raw = raw;
    reaped.store(true);
    // Before anyone hears of the exit: what it started goes with it.
    sweep_scope(scope);
    sweep_again(loop.context(), scope);
    boost::system::error_code ignore;
    pidfd.close(ignore);
    stop_timer.cancel();
    {
      std::lock_guard<std::mutex> g(wmx);
      close_locked();
      // A write in flight still holds its frame: its handler, which runs
      // after this (aborted, or done just before the close), clears then.
      if (!writing)
        write_queue.clear();
    }
    if (stdout_done) {
      maybe_report_exit();
    } else {
      // Normally EOF is already queued; a grandchild holding the pipe open
      // must not delay the exit report forever.
      auto self = shared_from_this();
      eof_timer.expires_after(eof_grace);
      eof_timer.async_wait([self](const boost::system::error_code& ec) {
        if (ec)
          return;
        boost::system::error_code ignore;
        self->out.close(ignore);
        self->stdout_done = true;
        self->maybe_report_exit();
      });
    }
  }

  void maybe_report_exit() {
    if (exit_reported || !reaped.load() || !stdout_done)
      return;
    exit_reported = true;
    eof_timer.cancel();
    boost::system::error_code ignore;
    err.close(ignore);
    flush_line(err_line);
    auto cb = std::move(cbs.on_exit);
    // Break the cycle owner -> process -> callbacks -> owner.
    cbs = process_callbacks{};
    if (cb)
      cb(status);
  }

  enum class direct { written, handed_over, not_tried };

  // Any thread. Writes the frame at once when the pipe is idle; what does not
  // fit is queued and the io thread takes over (handed_over: kick it).
  direct try_write_direct(std::string& frame) {
    std::lock_guard<std::mutex> g(wmx);
    if (input_closed || close_after_drain)
      return direct::written;  // dropped, as the queue would drop it
    if (writing || !write_queue.empty())
      return direct::not_tried;
    block_sigpipe();  // a direct write may hit a pipe whose reader died
    std::size_t off = 0;
    while (off < frame.size()) {
      auto n = ::write(in.native_sink(), frame.data() + off, frame.size() - off);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        break;
      return direct::written;  // EPIPE: the reader is gone; its exit is reported elsewhere
    }
    if (off == frame.size())
      return direct::written;
    frame.erase(0, off);
    write_queue.push_back(std::move(frame));
    writing = true;
    return direct::handed_over;
  }

  // Any thread.
  void write_or_queue(std::string frame) {
    switch (try_write_direct(frame)) {
      case direct::written:
        break;
      case direct::handed_over:
        loop.post([self = shared_from_this()] { self->write_next(); });
        break;
      case direct::not_tried:
        loop.post([self = shared_from_this(), f = std::move(frame)]() mutable { self->enqueue(std::move(f)); });
        break;
    }
  }

  void enqueue(std::string frame) {
    {
      std::lock_guard<std::mutex> g(wmx);
      if (input_closed || close_after_drain)
        return;
      write_queue.push_back(std::move(frame));
      if (writing)
        return;
      writing = true;
    }
    write_next();
  }

  // Io thread, with writing == true: write the front of the queue.
  void write_next() {
    std::string* front = nullptr;
    {
      std::lock_guard<std::mutex> g(wmx);
      if (write_queue.empty() || input_closed) {
        writing = false;
        if (close_after_drain && !input_closed)
          close_locked();
        return;
      }
      front = &write_queue.front();  // deque references survive push_back
    }
    auto self = shared_from_this();
    asio::async_write(in, asio::buffer(*front),
                      [self](const boost::system::error_code& ec, std::size_t) {
                        {
                          std::lock_guard<std::mutex> g(self->wmx);
                          // EPIPE: the reader is gone; its exit is reported
                          // elsewhere. Closed meanwhile (the process was
                          // reaped): the write may even have succeeded, but
                          // the queue is done with.
                          if (ec || self->input_closed) {
                            self->write_queue.clear();
                            self->writing = false;
                            self->close_locked();
                            return;
                          }
                          self->write_queue.pop_front();
                        }
                        self->write_next();
                      });
  }

  void close_locked() {
    if (input_closed)
      return;
    input_closed = true;
    boost::system::error_code ignore;
    in.close(ignore);
  }

  void close_stdin() {
    std::lock_guard<std::mutex> g(wmx);
    if (input_closed)
      return;
    if (writing) {
      close_after_drain = true;
      return;
    }
    close_locked();
  }

  void send_signal(int sig) {
    // Only while not reaped: after waitpid the pid may belong to a stranger.
    if (reaped.load())
      return;
    if (forked && signal_fd >= 0)
      ::syscall(SYS_pidfd_send_signal, signal_fd, sig, nullptr, 0);
    else if (pid > 0)
      ::kill(pid, sig);
  }

  void run_stop(stop_plan plan) {
    if (reaped.load())
      return;
    if (plan.ask_frame_body)
      enqueue(encode_frame(*plan.ask_frame_body));
    close_stdin();
    if (plan.grace.count() <= 0) {
      signal_then_kill(plan);
      return;
    }
    auto self = shared_from_this();
    stop_timer.expires_after(plan.grace);
    stop_timer.async_wait([self, plan](const boost::system::error_code& ec) {
      if (ec || self->reaped.load())
        return;
      self->signal_then_kill(plan);
    });
  }

  void signal_then_kill(const stop_plan& plan) {
    send_signal(plan.term_signal);
    if (plan.term_grace == stop_plan::no_kill)
      return;
    auto self = shared_from_this();
    stop_timer.expires_after(plan.term_grace);
    stop_timer.async_wait([self](const boost::system::error_code& ec) {
      if (!ec)
        self->send_signal(SIGKILL);
    });
  }
};

std::shared_ptr<python_process> python_process::spawn(io_loop& loop, process_options opts,
                                                       process_callbacks cbs) {
  return loop.run_sync([&]() -> std::shared_ptr<python_process> {
    auto im = std::make_shared<impl>(loop, std::move(opts), std::move(cbs));
    auto& o = im->opts;
    im->enter_scope();
    boost::filesystem::path exe = o.executable;
    if (o.executable.find('/') == std::string::npos) {
      exe = bp::search_path(o.executable);
      if (exe.empty())
        throw std::system_error(std::make_error_code(std::errc::no_such_file_or_directory),
                                "cannot find '" + o.executable + "' in PATH");
    }
    std::error_code ec;
    bp::child child;
    child_setup setup;
    setup.parent = ::getpid();
    setup.pass_fds = o.pass_fds;
    setup.batch_scheduling = o.batch_scheduling;
    setup.build_env(o.env);
    if (o.working_dir.empty())
      child = bp::child(bp::exe = exe, bp::args = o.args, bp::std_in < im->in,
                        bp::std_out > im->out, bp::std_err > im->err, setup, ec);
    else
      child = bp::child(bp::exe = exe, bp::args = o.args, bp::std_in < im->in,
                        bp::std_out > im->out, bp::std_err > im->err,
                        bp::start_dir = o.working_dir, setup, ec);
    if (ec)
      throw std::system_error(ec, "cannot start '" + o.executable + "'");
    im->pid = child.id();
    child.detach();  // we are the only reaper; ~child must not kill or wait
    im->start_reading();
    auto p = std::shared_ptr<python_process>(new python_process());
    p->pid_ = im->pid;
    p->impl_ = std::move(im);
    return p;
  });
}

std::shared_ptr<python_process> python_process::fork_from(io_loop& loop, fork_server& server,
                                                           process_options opts,
                                                           process_callbacks cbs,
                                                           std::chrono::milliseconds timeout) {
  // Pipes on the loop thread, the only one that forks (see make_pipe).
  auto im = loop.run_sync([&] {
    auto p = std::make_shared<impl>(loop, std::move(opts), std::move(cbs));
    p->forked = true;
    p->enter_scope();
    return p;
  });
  auto close_child_ends = [&] {
    loop.run_sync([&] {
      // Moved out and dropped: the fork server's child has its own copies.
      { asio::posix::stream_descriptor s(std::move(im->in).source()); }
      { asio::posix::stream_descriptor s(std::move(im->out).sink()); }
      { asio::posix::stream_descriptor s(std::move(im->err).sink()); }
    });
  };
  pid_t pid = -1;
  try {
    std::weak_ptr<impl> weak = im;
    pid = server.fork_worker(
      im->opts.args, im->opts.env, im->in.native_source(), im->out.native_sink(),
      im->err.native_sink(),
      [im](pid_t p) {  // loop thread, before any exit of it is reported
        im->pid = p;
        im->signal_fd = static_cast<int>(::syscall(SYS_pidfd_open, p, 0));
        im->start_reading();
      },
      // Held strongly until the exit is relayed: that breaks the cycle.
      [im](exit_status s) { im->on_reaped(s.raw); }, timeout);
  } catch (...) {
    close_child_ends();
    throw;
  }
  close_child_ends();
  auto p = std::shared_ptr<python_process>(new python_process());
  p->pid_ = pid;
  p->impl_ = std::move(im);
  return p;
}

python_process::~python_process() {
  if (!impl_)
    return;
  // Dropping the handle of a live process kills it; the loop still reaps it.
  auto im = impl_;
  im->loop.post([im] { im->send_signal(SIGKILL); });
}

bool python_process::send(std::string body) {
  if (body.size() > impl_->opts.max_frame_bytes)
    return false;
  return send_frame(encode_frame(body));
}

bool python_process::frame_fits(std::size_t frame_bytes) const noexcept {
  return frame_bytes >= frame_header_bytes && frame_bytes - frame_header_bytes <= impl_->opts.max_frame_bytes;
}

bool python_process::send_frame(std::string frame) {
  if (!frame_fits(frame.size()))
    return false;
  impl_->write_or_queue(std::move(frame));
  return true;
}

void python_process::close_input() {
  auto im = impl_;
  impl_->loop.post([im] { im->close_stdin(); });
}

void python_process::signal(int sig) {
  auto im = impl_;
  impl_->loop.post([im, sig] { im->send_signal(sig); });
}

void python_process::stop(stop_plan plan) {
  auto im = impl_;
  impl_->loop.post([im, plan = std::move(plan)]() mutable { im->run_stop(std::move(plan)); });
}

const std::string& python_process::scope() const noexcept { return impl_->scope; }

bool python_process::reaped() const noexcept {
  return impl_->reaped.load();
}

} // namespace dspex::bridge
