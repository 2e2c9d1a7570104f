#include <cstdlib>
#include <dspex/bench/report.hpp>
#include <dspex/bench/subprocess.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <sys/resource.h>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <sys/utsname.h>
#include <thread>
#include <unistd.h>

namespace dspex::bench {

namespace fs = std::filesystem;

// -- latency -------------------------------------------------------------------

json to_json(const latency_summary& s) {
  return json{{"count", s.count},   {"mean_us", s.mean_us}, {"min_us", s.min_us},
              {"p50_us", s.p50_us}, {"p90_us", s.p90_us},   {"p99_us", s.p99_us},
              {"p999_us", s.p999_us}, {"max_us", s.max_us}};
}

void latency_recorder::merge(const latency_recorder& other) {
  ns_.insert(ns_.end(), other.ns_.begin(), other.ns_.end());
  sorted_ = false;
}

void latency_recorder::sort() const {
  if (!sorted_) {
    std::sort(ns_.begin(), ns_.end());
    sorted_ = true;
  }
}

const std::vector<std::int64_t>& latency_recorder::samples_ns() const {
  sort();
  return ns_;
}

namespace {

// Nearest rank: the smallest sample with at least q of the samples at or below it.
std::size_t rank_index(std::size_t n, double q) {
  if (n == 0)
    return 0;
  q = std::clamp(q, 0.0, 1.0);
  auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
  return idx == 0 ? 0 : std::min(idx - 1, n - 1);
}

} // namespace

double latency_recorder::percentile_us(double q) const {
  if (ns_.empty())
    return 0;
  sort();
  return static_cast<double>(ns_[rank_index(ns_.size(), q)]) / 1000.0;
}

latency_summary latency_recorder::summary() const {
  latency_summary s;
  if (ns_.empty())
    return s;
  sort();
  s.count = ns_.size();
  long double sum = 0;
  for (auto v : ns_)
    sum += v;
  s.mean_us = static_cast<double>(sum / ns_.size()) / 1000.0;
  s.min_us = ns_.front() / 1000.0;
  s.max_us = ns_.back() / 1000.0;
  s.p50_us = percentile_us(0.50);
  s.p90_us = percentile_us(0.90);
  s.p99_us = percentile_us(0.99);
  s.p999_us = percentile_us(0.999);
  return s;
}

std::vector<double> latency_recorder::quantiles_us(std::size_t points) const {
  std::vector<double> out;
  if (ns_.empty() || points == 0)
    return out;
  sort();
  if (ns_.size() <= points || points == 1) {
    out.reserve(ns_.size());
    for (auto v : ns_)
      out.push_back(v / 1000.0);
    return out;
  }
  out.reserve(points);
  const double last = static_cast<double>(ns_.size() - 1);
  for (std::size_t i = 0; i < points; ++i) {
    auto idx = static_cast<std::size_t>(std::llround(last * i / static_cast<double>(points - 1)));
    out.push_back(ns_[idx] / 1000.0);
  }
  return out;
}

std::vector<histogram_bin> latency_recorder::log_histogram(int bins_per_decade) const {
  std::vector<histogram_bin> out;
  if (ns_.empty() || bins_per_decade <= 0)
    return out;
  sort();
  double lo = std::max<double>(static_cast<double>(ns_.front()), 1.0) / 1000.0;
  double hi = static_cast<double>(ns_.back()) / 1000.0;
  const double step = std::pow(10.0, 1.0 / bins_per_decade);
  // Start on a decade grid so bins of different runs line up.
  double edge = std::pow(10.0, std::floor(std::log10(lo) * bins_per_decade) / bins_per_decade);
  std::size_t i = 0;
  while (i < ns_.size()) {
    histogram_bin bin{edge, edge * step, 0};
    while (i < ns_.size() && ns_[i] / 1000.0 < bin.hi_us) {
      ++bin.count;
      ++i;
    }
    out.push_back(bin);
    edge = bin.hi_us;
    if (edge > hi * step * step)  // guards against rounding at the top
      break;
  }
  if (i < ns_.size())  // numerical slack: the rest go to the last bin
    out.back().count += ns_.size() - i;
  return out;
}

latency_summary summarize_sorted_us(const std::vector<double>& v) {
  latency_summary s;
  if (v.empty())
    return s;
  s.count = v.size();
  long double sum = 0;
  for (auto x : v)
    sum += x;
  s.mean_us = static_cast<double>(sum / v.size());
  s.min_us = v.front();
  s.max_us = v.back();
  s.p50_us = v[rank_index(v.size(), 0.50)];
  s.p90_us = v[rank_index(v.size(), 0.90)];
  s.p99_us = v[rank_index(v.size(), 0.99)];
  s.p999_us = v[rank_index(v.size(), 0.999)];
  return s;
}

// -- the figures table -----------------------------------------------------------

const char* to_string(verdict v) noexcept {
  switch (v) {
    case verdict::pass: return "PASS";
    case verdict::fail: return "FAIL";
    case verdict::floor: return "floor";
    case verdict::info: return "info";
    case verdict::skipped: return "skipped";
  }
  return "?";
}

verdict judge_at_least(double ratio, double min) {
  if (!std::isfinite(ratio))
    return verdict::skipped;
  return ratio >= min ? verdict::pass : verdict::fail;
}

verdict judge_at_most(double ratio, double max) {
  if (!std::isfinite(ratio))
    return verdict::skipped;
  return ratio <= max ? verdict::pass : verdict::fail;
}

void report_table::section(std::string name) { sections_.emplace_back(rows_.size(), std::move(name)); }

void report_table::add(table_row row) { rows_.push_back(std::move(row)); }

bool report_table::any_failed() const {
  return std::any_of(rows_.begin(), rows_.end(), [](const table_row& r) { return r.result == verdict::fail; });
}

void report_table::print(std::ostream& os) const {
  static const char* headers[] = {"figure", "value", "peer", "ratio", "target", "verdict"};
  std::size_t w[6];
  for (int c = 0; c < 6; ++c)
    w[c] = std::string(headers[c]).size();
  auto cells = [](const table_row& r) {
    return std::vector<std::string>{r.figure, r.value, r.peer, r.ratio, r.target, to_string(r.result)};
  };
  for (auto& r : rows_) {
    auto c = cells(r);
    for (int i = 0; i < 6; ++i)
      w[i] = std::max(w[i], c[i].size());
  }
  // Numbers right-aligned (value, peer, ratio), text left-aligned.
  auto line = [&](const std::vector<std::string>& c, std::ostream& out) {
    for (int i = 0; i < 6; ++i) {
      bool right = i >= 1 && i <= 3;
      out << (right ? std::right : std::left) << std::setw(static_cast<int>(w[i])) << c[i];
      out << (i < 5 ? "  " : "");
    }
    out << std::left << '\n';
  };
  if (!title_.empty())
    os << title_ << '\n';
  line({headers, headers + 6}, os);
  std::vector<std::string> rule;
  for (int i = 0; i < 6; ++i)
    rule.emplace_back(w[i], '-');
  line(rule, os);
  std::size_t next_section = 0;
  std::vector<std::string> notes;
  for (std::size_t i = 0; i < rows_.size(); ++i) {
    while (next_section < sections_.size() && sections_[next_section].first == i)
      os << "[" << sections_[next_section++].second << "]\n";
    line(cells(rows_[i]), os);
    if (!rows_[i].note.empty())
      notes.push_back(rows_[i].figure + ": " + rows_[i].note);
  }
  if (!notes.empty()) {
    os << "notes:\n";
    for (auto& n : notes)
      os << "  * " << n << '\n';
  }
  os.flush();
}

json report_table::to_json() const {
  json rows = json::array();
  std::size_t next_section = 0;
  std::string section;
  for (std::size_t i = 0; i < rows_.size(); ++i) {
    while (next_section < sections_.size() && sections_[next_section].first == i)
      section = sections_[next_section++].second;
    const auto& r = rows_[i];
    rows.push_back({{"section", section}, {"figure", r.figure}, {"value", r.value}, {"peer", r.peer},
                    {"ratio", r.ratio}, {"target", r.target}, {"verdict", to_string(r.result)},
                    {"note", r.note}});
  }
  return json{{"title", title_}, {"rows", rows}};
}

std::string format_fixed(double v, int decimals) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << v;
  return os.str();
}

