#include <dspex/bench/chaos_nodes.hpp>

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/bench/bare_loop.hpp>
#include <dspex/bench/dspex_bench.hpp>
#include <dspex/bench/netns_link.hpp>
#include <dspex/bench/report.hpp>
#include <dspex/bench/subprocess.hpp>

#include <caf/all.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace dspex::bench {

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int heartbeat_interval_ms = 250;
constexpr int connection_timeout_ms = 2000;  // a stopped member is dropped after this

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0)
    ::close(fd);
  return port;
}

std::string dspex_cli() {
  char buf[4096];
  auto n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string self = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "dspex-bench";
  return self.substr(0, self.rfind('/') + 1) + "dspex";
}

json timing(json j) {
  j["heartbeat_interval_ms"] = heartbeat_interval_ms;
  j["connection_timeout_ms"] = connection_timeout_ms;
  return j;
}

/// One member: a `dspex run` of its own, restartable on the same port.
struct member_node {
  std::string cfg;
  int port = 0;
  /// Set for the member that is partitioned: it runs in a namespace of its
  /// own (declared before proc: the process goes first).
  std::unique_ptr<netns_link> link;
  child_process proc;

  std::string host() const { return link ? link->address() : "127.0.0.1"; }

  void start() {
    spawn_spec s;
    // Its own control socket: the default path is one per machine.
    s.argv = {dspex_cli(), "run", cfg, "--control", cfg + ".sock"};
    if (link)
      s.argv = link->wrap(s.argv);
    s.env = {{"DSPEX_PYTHON_PATH", locate_python_dir()}};
    s.pipe_stdin = false;
    s.pipe_stdout = false;
    s.stderr_to = spawn_spec::stderr_mode::null;
    proc = child_process::spawn(s);
  }
  void kill() {
    if (proc.pid() > 0 && !proc.reaped())
      ::kill(proc.pid(), SIGKILL);  // the node only: its workers see it gone
    proc.wait_for(10s);
  }
  void stop() {
    if (proc.pid() <= 0 || proc.reaped())
      return;
    proc.signal_group(SIGCONT);
    proc.signal_group(SIGTERM);
    if (!proc.wait_for(15s))
      proc.stop(0ms);
  }
};

/// Every request's answers, by key.
struct tally {
  std::mutex mx;
  std::map<std::uint64_t, int> answers;
  std::uint64_t sent = 0, ok = 0, twice = 0, wrong_key = 0, late = 0, never = 0;
  std::map<std::string, std::uint64_t> errors;
  std::vector<std::pair<clock_type::time_point, bool>> done;  // when each answer came, ok or not
  std::vector<std::pair<clock_type::time_point, clock_type::time_point>> spans;  // sent, answered
};

struct waiter {
  std::mutex mx;
  std::condition_variable cv;
  bool answered = false;
};

void client(node& n, tally& t, std::atomic<bool>& stop, std::uint64_t id, std::chrono::milliseconds deadline) {
  const auto bound = deadline + std::chrono::milliseconds(connection_timeout_ms);
  for (std::uint64_t seq = 0; !stop; ++seq) {
    const std::uint64_t key = id << 32 | seq;
    auto w = std::make_shared<waiter>();
    const auto t0 = clock_type::now();
    {
      std::lock_guard<std::mutex> g(t.mx);
      ++t.sent;
    }
    n.call("echo", {{"key", key}}, call_options{"nodes", std::nullopt, deadline},
           [&t, w, key, t0, bound](caf::expected<json> r) {
             const auto now = clock_type::now();
             {
               std::lock_guard<std::mutex> g(t.mx);
               if (++t.answers[key] > 1) {
                 ++t.twice;
                 return;
               }
               if (now - t0 > bound)
                 ++t.late;
               if (!r)
                 ++t.errors[to_string(code_of(r.error()).value_or(errc::node_down))];
               else if (r->value("key", std::uint64_t{0}) != key)
                 ++t.wrong_key;
               else
                 ++t.ok;
               t.done.emplace_back(now, static_cast<bool>(r));
               t.spans.emplace_back(t0, now);
             }
             std::lock_guard<std::mutex> g(w->mx);
             w->answered = true;
             w->cv.notify_all();
           });
    std::unique_lock<std::mutex> g(w->mx);
    if (!w->cv.wait_for(g, bound + 5s, [&] { return w->answered; })) {
      std::lock_guard<std::mutex> g2(t.mx);
      ++t.never;
    }
  }
}

