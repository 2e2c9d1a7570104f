// How an OS process ended, from the raw waitpid status. Boost.Process's exit
// callback folds "killed by signal 9" and "exit(9)" into the same int; the
// raw status keeps them apart, and restart types depend on the difference.
#pragma once

#include <string>

namespace dspex::bridge {

struct exit_status {
  int raw = 0;  ///< the status word waitpid returned

  bool exited() const noexcept;    ///< ended by exit()/return from main
  int code() const noexcept;       ///< exit code, when exited()
  bool signaled() const noexcept;  ///< killed by a signal
  int signal() const noexcept;     ///< the signal, when signaled()
  bool core_dumped() const noexcept;

  /// exit code 0: the process ended on its own, successfully.
  bool clean() const noexcept { return exited() && code() == 0; }

  /// "exit code 3", "signal 9 (SIGKILL)", "signal 11 (SIGSEGV, core dumped)".
  std::string describe() const;

  /// The hard limit the kernel enforced by this end, as the host reports
  /// it ("cpu_limit" for SIGXCPU, RLIMIT_CPU's signal); null for any other.
  const char* limit_cause() const noexcept;

  static exit_status from_code(int code) noexcept;
  static exit_status from_signal(int sig) noexcept;
};

/// "SIGKILL" for 9, "SIG42" for a number without a name.
std::string signal_name(int sig);

} // namespace dspex::bridge
