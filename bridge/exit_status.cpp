#include <dspex/bridge/exit_status.hpp>

#include <csignal>
#include <sys/wait.h>

namespace dspex::bridge {

bool exit_status::exited() const noexcept { return WIFEXITED(raw); }
int exit_status::code() const noexcept { return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1; }
bool exit_status::signaled() const noexcept { return WIFSIGNALED(raw); }
int exit_status::signal() const noexcept { return WIFSIGNALED(raw) ? WTERMSIG(raw) : 0; }
bool exit_status::core_dumped() const noexcept { return WIFSIGNALED(raw) && WCOREDUMP(raw); }

exit_status exit_status::from_code(int code) noexcept { return {(code & 0xFF) << 8}; }
exit_status exit_status::from_signal(int sig) noexcept { return {sig & 0x7F}; }

std::string signal_name(int sig) {
  switch (sig) {
    case SIGHUP: return "SIGHUP";
    case SIGINT: return "SIGINT";
    case SIGQUIT: return "SIGQUIT";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGKILL: return "SIGKILL";
    case SIGSEGV: return "SIGSEGV";
    case SIGPIPE: return "SIGPIPE";
    case SIGALRM: return "SIGALRM";
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    case SIGXCPU: return "SIGXCPU";
    case SIGXFSZ: return "SIGXFSZ";
    default: return "SIG" + std::to_string(sig);
  }
}

const char* exit_status::limit_cause() const noexcept {
  return signaled() && signal() == SIGXCPU ? "cpu_limit" : nullptr;
}

std::string exit_status::describe() const {
  if (exited())
    return "exit code " + std::to_string(code());
  if (signaled())
    return "signal " + std::to_string(signal()) + " (" + signal_name(signal())
           + (core_dumped() ? ", core dumped)" : ")");
  return "status " + std::to_string(raw);
}

} // namespace dspex::bridge