namespace {

// Three significant digits.
std::string sig3(double v) {
  double a = std::fabs(v);
  int decimals = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  return format_fixed(v, decimals);
}

} // namespace

std::string format_rate(double r) {
  if (!std::isfinite(r))
    return "-";
  if (r >= 1e6)
    return sig3(r / 1e6) + "M req/s";
  if (r >= 1e4)
    return sig3(r / 1e3) + "k req/s";
  return format_fixed(r, 0) + " req/s";
}

std::string format_micros(double us) {
  if (!std::isfinite(us))
    return "-";
  if (us >= 1e6)
    return sig3(us / 1e6) + " s";
  if (us >= 1e3)
    return sig3(us / 1e3) + " ms";
  return sig3(us) + " us";
}

std::string format_ratio(double r) {
  if (!std::isfinite(r))
    return "-";
  return format_fixed(r, 2) + "x";
}

// -- files -------------------------------------------------------------------------

void write_json_file(const std::string& path, const json& j) {
  fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path())
    fs::create_directories(p.parent_path(), ec);
  fs::path tmp = p;
  tmp += ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    if (!out)
      throw std::runtime_error("cannot write " + tmp.string());
    out << j.dump(2) << '\n';
    if (!out.flush())
      throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, p, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw std::runtime_error("cannot rename to " + path);
  }
}

