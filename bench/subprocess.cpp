#include <dspex/bench/subprocess.hpp>

#include <dspex/bridge/batch_scheduling.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <system_error>
#include <thread>
#include <unistd.h>

extern char** environ;

namespace dspex::bench {

namespace {

using clock_type = std::chrono::steady_clock;

bool is_executable(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::vector<std::string> merged_environment(const std::vector<std::pair<std::string, std::string>>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    auto key = entry.substr(0, eq);
    bool overridden = std::any_of(extra.begin(), extra.end(),
                                  [&](const auto& kv) { return kv.first == key; });
    if (!overridden)
      out.push_back(std::move(entry));
  }
  for (auto& kv : extra)
    out.push_back(kv.first + "=" + kv.second);
  return out;
}

void close_quietly(int& fd) {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

[[noreturn]] void child_fail(int report_fd) {
  int e = errno;
  ssize_t ignored = write(report_fd, &e, sizeof e);
  (void)ignored;
  _exit(127);
}

// Child side, between fork and exec: async-signal-safe calls only.
[[noreturn]] void child_exec(const char* exe, char* const* argv, char* const* envp, pid_t parent,
                             int in_src, int out_src, int err_src, int report_fd, bool batch_scheduling) {
  sigset_t none;  // a bench thread may block SIGPIPE; the child must not inherit that
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl;
  std::memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGPIPE, &dfl, nullptr);
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)  // the host died before prctl took effect
    _exit(127);
  if (batch_scheduling)
    bridge::enter_batch_scheduling();
  // Move the sources above 2 first, so dup2 onto 0..2 cannot clobber one
  // that happens to sit there (a host started with a closed fd 0/1).
  int srcs[3] = {in_src, out_src, err_src};
  for (int& src : srcs) {
    if (src >= 0 && (src = fcntl(src, F_DUPFD_CLOEXEC, 10)) < 0)
      child_fail(report_fd);
  }
  for (int i = 0; i < 3; ++i) {
    if (srcs[i] >= 0 && dup2(srcs[i], i) < 0)  // dup2 clears close-on-exec on i
      child_fail(report_fd);
  }
  // Belt and braces: ours are all close-on-exec, but a library's may not be.
  for (int fd = 3; fd < 10; ++fd)
    if (fd != report_fd)
      close(fd);
  syscall(SYS_close_range, 10u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC, Linux >= 5.11 */);
  execve(exe, argv, envp);
  child_fail(report_fd);
}

} // namespace

// -- child_process -----------------------------------------------------------

child_process::child_process(child_process&& other) noexcept { *this = std::move(other); }

child_process& child_process::operator=(child_process&& other) noexcept {
  if (this != &other) {
    if (!reaped_)
      stop();
    close_fds();
    pid_ = std::exchange(other.pid_, -1);
    in_fd_ = std::exchange(other.in_fd_, -1);
    out_fd_ = std::exchange(other.out_fd_, -1);
    reaped_ = std::exchange(other.reaped_, true);
    status_ = std::exchange(other.status_, 0);
  }
  return *this;
}

child_process::~child_process() {
  if (!reaped_)
    stop();
  close_fds();
}

void child_process::close_fds() {
  close_quietly(in_fd_);
  close_quietly(out_fd_);
}

child_process child_process::spawn(const spawn_spec& spec) {
  if (spec.argv.empty())
    throw std::system_error(EINVAL, std::generic_category(), "spawn: empty argv");
  std::string exe = spec.argv[0].find('/') != std::string::npos ? spec.argv[0]
                                                                : find_in_path(spec.argv[0]);
  if (exe.empty() || !is_executable(exe))
    throw std::system_error(ENOENT, std::generic_category(), "spawn: cannot find " + spec.argv[0]);

  // Everything the child needs is built before fork: it may not allocate.
  std::vector<std::string> env_strings = merged_environment(spec.env);
  std::vector<char*> argv_ptrs, env_ptrs;
  for (auto& a : spec.argv)
    argv_ptrs.push_back(const_cast<char*>(a.c_str()));
  argv_ptrs.push_back(nullptr);
  for (auto& e : env_strings)
    env_ptrs.push_back(const_cast<char*>(e.c_str()));
  env_ptrs.push_back(nullptr);

  int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, report[2] = {-1, -1};
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  auto cleanup = [&] {
    for (int* fd : {&in_pipe[0], &in_pipe[1], &out_pipe[0], &out_pipe[1], &report[0], &report[1], &devnull})
      close_quietly(*fd);
  };
  auto fail = [&](const char* what) {
    int e = errno;
    cleanup();
    throw std::system_error(e, std::generic_category(), what);
  };
  if (devnull < 0)
    fail("spawn: open /dev/null");
  if (spec.pipe_stdin && ::pipe2(in_pipe, O_CLOEXEC) != 0)
    fail("spawn: pipe2");
  if (spec.pipe_stdout && ::pipe2(out_pipe, O_CLOEXEC) != 0)
    fail("spawn: pipe2");
  if (::pipe2(report, O_CLOEXEC) != 0)
    fail("spawn: pipe2");

  int in_src = spec.pipe_stdin ? in_pipe[0] : devnull;
  int out_src = spec.pipe_stdout ? out_pipe[1] : devnull;
  int err_src = -1;  // inherit
  if (spec.stderr_to == spawn_spec::stderr_mode::null)
    err_src = devnull;
  else if (spec.stderr_to == spawn_spec::stderr_mode::merge)
    err_src = out_src;

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0)
    fail("spawn: fork");
  if (pid == 0)
    child_exec(exe.c_str(), argv_ptrs.data(), env_ptrs.data(), parent, in_src, out_src, err_src,
               report[1], spec.batch_scheduling);

  // Parent. Also set the group here: whichever of the two runs first wins,
  // so a group signal sent right after spawn() cannot miss the child.
  ::setpgid(pid, pid);
  close_quietly(in_pipe[0]);
  close_quietly(out_pipe[1]);
  close_quietly(report[1]);
  close_quietly(devnull);

  child_process child;
  child.pid_ = pid;
  child.reaped_ = false;
  child.in_fd_ = std::exchange(in_pipe[1], -1);
  child.out_fd_ = std::exchange(out_pipe[0], -1);

  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(report[0], &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  close_quietly(report[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    child.close_fds();
    child.reap_now();
    throw std::system_error(child_errno, std::generic_category(), "spawn: exec " + exe);
  }
  return child;
}

void child_process::close_stdin() { close_quietly(in_fd_); }
void child_process::close_stdout() { close_quietly(out_fd_); }

bool child_process::has_exited() {
  if (reaped_)
    return true;
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  // WNOWAIT: look without reaping, so the pid (and group id) stays ours.
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
    return errno == ECHILD;
  return info.si_pid == pid_;
}

void child_process::reap_now() {
  if (reaped_)
    return;
  // The leader is dead or dying; its group may still hold stragglers (a
  // Python pool's processes). Kill them while the group id cannot be reused.
  ::kill(-pid_, SIGKILL);
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, 0);
  } while (r < 0 && errno == EINTR);
  status_ = r == pid_ ? st : 0;
  reaped_ = true;
}

