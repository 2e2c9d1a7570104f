// The floor of our stack (docs/architecture.md "Targets"): W Python workers, each
// driven by one C++ thread that writes a request frame and blocks reading
// the reply frame, in a loop. No actors, no io_loop, no queue: whatever
// dspex adds on top of this is its overhead.
//
// The frames are byte for byte those dspex sends: bridge::encode_request of
// {"command": "echo", "args": {"payload": "<N bytes>"}, "session_id": null}
// with a fresh id per request, framed by bridge::encode_frame; the worker is
// the real one (python3 -u -m dspex_worker --mode pool, same environment as
// actors/pool/worker). Each reply is parsed with bridge::parse_reply and its id
// checked (parse_replies, default on), since dspex must do as much; a
// latency sample runs from just before the write to just after that parse.
//
// Processes are spawned from the calling thread (the parent-death signal
// follows the forking thread), close-on-exec, in their own process groups,
// and every one is reaped before a function returns.
#pragma once

#include <dspex/bridge/frame.hpp>

#include <charconv>
#include <stdexcept>

#include <dspex/bench/report.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace dspex::bench {

/// How to start one dspex_worker process.
struct worker_launch {
  std::string python = "python3";  ///< interpreter: a path or a name in PATH
  std::string python_dir;          ///< dir holding dspex_worker; "" = locate_python_dir()
  std::string run_id;              ///< --run-id; "" = bridge::host_run_id()
  std::string id_prefix = "bare";  ///< --worker-id is <prefix>-<n>
  /// Non-empty: `python -u <script>` instead of the dspex_worker package
  /// (bench/peers/min_echo.py: the minimal Python echo, the floor of dspex's
  /// Python side); it gets the same arguments and environment.
  std::string script;
  /// As worker.sched_batch (default on): the floor runs its workers as
  /// dspex does, so the ratio is dspex's own overhead.
  bool batch_scheduling = true;
  std::vector<std::pair<std::string, std::string>> env;  ///< extra environment
};

/// DSPEX_PYTHON_PATH, else the build's source tree, else the install prefix
/// (the same order as actors/pool/worker).
std::string locate_python_dir();

struct bare_options {
  int workers = 1;
  /// Measured time per run (after warm-up), unless requests_per_worker > 0.
  std::chrono::milliseconds duration{2000};
  /// > 0: each thread sends exactly this many measured requests instead.
  std::uint64_t requests_per_worker = 0;
  std::size_t payload_bytes = 64;
  /// Requests per worker before the clock starts (imports, caches, branch
  /// predictors); not counted.
  std::uint64_t warmup_requests = 200;
  bool parse_replies = true;  ///< parse and check each reply (see above)
  /// Non-empty: the C++ threads and the workers run only on these CPUs
  /// (the caller's own affinity is restored afterwards). With one CPU, a
  /// round trip needs no cross-CPU wake-up, which on an idle VM costs tens
  /// of microseconds; compare with dspex run under the same mask (taskset).
  std::vector<int> cpus;
  worker_launch launch;
};

struct bare_result {
  int workers = 0;
  std::string script;          ///< worker_launch::script it ran ("": dspex_worker)
  std::size_t payload_bytes = 0;
  bool parse_replies = true;
  std::vector<int> cpus;       ///< the affinity it ran with; empty: unpinned
  std::uint64_t requests = 0;  ///< measured requests answered with success
  std::uint64_t errors = 0;    ///< failed replies, dead workers, bad frames
  std::string first_error;     ///< "" when errors == 0
  double seconds = 0;          ///< from the common start to the last reply
  double requests_per_s = 0;
  double startup_seconds = 0;  ///< spawning all workers and warming them up
  /// Host CPU (every thread of this process, user + sys) from the common
  /// start until every thread finished, per request; -1 when not measured.
  double host_cpu_us_per_request = -1;
  double host_switches_per_request = -1;  ///< context switches of this process, the same way
  latency_recorder latency;    ///< one sample per measured request
  latency_summary summary;     ///< of latency
};

json to_json(const bare_result& r);  ///< without the raw samples (quantiles instead)

/// Runs the loop; never throws for a worker that dies mid-run (counted in
/// errors), throws std::system_error when python cannot be started.
bare_result run_bare_loop(const bare_options& opts);

/// Shorthands: a timed run, and a counted one.
bare_result run_bare_loop(int workers, std::chrono::milliseconds duration, std::size_t payload_bytes);
bare_result run_bare_loop_count(int workers, std::uint64_t requests_per_worker, std::size_t payload_bytes);

// -- start-up ----------------------------------------------------------------------

/// Time from fork to the first "ping" reply of one worker (the ping frame is
/// written right after spawn, so it waits in the pipe while Python starts).
/// The worker is stopped and reaped before returning (not timed).
std::chrono::nanoseconds spawn_to_first_reply(const worker_launch& launch = {});

/// The same for `n` workers spawned back to back from one thread: fork of
/// the first to the last of the n ping replies. The bare floor of "pool of n
/// ready".
std::chrono::nanoseconds spawn_all_to_first_reply(int n, const worker_launch& launch = {});

struct spawn_stats {
  int workers = 1;          ///< workers started together per sample
  latency_recorder samples; ///< one per repeat
  latency_summary summary;
};

/// `repeats` samples of spawn_all_to_first_reply(n) (spawn_to_first_reply
/// for n == 1), after one discarded run that warms the page cache and
/// __pycache__ unless `warm_up_first` is false (workers ran just before).
spawn_stats measure_spawn(int n, int repeats, const worker_launch& launch = {}, bool warm_up_first = true);

json to_json(const spawn_stats& s);

// -- building blocks (also for the lead's comparisons) -----------------------------------

/// The request body the bare loop (and dspex) sends for echo, with `id`.
std::string echo_request_body(std::uint64_t id, std::size_t payload_bytes);

// Request frames for echo with a fixed payload and a changing id, built by
// splicing the id into the encoding of id 0: byte for byte what
// encode_frame(encode_request(...)) gives, without a JSON dump per request.
class echo_frames {
public:
  explicit echo_frames(std::size_t payload_bytes) {
    std::string body = echo_request_body(0, payload_bytes);
    const std::string key = "\"id\":0";
    auto pos = body.rfind(key);
    if (pos == std::string::npos)
      throw std::logic_error("echo_frames: unexpected request encoding: " + body.substr(0, 200));
    prefix_ = body.substr(0, pos + key.size() - 1);
    suffix_ = body.substr(pos + key.size());
    frame_.reserve(bridge::frame_header_bytes + body.size() + 24);
  }

  const std::string& frame(std::uint64_t id) {
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, id);
    (void)ec;
    std::size_t n = prefix_.size() + static_cast<std::size_t>(end - digits) + suffix_.size();
    frame_.resize(bridge::frame_header_bytes);
    frame_[0] = static_cast<char>((n >> 24) & 0xff);
    frame_[1] = static_cast<char>((n >> 16) & 0xff);
    frame_[2] = static_cast<char>((n >> 8) & 0xff);
    frame_[3] = static_cast<char>(n & 0xff);
    frame_.append(prefix_);
    frame_.append(digits, end);
    frame_.append(suffix_);
    return frame_;
  }

private:
  std::string prefix_, suffix_, frame_;
};

} // namespace dspex::bench