bool write_report(const std::string& who, const std::string& path, const json& j,
                  const std::vector<plot_outcome>& plots, double seconds,
                  const std::vector<std::string>& failures) {
  bool ok = true;
  try {
    write_json_file(path, j);
    std::cout << "\nwrote " << path;
    for (auto& p : plots)
      if (p.ok)
        std::cout << ", " << p.png;
    std::cout << " (" << format_fixed(seconds, 1) << " s)\n";
  } catch (const std::exception& e) {
    std::cerr << who << ": " << e.what() << "\n";
    ok = false;
  }
  if (!failures.empty()) {
    std::cerr << who << ": " << failures.size() << " measurement(s) failed:\n";
    for (auto& f : failures)
      std::cerr << "  " << f << "\n";
    ok = false;
  }
  return ok;
}

json machine_info(const std::string& python) {
  json j;
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) == 0)
    j["host"] = host;
  j["cores"] = std::thread::hardware_concurrency();
  struct utsname u;
  if (::uname(&u) == 0)
    j["kernel"] = std::string(u.sysname) + " " + u.release + " " + u.machine;
  std::ifstream cpu("/proc/cpuinfo");
  for (std::string line; std::getline(cpu, line);) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos)
        j["cpu"] = line.substr(line.find_first_not_of(' ', colon + 1));
      break;
    }
  }
  try {
    spawn_spec spec;
    spec.argv = {python, "-c", "import sys; print(sys.version.split()[0])"};
    auto r = run_command(spec, std::chrono::seconds(10));
    if (r.succeeded()) {
      auto v = r.output;
      while (!v.empty() && (v.back() == '\n' || v.back() == '\r'))
        v.pop_back();
      j["python"] = v;
    }
  } catch (const std::exception&) {
  }
  j["load_average_1m"] = load_average_1m();
  std::time_t now = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  j["time_utc"] = buf;
  return j;
}

double load_average_1m() {
  std::ifstream in("/proc/loadavg");
  double l = -1;
  if (!(in >> l))
    return -1;
  return l;
}

void print_bench_start(const std::string& name, const std::vector<std::string>& parts, bool quick) {
  const double load = load_average_1m();
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  std::cerr << "dspex-bench " << name << ":";
  for (auto& p : parts)
    std::cerr << ' ' << p;
  std::cerr << (quick ? " (quick)" : "") << "; load average " << format_fixed(load, 2) << " on " << cores
            << " cores\n";
  if (load > 0.5 * cores)
    std::cerr << "warning: the machine is busy (load average " << format_fixed(load, 2)
              << "): other processes will distort the figures\n";
}

std::string bench_title(const std::string& name, const json& machine, double load_before, double load_after) {
  return "dspex-bench " + name + " (" + machine.value("cpu", std::string("?")) + ", " +
         std::to_string(machine.value("cores", 0u)) + " cores, python " + machine.value("python", std::string("?")) +
         "; load average " + format_fixed(load_before, 2) + " before, " + format_fixed(load_after, 2) + " after)";
}

// -- plots (gnuplot) -----------------------------------------------------------------

namespace {

std::string gp_string(const std::string& s) {  // a double-quoted gnuplot string
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\';
    if (c == '\n')
      continue;
    out += c;
  }
  return out + "\"";
}

std::string gp_path(const fs::path& p) {  // a single-quoted gnuplot string: '' escapes '
  std::string out = "'";
  for (char c : p.string()) {
    out += c;
    if (c == '\'')
      out += '\'';
  }
  return out + "'";
}