// Failover: from `at` to the answer of the last request that was in flight
// then (sent before, answered after), ms.
double last_answer_after(const tally& t, clock_type::time_point at) {
  double ms = 0;
  for (auto& [sent, answered] : t.spans)
    if (sent <= at && answered > at)
      ms = std::max(ms, std::chrono::duration<double, std::milli>(answered - at).count());
  return ms;
}

double rate(const tally& t, clock_type::time_point from, clock_type::time_point to) {
  std::uint64_t n = 0;
  for (auto& [at, ok] : t.done)
    if (ok && at >= from && at < to)
      ++n;
  auto s = std::chrono::duration<double>(to - from).count();
  return s > 0 ? n / s : 0;
}

} // namespace

int run_chaos_nodes(const chaos_options& o) {
  const int workers = std::max(1, o.workers / 2);
  const int clients = o.clients > 0 ? o.clients : 2 * o.nodes * workers;
  const auto phase = o.fault_phase;
  const std::string dir = "/tmp/dspex-chaos-nodes-" + std::to_string(::getpid());
  ::mkdir(dir.c_str(), 0700);
  std::cerr << "dspex-bench chaos --nodes " << o.nodes << ": " << workers << " workers a node, " << clients
            << " clients, " << phase.count() << " ms fault phase\n";

  // Member 2 is partitioned by cutting its link, when this machine lets
  // the bench make a network namespace; else it is left out of the faults.
  netns_link::sweep_leftovers();
  const bool partition = o.nodes >= 3 && netns_link::available();
  if (o.nodes >= 3 && !partition)
    std::cerr << "dspex-bench chaos --nodes: no network namespaces here (needs root and ip): no partition\n";
  std::vector<member_node> members(static_cast<std::size_t>(o.nodes));
  for (std::size_t i = 0; i < members.size(); ++i) {
    auto j = timing(default_config());
    j["root"]["children"][1]["size"] = workers;
    j["root"]["children"][1]["worker"]["python"] = o.python;
    members[i].port = free_port();
    if (partition && i == 2) {
      try {
        members[i].link = std::make_unique<netns_link>(static_cast<int>(i));
      } catch (const std::exception& e) {
        std::cerr << "dspex-bench chaos --nodes: " << e.what() << "\n";
        for (auto& m : members)
          m.stop();
        return 1;
      }
    }
    j["listen"] = members[i].host() + ":" + std::to_string(members[i].port);
    // Off loopback, plain text needs saying so: the namespace's link is
    // private to this host.
    if (members[i].link)
      j["insecure"] = true;
    members[i].cfg = dir + "/m" + std::to_string(i) + ".json";
    std::ofstream(members[i].cfg) << j.dump(2);
    members[i].start();
  }

  // The calling node: a remote_pool per member and the group over them.
  json tree = timing(json{{"mode", "pool"}, {"root", {{"strategy", "one_for_one"}, {"children", json::array()}}}});
  std::vector<std::string> names;
  for (std::size_t i = 0; i < members.size(); ++i) {
    names.push_back("m" + std::to_string(i));
    tree["root"]["children"].push_back({{"id", names.back()}, {"type", "remote_pool"}, {"host", members[i].host()},
                                        {"port", members[i].port}, {"connect_timeout_ms", 1000},
                                        {"reconnect_min_ms", 50}, {"reconnect_max_ms", 500}});
  }
  tree["root"]["children"].push_back({{"id", "nodes"}, {"type", "pool_group"}, {"members", names},
                                      {"idempotent", {"echo"}}, {"health_interval_ms", 100}});
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  auto started = start_network_node(cfg, sys, tree);
  if (!started) {
    std::cerr << "dspex-bench chaos --nodes: " << describe(started.error()) << "\n";
    return 1;
  }
  auto n = *started;
  auto group = [&] { return n->status()["groups"]["nodes"]; };
  auto all_up = [&] {
    auto ms = group()["members"];
    for (auto& m : ms)
      if (m.value("state", "") != "up")
        return false;
    return ms.size() == members.size();
  };
  auto until = clock_type::now() + 60s;
  while (!all_up() && clock_type::now() < until)
    std::this_thread::sleep_for(100ms);
  if (!all_up()) {
    std::cerr << "dspex-bench chaos --nodes: the members did not come up: " << group().dump() << "\n";
    n->stop();
    for (auto& m : members)
      m.stop();
    return 1;
  }

  tally t;
  std::atomic<bool> stop{false};
  const auto deadline = std::chrono::milliseconds(o.request_timeout_ms);
  std::vector<std::thread> load;
  for (int c = 0; c < clients; ++c)
    load.emplace_back([&, c] { client(*n, t, stop, static_cast<std::uint64_t>(c + 1), deadline); });

  // The schedule, in fractions of the fault phase: member 0 killed, then
  // started again; then member 1 (when there is one) stopped, then
  // continued; then member 2's link cut, then healed.
  const auto t_start = clock_type::now();
  std::this_thread::sleep_for(o.warmup);
  const auto t_faults = clock_type::now();
  auto at = [&](double f) { std::this_thread::sleep_until(t_faults + phase * f); };
  at(0.03);
  const auto t_kill = clock_type::now();
  members[0].kill();
  at(0.23);
  const auto t_restart = clock_type::now();
  const auto routed_before_restart = group()["members"][0].value("routed", 0);
  members[0].start();
  // Its return: from the restart (a new process) until the group routes a
  // request to it again, watched beside the schedule.
  std::atomic<double> back_ms{-1};
  std::thread watch_return([&] {
    while (!stop && back_ms < 0) {
      if (group()["members"][0].value("routed", 0) > routed_before_restart)
        back_ms = std::chrono::duration<double, std::milli>(clock_type::now() - t_restart).count();
      std::this_thread::sleep_for(10ms);
    }
  });
  clock_type::time_point t_stop{}, t_cont{};
  if (members.size() > 1) {
    at(0.25);
    t_stop = clock_type::now();
    members[1].proc.signal_group(SIGSTOP);
    at(0.6);
    t_cont = clock_type::now();
    members[1].proc.signal_group(SIGCONT);
  }
  clock_type::time_point t_cut{}, t_heal{};
  std::uint64_t routed_at_heal = 0;
  if (partition) {
    at(0.62);
    members[2].link->cut();
    t_cut = clock_type::now();  // after the `ip` command: the link is down now
    at(0.97);
    routed_at_heal = group()["members"][2].value("routed", std::uint64_t{0});
    t_heal = clock_type::now();
    members[2].link->heal();
  }
  at(1.0);
  const auto routed_at_end = group()["members"][0].value("routed", 0);
  std::this_thread::sleep_for(o.recovery);
  const auto routed_later = group()["members"][0].value("routed", 0);
  // A healed member is routed to again once its remote_pool has connected
  // again: an attempt made during the cut may have to time out first
  // (connect_timeout_ms), then a backoff, a connect and the group's next
  // poll. The load goes on until then (only a request can be routed), for
  // at most 10 s more.
  double healed_ms = -1;
  for (int i = 0; partition && i < 200; ++i) {
    if (group()["members"][2].value("routed", std::uint64_t{0}) > routed_at_heal) {
      healed_ms = std::chrono::duration<double, std::milli>(clock_type::now() - t_heal).count();
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  stop = true;
  watch_return.join();
  for (auto& th : load)
    th.join();
  const auto t_end = clock_type::now();
  auto final_group = group();
  n->stop();
  for (auto& m : members)
    m.stop();
  for (auto& m : members)
    m.link.reset();
  std::system(("rm -rf " + dir).c_str());

  // The killed member rejoined: routed to again after its restart.
  const bool rejoined = final_group["members"][0].value("state", "") == "up"
                        && (routed_later > routed_at_end || final_group["members"][0].value("routed", 0) > routed_at_end);
  std::uint64_t errors = 0;
  for (auto& [c, k] : t.errors)
    errors += k;
  const double before = rate(t, t_start + o.warmup / 4, t_faults);
  const double while_killed = rate(t, t_kill + std::chrono::milliseconds(connection_timeout_ms) / 4, t_restart);
  const double while_stopped =
    members.size() > 1 ? rate(t, t_stop + std::chrono::milliseconds(connection_timeout_ms), t_cont) : 0;

  report_table tab("dspex-bench chaos --nodes " + std::to_string(o.nodes));
  tab.section(std::to_string(o.nodes) + " dspex run nodes x " + std::to_string(workers) +
              " workers behind a pool_group; " + std::to_string(clients) + " clients; echo idempotent");
  auto must_be_zero = [&](const std::string& what, std::uint64_t v) {
    tab.add({what, std::to_string(v), "", "", "0", v == 0 ? verdict::pass : verdict::fail, ""});
  };
  tab.add({"requests sent", std::to_string(t.sent), "", "", "", verdict::info, ""});
  tab.add({"answered ok", std::to_string(t.ok), "", "", "", verdict::info, ""});
  std::string by_class;
  for (auto& [c, k] : t.errors)
    by_class += (by_class.empty() ? "" : ", ") + c + " " + std::to_string(k);
  tab.add({"answered with an error", std::to_string(errors), "", "", "", verdict::info, by_class});
  must_be_zero("never answered", t.never);
  must_be_zero("answered twice", t.twice);
  must_be_zero("replies carrying another request's key", t.wrong_key);
  must_be_zero("answered past the deadline + heartbeat timeout", t.late);
  tab.add({"killed member rejoined after its restart", rejoined ? "yes" : "no", "", "", "yes",
           rejoined ? verdict::pass : verdict::fail, ""});
  const bool healed = partition && healed_ms >= 0;
  if (partition)
    tab.add({"partitioned member rejoined after its link healed", healed ? "yes" : "no", "", "", "yes",
             healed ? verdict::pass : verdict::fail, "routed to again, within 10 s of the load's end"});
  auto per_s = [](double v) { return format_fixed(v, 0) + " req/s"; };
  tab.add({"throughput before the faults", per_s(before), "", "", "", verdict::floor, ""});
  tab.add({"throughput while member 0 is down", per_s(while_killed), "before " + per_s(before),
           format_ratio(before > 0 ? while_killed / before : 0), "", verdict::info,
           "survivors hold " + std::to_string(o.nodes - 1) + " of " + std::to_string(o.nodes) + " nodes' workers"});
  if (members.size() > 1)
    tab.add({"throughput while member 1 is stopped (after the heartbeat timeout)", per_s(while_stopped),
             "before " + per_s(before), format_ratio(before > 0 ? while_stopped / before : 0), "", verdict::info, ""});
  if (partition) {
    const double while_cut = rate(t, t_cut + std::chrono::milliseconds(connection_timeout_ms), t_heal);
    tab.add({"throughput while member 2 is partitioned (after the heartbeat timeout)", per_s(while_cut),
             "before " + per_s(before), format_ratio(before > 0 ? while_cut / before : 0), "", verdict::info,
             "its veth link set down: packets dropped both ways, sockets open"});
  }
  tab.add({"failover: member 0 SIGKILLed -> the last request in flight then answered",
           format_fixed(last_answer_after(t, t_kill), 0) + " ms", "", "", "", verdict::info,
           "bounded by connection_timeout_ms " + std::to_string(connection_timeout_ms) + " + a retry"});
  tab.add({"failover: member 0 restarted -> routed to again",
           back_ms < 0 ? std::string("never") : format_fixed(back_ms, 0) + " ms", "", "", "",
           verdict::info, "a dspex run start plus the group's next health poll"});
  if (members.size() > 1)
    tab.add({"failover: member 1 SIGSTOPped -> the last request in flight then answered",
             format_fixed(last_answer_after(t, t_stop), 0) + " ms", "", "", "", verdict::info, ""});
  if (partition)
    tab.add({"failover: member 2 partitioned -> the last request in flight then answered",
             format_fixed(last_answer_after(t, t_cut), 0) + " ms", "", "", "", verdict::info, ""});
  if (partition)
    tab.add({"failover: member 2 healed -> routed to again",
             healed ? format_fixed(healed_ms, 0) + " ms" : std::string("never"), "", "", "", verdict::info,
             "a connect attempt made during the cut times out first (connect_timeout_ms 1000)"});
  tab.add({"group retried (idempotent after node_down)", std::to_string(final_group.value("retried", 0)), "", "",
           "", verdict::info, ""});
  tab.print(std::cout);
  std::cerr << "(" << format_fixed(std::chrono::duration<double>(t_end - t_start).count(), 1) << " s)\n";
  return o.assert_zero && tab.any_failed() ? 1 : 0;
}

} // namespace dspex::bench
