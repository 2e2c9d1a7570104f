// `dspex run --demo`: what dspex does, in ten seconds.
#include "commands.hpp"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

namespace dspex::cli {

namespace {

using clock_type = std::chrono::steady_clock;

void print_tree(const json& node, int depth) {
  std::string line(static_cast<std::size_t>(depth) * 2, ' ');
  line += node.value("id", "?");
  // A child stopped by `dspex stop` says so (its supervisor's status: undefined).
  auto status = node.value("state", "") == "stopped" ? "stopped" : node.value("status", "running");
  std::printf("  %-30s %-10s", line.c_str(), status.c_str());
  if (node.contains("os_pid"))
    std::printf(" pid %-7d", node["os_pid"].get<int>());
  else
    std::printf("            ");
  if (node.value("restarts", 0) > 0)
    std::printf(" restarts %d", node["restarts"].get<int>());
  std::printf("\n");
  if (node.contains("children"))
    for (auto& c : node["children"])
      print_tree(c, depth + 1);
}

double percentile(std::vector<double> v, double p) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  auto i = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

} // namespace

void print_status(const json& status) {
  std::printf("tree (mode %s):\n", status.value("mode", "?").c_str());
  print_tree(status["tree"], 0);
  for (auto& [name, p] : status["pools"].items()) {
    if (!p.is_object())
      continue;
    std::printf("pool %s: %d workers (%d idle, %d busy), queue %d, checkouts %llu, "
                "wait avg %.2f ms, restarts %llu, circuit %s\n",
                name.c_str(), p.value("workers", 0), p.value("idle", 0), p.value("busy", 0),
                p.value("queue", 0), p.value("checkouts", 0ull),
                p.value("checkout_wait_ms_avg", 0.0), p.value("restarts", 0ull),
                p.value("circuit", "?").c_str());
    if (p.contains("errors") && !p["errors"].empty())
      std::printf("  errors: %s\n", p["errors"].dump().c_str());
    // Deliberate replacements by cause (recycling included), when any.
    std::string replaced;
    if (p.contains("replaced") && p["replaced"].is_object())
      for (auto& [cause, n] : p["replaced"].items())
        if (n.is_number_unsigned() && n.get<std::uint64_t>() > 0)
          replaced += (replaced.empty() ? "" : ", ") + cause + " " + std::to_string(n.get<std::uint64_t>());
    if (!replaced.empty())
      std::printf("  replaced: %s (crashes %llu)\n", replaced.c_str(), p.value("crashes", 0ull));
    // The current or last rolling reload, once there was one.
    if (p.contains("reload") && p["reload"].is_object() && p["reload"].contains("state")) {
      auto& r = p["reload"];
      std::printf("  reload: %s, %llu of %llu workers replaced (surge %llu, %lld ms)\n",
                  r.value("state", std::string("?")).c_str(), r.value("replaced", 0ull),
                  r.value("of", 0ull), r.value("surge", 0ull), r.value("ms", 0LL));
    }
  }
  if (status.contains("remotes") && status["remotes"].is_object())
    for (auto& [name, r] : status["remotes"].items()) {
      auto state = r.value("state", std::string("?"));
      // Connected: which way its requests go (docs/remote.md "The request link").
      std::string way;
      if (state == "connected")
        way = r.value("link", std::string()) == "up"
                ? " by the request link"
                : " by BASP" + (r.contains("link_note") ? " (" + r["link_note"].get<std::string>() + ")"
                                                        : std::string());
      std::printf("remote %s -> %s:%d%s%s: %s%s%s%s\n", name.c_str(),
                  r.value("host", std::string("?")).c_str(), r.value("port", 0),
                  r.value("pool", std::string()).empty() ? "" : "/",
                  r.value("pool", std::string()).c_str(), state.c_str(), way.c_str(),
                  state == "connected" ? "" : (" since " + r.value("since", std::string("?"))).c_str(),
                  r.contains("last_error") ? (" (" + r["last_error"].get<std::string>() + ")").c_str()
                                           : "");
    }
  if (status.contains("sessions") && status["sessions"].is_object()) {
    auto& s = status["sessions"];
    std::printf("sessions: %llu of max %llu (created %llu, ended %llu, expired %llu, "
                "refused %llu)\n",
                s.value("sessions", 0ull), s.value("max_sessions", 0ull), s.value("created", 0ull),
                s.value("ended", 0ull), s.value("expired", 0ull), s.value("refused", 0ull));
  }
  if (status.contains("host_calls") && status["host_calls"].is_object()) {
    // Handlers' ctx.call: those waiting now, by target, show who waits on whom.
    auto& h = status["host_calls"];
    std::string targets;
    if (h.contains("by_target") && h["by_target"].is_object())
      for (auto& [target, n] : h["by_target"].items())
        targets += (targets.empty() ? " (" : ", ") + target + " " + n.dump();
    std::printf("host calls: %llu in flight%s, %llu total\n", h.value("in_flight", 0ull),
                targets.empty() ? "" : (targets + ")").c_str(), h.value("total", 0ull));
  }
  if (status.contains("listen") && status["listen"].is_object())
    std::printf("listening on %s port %d (%s)\n",
                status["listen"].value("host", std::string("?")).c_str(),
                status["listen"].value("port", 0),
                status["listen"].value("tls", false) ? "tls" : "plain");
}

int run_demo(caf::actor_system&, node& n) {
  std::printf("== dspex demo ==\n\n-- the tree, started and warm --\n");
  print_status(n.status());

  auto ping = n.execute_anonymous("ping");
  if (!ping) {
    std::printf("ping failed: %s\n", describe(ping.error()).c_str());
    return 1;
  }
  std::printf("\nping -> %s\n", ping->dump().c_str());

  auto lm = n.execute_anonymous("configure_lm", json{{"provider", "mock"}});
  if (!lm) {
    std::printf("configure_lm failed: %s\n", describe(lm.error()).c_str());
    return 1;
  }

  constexpr int sessions = 8, per_session = 25;
  std::printf("\n-- %d sessions create a program and run it %d times each, concurrently;\n"
              "   one worker gets SIGKILL half-way --\n",
              sessions, per_session);
  std::mutex mx;
  std::vector<double> latencies;
  std::map<std::string, int> outcomes;
  std::atomic<int> done{0};
  std::vector<std::thread> clients;
  for (int s = 0; s < sessions; ++s)
    clients.emplace_back([&, s] {
      auto sid = "session-" + std::to_string(s);
      auto created = n.execute_in_session(
        sid, "create_program",
        json{{"id", "qa"}, {"signature", "question -> answer"}});
      {
        std::lock_guard<std::mutex> g(mx);
        ++outcomes[created ? "ok" : to_string(*code_of(created.error()))];
      }
      for (int i = 0; i < per_session; ++i) {
        auto t0 = clock_type::now();
        auto r = n.execute_in_session(
          sid, "execute_program",
          json{{"program_id", "qa"},
               {"inputs", {{"question", "what is " + std::to_string(i) + " squared?"}}}});
        auto ms = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
        std::lock_guard<std::mutex> g(mx);
        if (r) {
          ++outcomes["ok"];
          latencies.push_back(ms);
        } else {
          auto c = code_of(r.error());
          ++outcomes[c ? to_string(*c) : "other"];
        }
        ++done;
      }
    });
  // Half-way, kill one worker the hard way.
  while (done.load() < sessions * per_session / 2)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto pids = tree_os_pids(n.status()["tree"], "/workers/");
  if (!pids.empty()) {
    std::printf("   SIGKILL -> worker pid %d\n", pids.front());
    ::kill(pids.front(), SIGKILL);
  }
  for (auto& t : clients)
    t.join();

  int total = 0;
  for (auto& [k, v] : outcomes)
    total += v;
  std::printf("\n%-24s %10s\n", "figure", "value");
  std::printf("%-24s %10d\n", "requests", total);
  for (auto& [k, v] : outcomes)
    std::printf("%-24s %10d\n", ("  " + k).c_str(), v);
  std::printf("%-24s %10.2f\n", "latency p50 (ms)", percentile(latencies, 0.50));
  std::printf("%-24s %10.2f\n", "latency p99 (ms)", percentile(latencies, 0.99));
  std::printf("%-24s %10s\n", "unanswered", "0");

  // Let the supervisor finish the replacement before showing the tree.
  for (int i = 0; i < 200; ++i) {
    auto st = n.status();
    bool full = true;
    for (auto& [name, p] : st["pools"].items())
      full = full && p.value("workers", 0) >= p.value("size", 0);
    if (full)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::printf("\n-- the tree after the kill: the worker was replaced --\n");
  print_status(n.status());
  std::printf("\nsessions: %s\n", n.status()["sessions"].dump().c_str());
  return total == sessions * (per_session + 1) ? 0 : 1;
}

} // namespace dspex::cli