void warn_no_gnuplot() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::cerr << "warning: gnuplot not found in PATH; plots are skipped (JSON and table still written)\n";
  });
}

// Writes <name>.gp = terminal + output lines + body, runs gnuplot on it.
plot_outcome run_gnuplot(const fs::path& dir, const std::string& name, const std::string& body,
                         int width = 960, int height = 560) {
  plot_outcome res;
  if (!gnuplot_available()) {
    warn_no_gnuplot();
    res.message = "gnuplot not found";
    return res;
  }
  fs::path png = dir / (name + ".png");
  fs::path script = dir / (name + ".gp");
  // pngcairo draws better; plain png (libgd) where cairo is missing.
  for (const char* terminal : {"pngcairo", "png"}) {
    {
      std::ofstream out(script);
      if (!out) {
        res.message = "cannot write " + script.string();
        return res;
      }
      out << "set terminal " << terminal << " noenhanced size " << width << "," << height
          << " font 'sans,10'\n"
          << "set output " << gp_path(png) << "\n"
          << body << "\nunset output\n";
    }
    spawn_spec spec;
    spec.argv = {"gnuplot", script.string()};
    spec.stderr_to = spawn_spec::stderr_mode::merge;
    try {
      auto r = run_command(spec, std::chrono::seconds(30));
      std::error_code ec;
      if (r.succeeded() && fs::exists(png, ec) && fs::file_size(png, ec) > 0) {
        res.ok = true;
        res.png = png.string();
        res.message.clear();
        return res;
      }
      res.message = "gnuplot " + r.describe() + ": " + r.output.substr(0, 400);
    } catch (const std::exception& e) {
      res.message = e.what();
      return res;
    }
  }
  std::cerr << "warning: plot " << name << " failed: " << res.message << '\n';
  return res;
}

bool prepare_dir(const std::string& out_dir, plot_outcome& res) {
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    res.message = "cannot create " + out_dir + ": " + ec.message();
    return false;
  }
  return true;
}

} // namespace

bool gnuplot_available() {
  static const bool found = !find_in_path("gnuplot").empty();
  return found;
}

plot_outcome plot_latency_cdf(const std::string& out_dir, const std::string& name,
                              const std::vector<latency_series>& series, const std::string& title) {
  plot_outcome res;
  if (!prepare_dir(out_dir, res))
    return res;
  fs::path dir(out_dir);
  fs::path dat = dir / (name + ".dat");
  std::ostringstream plot;
  {
    std::ofstream out(dat);
    int index = 0;
    for (auto& s : series) {
      if (s.sorted_us.empty())
        continue;
      out << "# " << s.label << "\n# latency_us fraction\n";
      const double n = static_cast<double>(s.sorted_us.size());
      for (std::size_t i = 0; i < s.sorted_us.size(); ++i)
        out << s.sorted_us[i] << ' ' << (static_cast<double>(i) + 1) / n << '\n';
      out << "\n\n";
      plot << (index ? ", \\\n     " : "plot ") << gp_path(dat) << " index " << index
           << " using 1:2 with lines lw 2 title " << gp_string(s.label);
      ++index;
    }
    if (index == 0) {
      res.message = "no latency samples";
      return res;
    }
  }
  std::ostringstream body;
  body << "set title " << gp_string(title) << "\n"
       << "set logscale x\nset grid xtics mxtics ytics\n"
       << "set xlabel 'round-trip latency (us, log scale)'\nset ylabel 'fraction of requests'\n"
       << "set yrange [0:1]\nset ytics 0.1\nset key bottom right\n"
       << plot.str() << "\n";
  return run_gnuplot(dir, name, body.str());
}

json to_json(const std::vector<plot_outcome>& plots) {
  json out = json::array();
  for (auto& p : plots)
    out.push_back({{"ok", p.ok}, {"png", p.png}, {"message", p.message}});
  return out;
}

