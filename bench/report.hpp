// The benchmarks' reporting kit: latency percentiles and histograms, the
// figures table (figure, value, peer, ratio, target, verdict), a JSON file
// writer, gnuplot PNGs (latency CDF, throughput against workers,
// availability timeline of a fault run) and a progress line on stderr.
//
// Nothing here measures or asserts: the bench collects numbers, this turns
// them into something a reader can compare against docs/architecture.md "Targets".
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dspex::bench {

using json = nlohmann::json;

// -- latency -------------------------------------------------------------------

/// Percentiles in microseconds (nearest rank).
struct latency_summary {
  std::uint64_t count = 0;
  double mean_us = 0, min_us = 0, p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
};

json to_json(const latency_summary& s);

struct histogram_bin {
  double lo_us = 0, hi_us = 0;  ///< [lo, hi)
  std::uint64_t count = 0;
};

/// Raw latency samples (nanoseconds). Not thread-safe: keep one per thread
/// and merge() them afterwards. ~8 bytes a sample: a 3 s run at 50k req/s
/// is ~1.2 MB.
class latency_recorder {
public:
  void reserve(std::size_t n) { ns_.reserve(n); }
  void add(std::chrono::nanoseconds d) { add_ns(d.count()); }
  void add_ns(std::int64_t ns) {
    ns_.push_back(ns);
    sorted_ = false;
  }
  void merge(const latency_recorder& other);
  void clear() { ns_.clear(); sorted_ = true; }

  std::size_t size() const noexcept { return ns_.size(); }
  bool empty() const noexcept { return ns_.empty(); }

  /// Nearest-rank percentile, q in [0, 1]; 0 when empty.
  double percentile_us(double q) const;
  latency_summary summary() const;
  /// `points` evenly spaced quantiles (0..1), ascending: a CDF small enough
  /// to store in JSON or plot; fewer when there are fewer samples.
  std::vector<double> quantiles_us(std::size_t points = 1000) const;
  /// Log-spaced bins (`bins_per_decade` per factor 10) from min to max.
  std::vector<histogram_bin> log_histogram(int bins_per_decade = 10) const;
  const std::vector<std::int64_t>& samples_ns() const;  ///< sorted ascending

private:
  void sort() const;
  mutable std::vector<std::int64_t> ns_;
  mutable bool sorted_ = true;
};

/// Summary of a sorted (ascending) list of microsecond values, e.g. the
/// quantiles a Python peer reported.
latency_summary summarize_sorted_us(const std::vector<double>& sorted_us);

// -- the figures table -----------------------------------------------------------

enum class verdict {
  pass,     ///< the target is met
  fail,     ///< the target is missed
  floor,    ///< a reference figure other rows are judged against
  info,     ///< reported, no target
  skipped,  ///< could not be measured this run (see the note)
};

const char* to_string(verdict v) noexcept;

/// ratio >= min (for "at least 0.8x"): pass or fail; a ratio that is not a
/// finite number (a peer missing) is skipped.
verdict judge_at_least(double ratio, double min);
/// ratio <= max (for "within 1.25x").
verdict judge_at_most(double ratio, double max);

struct table_row {
  std::string figure;   ///< what was measured, e.g. "round trip p50, 1 worker"
  std::string value;    ///< formatted, e.g. "41.2 us"
  std::string peer;     ///< what it is compared with, e.g. "bare 33.0 us"; "" for none
  std::string ratio;    ///< value / peer, e.g. "1.25x"; "" for none
  std::string target;   ///< from docs/architecture.md, e.g. "<= 1.25x bare"
  verdict result = verdict::info;
  std::string note;     ///< printed under the table (why skipped, caveats)
};

/// Rows printed as aligned columns; section() starts a titled group.
class report_table {
public:
  explicit report_table(std::string title = {}) : title_(std::move(title)) {}
  void section(std::string name);
  void add(table_row row);
  void print(std::ostream& os) const;
  json to_json() const;
  bool any_failed() const;
  const std::vector<table_row>& rows() const noexcept { return rows_; }

private:
  std::string title_;
  std::vector<table_row> rows_;
  std::vector<std::pair<std::size_t, std::string>> sections_;  // index of first row, name
};

// Formatting for the table's value/peer/ratio columns.
std::string format_rate(double per_second);      ///< "812 req/s", "45.3k req/s", "1.21M req/s"
std::string format_micros(double us);            ///< "35.2 us", "1.24 ms", "1.20 s"
std::string format_ratio(double r);             ///< "1.23x"; "-" when not finite
std::string format_fixed(double v, int decimals);

// -- files -------------------------------------------------------------------------

/// Writes `j` (indented) to `path`, creating parent directories; the file
/// appears whole (written beside it, then renamed). Throws std::runtime_error.
void write_json_file(const std::string& path, const json& j);

/// A few facts about the machine and run for the JSON header: host name,
/// cores, CPU, kernel, python3 version, UTC time, load average.
json machine_info(const std::string& python = "python3");

/// The 1-minute load average (/proc/loadavg), or -1. Figures taken while it
/// is above the core count mostly measure the other load.
double load_average_1m();

/// A bench command's first line on stderr ("dspex-bench NAME: PARTS
/// (quick); load average L on N cores"), and a warning when the machine is
/// busy enough to distort the figures.
void print_bench_start(const std::string& name, const std::vector<std::string>& parts, bool quick);

/// Its table's title: "dspex-bench NAME (CPU, N cores, python V; load
/// average A before, B after)", from machine_info.
std::string bench_title(const std::string& name, const json& machine, double load_before, double load_after);

/// What this process used so far (every thread, getrusage): CPU time
/// (user + sys) in µs, and context switches (voluntary and not). Switches
/// count thread wake-ups, the cost that dominates a round trip on a VM, and
/// unlike times they barely move with the machine's other load.
struct host_usage {
  double cpu_us = 0;
  double switches = 0;
};
host_usage host_usage_now();
/// What was used between two readings, per request (n > 0).
host_usage per_request(const host_usage& from, const host_usage& to, std::uint64_t n);

// -- plots (gnuplot) -----------------------------------------------------------------

struct plot_outcome {
  bool ok = false;
  std::string png;      ///< path of the image when ok
  std::string message;  ///< why not, when !ok
};

/// The end of a bench command: writes `j` to `path`, prints "wrote PATH,
/// PNG, ... (N s)" on stdout (the plots that worked), then each of `failures`
/// on stderr; messages about them start with `who`. Returns false when the
/// file could not be written or a measurement failed.
bool write_report(const std::string& who, const std::string& path, const json& j,
                  const std::vector<plot_outcome>& plots, double seconds,
                  const std::vector<std::string>& failures = {});

/// True when a `gnuplot` binary is in PATH (checked once).
bool gnuplot_available();

struct latency_series {
  std::string label;
  std::vector<double> sorted_us;  ///< ascending samples or quantiles (latency_recorder::quantiles_us)
};

/// A latency CDF (x: latency, log scale; y: fraction of requests) with one
/// line per series. Writes <out_dir>/<name>.dat, .gp and .png. A missing
/// gnuplot is reported once on stderr and in the outcome, never thrown.
plot_outcome plot_latency_cdf(const std::string& out_dir, const std::string& name,
                              const std::vector<latency_series>& series,
                              const std::string& title = "Round-trip latency (CDF)");

struct throughput_point {
  int workers = 0;
  double requests_per_s = 0;
};
struct throughput_series {
  std::string label;
  std::vector<throughput_point> points;
};

/// The outcomes as JSON: [{"ok", "png", "message"}, ...].
json to_json(const std::vector<plot_outcome>& plots);

/// Requests/s against workers, one line per system.
plot_outcome plot_throughput(const std::string& out_dir, const std::string& name,
                             const std::vector<throughput_series>& series,
                             const std::string& title = "Throughput against workers");

struct availability_bucket {
  double t_s = 0;          ///< start of the bucket, seconds since the run began
  std::uint64_t ok = 0;    ///< requests answered with a result in the bucket
  std::uint64_t failed = 0;  ///< requests answered with an error (or lost)
  int pool_size = -1;      ///< live workers at the end of the bucket; -1 unknown
};

struct timeline_event {
  double t_s = 0;
  std::string label;  ///< e.g. "kill w3"
};

/// Records a fault run as it happens: any thread may record results, pool
/// sizes and events (a mutex; cheap next to a request round trip).
class availability_timeline {
public:
  using clock = std::chrono::steady_clock;
  explicit availability_timeline(std::chrono::milliseconds bucket = std::chrono::milliseconds(100),
                                 clock::time_point start = clock::now());
  void record(bool ok, clock::time_point at = clock::now());
  void pool_size(int live, clock::time_point at = clock::now());
  void event(std::string label, clock::time_point at = clock::now());
  /// Every bucket from the start to the last thing recorded; a bucket with no
  /// pool_size() call carries the previous size forward.
  std::vector<availability_bucket> buckets() const;
  std::vector<timeline_event> events() const;
  double bucket_seconds() const noexcept;
  json to_json() const;

private:
  std::size_t index(clock::time_point at) const;
  void grow(std::size_t i);
  std::chrono::milliseconds bucket_;
  clock::time_point start_;
  mutable std::mutex mx_;
  std::vector<availability_bucket> buckets_;
  std::vector<bool> size_set_;
  std::vector<timeline_event> events_;
};

/// Bars of ok (green) and failed (red) requests per bucket, the pool size as
/// a step line on the right axis, events as vertical marks.
plot_outcome plot_availability(const std::string& out_dir, const std::string& name,
                               const std::vector<availability_bucket>& buckets,
                               const std::vector<timeline_event>& events = {},
                               const std::string& title = "Availability under faults",
                               double bucket_seconds = 0.1);

// -- progress ------------------------------------------------------------------------

/// One status line on stderr rewritten in place with '\r' while a bench runs.
/// When stderr is not a terminal (CI logs) update() prints nothing and only
/// finish() lines appear.
class progress_line {
public:
  explicit progress_line(std::ostream& os, std::optional<bool> live = std::nullopt);
  progress_line();  ///< std::cerr, live when stderr is a TTY
  ~progress_line();
  progress_line(const progress_line&) = delete;
  progress_line& operator=(const progress_line&) = delete;

  void update(const std::string& text);  ///< replaces the current line
  void finish(const std::string& text);  ///< replaces it and ends it with '\n'
  void clear();                          ///< erases an unfinished line
  bool live() const noexcept { return live_; }

private:
  std::ostream& os_;
  bool live_;
  std::size_t shown_ = 0;  // characters of the line on screen
};

} // namespace dspex::bench
