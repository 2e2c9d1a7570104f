// RLIMIT_NOFILE of a host that holds many connections and pipes. The soft
// limit is often 1024 (systemd's default for services, and many shells')
// while the hard limit allows far more: `dspex run` raises the soft limit to
// the hard one at start (an embedder may call the same). Children get the
// soft limit the process started with back before exec, as systemd asks of
// programs that raise it (a child written for select() expects 1024).
#pragma once

#include <string>
#include <sys/resource.h>

namespace dspex::bridge {

struct descriptor_limit {
  rlim_t before = 0;  ///< soft limit found
  rlim_t soft = 0;    ///< soft limit now
  rlim_t hard = 0;
  int error = 0;      ///< errno of a failed setrlimit, else 0
  /// One line for the log: "RLIMIT_NOFILE soft limit raised from 1024 to
  /// 524288 (the hard limit)", "... 64 (soft = hard)", or the failure.
  std::string describe() const;
};

/// Raises the soft RLIMIT_NOFILE to the hard limit (to fs.nr_open when the
/// hard limit is unlimited). Process-wide; call it before starting threads
/// that open descriptors. Remembers the soft limit found for children.
descriptor_limit raise_descriptor_limit();

/// The soft limit found by raise_descriptor_limit, or 0 when it never
/// raised one. Async-signal-safe (read between fork and exec).
rlim_t inherited_descriptor_soft_limit() noexcept;

} // namespace dspex::bridge