plot_outcome plot_throughput(const std::string& out_dir, const std::string& name,
                             const std::vector<throughput_series>& series, const std::string& title) {
  plot_outcome res;
  if (!prepare_dir(out_dir, res))
    return res;
  fs::path dir(out_dir);
  fs::path dat = dir / (name + ".dat");
  std::vector<int> xs;
  std::ostringstream plot;
  {
    std::ofstream out(dat);
    int index = 0;
    for (auto& s : series) {
      if (s.points.empty())
        continue;
      out << "# " << s.label << "\n# workers requests_per_s\n";
      for (auto& p : s.points) {
        out << p.workers << ' ' << p.requests_per_s << '\n';
        xs.push_back(p.workers);
      }
      out << "\n\n";
      plot << (index ? ", \\\n     " : "plot ") << gp_path(dat) << " index " << index
           << " using 1:2 with linespoints lw 2 pt 7 ps 1.2 title " << gp_string(s.label);
      ++index;
    }
    if (index == 0) {
      res.message = "no throughput points";
      return res;
    }
  }
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  std::ostringstream tics;
  for (std::size_t i = 0; i < xs.size(); ++i)
    tics << (i ? ", " : "") << xs[i];
  std::ostringstream body;
  body << "set title " << gp_string(title) << "\n"
       << "set grid\nset key outside top center horizontal\n"
       << "set xlabel 'workers (W)'\nset ylabel 'requests/s'\n"
       << "set yrange [0:*]\nset format y '%.0s%c'\n"
       << (xs.size() > 1 && xs.front() > 0 ? "set logscale x 2\n" : "")
       << "set xtics (" << tics.str() << ")\n"
       << "set xrange [" << xs.front() * (xs.size() > 1 ? 0.8 : 0.5) << ":" << xs.back() * 1.25 << "]\n"
       << plot.str() << "\n";
  return run_gnuplot(dir, name, body.str());
}

plot_outcome plot_availability(const std::string& out_dir, const std::string& name,
                               const std::vector<availability_bucket>& buckets,
                               const std::vector<timeline_event>& events, const std::string& title,
                               double bucket_seconds) {
  plot_outcome res;
  if (!prepare_dir(out_dir, res))
    return res;
  if (buckets.empty()) {
    res.message = "no buckets";
    return res;
  }
  fs::path dir(out_dir);
  fs::path dat = dir / (name + ".dat");
  bool any_size = false;
  {
    std::ofstream out(dat);
    out << "# t_s ok failed pool_size\n";
    for (auto& b : buckets) {
      out << b.t_s << ' ' << b.ok << ' ' << b.failed << ' ';
      if (b.pool_size >= 0) {
        out << b.pool_size;
        any_size = true;
      } else {
        out << "NaN";
      }
      out << '\n';
    }
    // Close the last step of the pool-size line.
    auto& last = buckets.back();
    out << last.t_s + bucket_seconds << " 0 0 " << (last.pool_size >= 0 ? std::to_string(last.pool_size) : "NaN")
        << '\n';
  }
  std::ostringstream body;
  const double bw = bucket_seconds > 0 ? bucket_seconds : 0.1;
  std::uint64_t max_requests = 1;
  int max_size = 1;
  for (auto& b : buckets) {
    max_requests = std::max<std::uint64_t>(max_requests, b.ok + b.failed);
    max_size = std::max(max_size, b.pool_size);
  }
  body << "set title " << gp_string(title) << "\n"
       << "set grid ytics\nset key outside top center horizontal\n"
       << "set xlabel 'time (s)'\nset ylabel 'requests per " << format_fixed(bw * 1000, 0)
       << " ms'\nset yrange [0:" << static_cast<double>(max_requests) * 1.15 << "]\nset ytics nomirror\n"
       << "set boxwidth " << bw * 0.9 << " absolute\nset style fill solid 0.7 noborder\n"
       << "set xrange [0:" << buckets.back().t_s + bw << "]\n";
  if (any_size)
    body << "set y2label 'pool size (live workers)'\nset y2tics\nset y2range [0:" << max_size * 1.25
         << "]\n";
  int shown = 0;
  for (auto& e : events) {
    body << "set arrow from " << e.t_s << ", graph 0 to " << e.t_s
         << ", graph 1 nohead front lc rgb '#444444' dt 2 lw 1\n";
    if (events.size() <= 25 && !e.label.empty())
      body << "set label " << ++shown + 100 << " " << gp_string(e.label) << " at " << e.t_s
           << ", graph 0.97 rotate by 90 right front font ',8' tc rgb '#222222' offset -0.6,0\n";
  }
  body << "plot " << gp_path(dat) << " using ($1+" << bw / 2
       << "):($2+$3) with boxes lc rgb '#d62728' title 'failed', \\\n     " << gp_path(dat)
       << " using ($1+" << bw / 2 << "):2 with boxes lc rgb '#2ca02c' title 'ok'";
  if (any_size)
    body << ", \\\n     " << gp_path(dat)
         << " using 1:4 axes x1y2 with steps lw 2 lc rgb '#1f77b4' title 'pool size'";
  body << "\n";
  return run_gnuplot(dir, name, body.str(), 1100, 560);
}