bool child_process::wait_for(std::chrono::milliseconds limit) {
  if (reaped_)
    return true;
  auto deadline = clock_type::now() + limit;
  auto nap = std::chrono::microseconds(50);
  while (!has_exited()) {
    if (clock_type::now() >= deadline)
      return false;
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(5));
  }
  reap_now();
  return true;
}

int child_process::stop(std::chrono::milliseconds grace) {
  close_stdin();
  if (!reaped_ && !wait_for(grace)) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);  // in case setpgid lost a race with exec
    reap_now();
  }
  close_fds();
  return status_;
}

void child_process::signal_group(int sig) {
  if (!reaped_) {
    ::kill(-pid_, sig);
    ::kill(pid_, sig);
  }
}

// -- run_command ---------------------------------------------------------------

bool command_result::succeeded() const noexcept {
  return !timed_out && WIFEXITED(raw_status) && WEXITSTATUS(raw_status) == 0;
}

std::string command_result::describe() const {
  if (timed_out)
    return "timed out";
  if (WIFEXITED(raw_status))
    return "exit code " + std::to_string(WEXITSTATUS(raw_status));
  if (WIFSIGNALED(raw_status))
    return "signal " + std::to_string(WTERMSIG(raw_status));
  return "status " + std::to_string(raw_status);
}

command_result run_command(spawn_spec spec, std::chrono::milliseconds timeout) {
  spec.pipe_stdin = false;
  spec.pipe_stdout = true;
  command_result res;
  auto deadline = clock_type::now() + timeout;
  child_process child = child_process::spawn(spec);
  // After the leader exits, grandchildren may still hold the pipe; give them
  // a moment, then the group is killed by the reap.
  constexpr auto eof_grace = std::chrono::milliseconds(1000);
  std::optional<clock_type::time_point> exited_at;
  char buf[16384];
  for (;;) {
    auto now = clock_type::now();
    if (now >= deadline) {
      res.timed_out = true;
      break;
    }
    if (!exited_at && child.has_exited())
      exited_at = now;
    if (exited_at && now - *exited_at > eof_grace)
      break;
    struct pollfd pfd{child.out_fd(), POLLIN, 0};
    int r = ::poll(&pfd, 1, 50);
    if (r < 0 && errno != EINTR)
      break;
    if (r > 0) {
      ssize_t n = ::read(child.out_fd(), buf, sizeof buf);
      if (n > 0)
        res.output.append(buf, static_cast<std::size_t>(n));
      else if (n == 0 || errno != EINTR)
        break;  // EOF: every writer is gone
    }
  }
  child.close_stdout();
  if (res.timed_out)
    child.signal_group(SIGKILL);
  // The leader has exited or is killed: the 2 s grace only covers a child
  // that closed stdout and kept running.
  res.raw_status = child.stop(std::chrono::milliseconds(2000));
  return res;
}

// -- small helpers -------------------------------------------------------------

std::string find_in_path(const std::string& name) {
  if (name.find('/') != std::string::npos)
    return is_executable(name) ? name : std::string();
  const char* path = std::getenv("PATH");
  std::string p = path && *path ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= p.size()) {
    auto end = p.find(':', start);
    if (end == std::string::npos)
      end = p.size();
    std::string dir = p.substr(start, end - start);
    if (dir.empty())
      dir = ".";
    std::string candidate = dir + "/" + name;
    if (is_executable(candidate))
      return candidate;
    start = end + 1;
  }
  return {};
}

bool write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return false;
    }
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

sigpipe_block::sigpipe_block() {
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &old_);
  was_blocked_ = sigismember(&old_, SIGPIPE) == 1;
}

sigpipe_block::~sigpipe_block() {
  if (was_blocked_)
    return;
  sigset_t pending;
  sigemptyset(&pending);
  if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
    sigset_t only;
    sigemptyset(&only);
    sigaddset(&only, SIGPIPE);
    struct timespec zero{0, 0};
    sigtimedwait(&only, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_, nullptr);
}

} // namespace dspex::bench