// -- availability_timeline -------------------------------------------------------------

availability_timeline::availability_timeline(std::chrono::milliseconds bucket, clock::time_point start)
  : bucket_(bucket.count() > 0 ? bucket : std::chrono::milliseconds(100)), start_(start) {}

std::size_t availability_timeline::index(clock::time_point at) const {
  if (at <= start_)
    return 0;
  return static_cast<std::size_t>((at - start_) / bucket_);
}

void availability_timeline::grow(std::size_t i) {
  while (buckets_.size() <= i) {
    availability_bucket b;
    b.t_s = static_cast<double>(buckets_.size()) * bucket_seconds();
    buckets_.push_back(b);
    size_set_.push_back(false);
  }
}

double availability_timeline::bucket_seconds() const noexcept {
  return std::chrono::duration<double>(bucket_).count();
}

void availability_timeline::record(bool ok, clock::time_point at) {
  std::lock_guard<std::mutex> g(mx_);
  auto i = index(at);
  grow(i);
  if (ok)
    ++buckets_[i].ok;
  else
    ++buckets_[i].failed;
}

void availability_timeline::pool_size(int live, clock::time_point at) {
  std::lock_guard<std::mutex> g(mx_);
  auto i = index(at);
  grow(i);
  buckets_[i].pool_size = live;
  size_set_[i] = true;
}

void availability_timeline::event(std::string label, clock::time_point at) {
  std::lock_guard<std::mutex> g(mx_);
  auto i = index(at);
  grow(i);
  double t = std::chrono::duration<double>(at - start_).count();
  events_.push_back({std::max(t, 0.0), std::move(label)});
}

std::vector<availability_bucket> availability_timeline::buckets() const {
  std::lock_guard<std::mutex> g(mx_);
  auto out = buckets_;
  int size = -1;
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (size_set_[i])
      size = out[i].pool_size;
    else
      out[i].pool_size = size;
  }
  return out;
}

std::vector<timeline_event> availability_timeline::events() const {
  std::lock_guard<std::mutex> g(mx_);
  return events_;
}

json availability_timeline::to_json() const {
  json b = json::array();
  for (auto& x : buckets())
    b.push_back({{"t_s", x.t_s}, {"ok", x.ok}, {"failed", x.failed}, {"pool_size", x.pool_size}});
  json e = json::array();
  for (auto& x : events())
    e.push_back({{"t_s", x.t_s}, {"label", x.label}});
  return json{{"bucket_s", bucket_seconds()}, {"buckets", b}, {"events", e}};
}

// -- progress_line ---------------------------------------------------------------------

progress_line::progress_line(std::ostream& os, std::optional<bool> live)
  : os_(os), live_(live ? *live : ::isatty(STDERR_FILENO) == 1) {}

progress_line::progress_line() : progress_line(std::cerr) {}

progress_line::~progress_line() { clear(); }

void progress_line::update(const std::string& text) {
  if (!live_)
    return;
  os_ << '\r' << text;
  if (shown_ > text.size())
    os_ << std::string(shown_ - text.size(), ' ');
  os_.flush();
  shown_ = text.size();
}

void progress_line::finish(const std::string& text) {
  if (live_) {
    os_ << '\r' << text;
    if (shown_ > text.size())
      os_ << std::string(shown_ - text.size(), ' ');
  } else {
    os_ << text;
  }
  os_ << '\n';
  os_.flush();
  shown_ = 0;
}

void progress_line::clear() {
  if (live_ && shown_ > 0) {
    os_ << '\r' << std::string(shown_, ' ') << '\r';
    os_.flush();
    shown_ = 0;
  }
}

host_usage host_usage_now() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto us = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) * 1e6 + static_cast<double>(tv.tv_usec); };
  return {us(ru.ru_utime) + us(ru.ru_stime), static_cast<double>(ru.ru_nvcsw + ru.ru_nivcsw)};
}

host_usage per_request(const host_usage& from, const host_usage& to, std::uint64_t n) {
  const auto k = static_cast<double>(n);
  return {(to.cpu_us - from.cpu_us) / k, (to.switches - from.switches) / k};
}

} // namespace dspex::bench
