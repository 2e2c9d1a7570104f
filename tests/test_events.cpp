// Supervision events of process-backed children (os_pid, exit_code, signal,
// plain detail, order), `process` children asked to stop with their
// stop_signal, and a root that stops by itself reported through the node API
// and by `dspex run` (exit code 3). Real processes and signals throughout.
#include <doctest/doctest.h>

#include <dspex/actors/node/node.hpp>
#include <dspex/bridge/python_process.hpp>
#include <dspex/supervision/events.hpp>

#include "support/cli_process.hpp"
#include "support/event_log.hpp"
#include "support/scratch_dir.hpp"
#include "support/system_config.hpp"
#include "support/wait.hpp"
#include "support/why.hpp"
#include "test_paths.hpp"

#include <caf/all.hpp>

#include <csignal>
#include <fstream>
#include <mutex>
#include <sys/stat.h>
#include <unistd.h>

using namespace dspex;
using namespace dspex::test;
using namespace std::chrono_literals;
namespace sup = dspex::supervision;

namespace {

json process_node(const std::string& id, std::vector<std::string> command) {
  return {{"id", id}, {"type", "process"}, {"command", command}};
}

json tree(json children, const std::string& strategy = "one_for_one", int intensity = 10) {
  return {{"mode", "pool"},
          {"root",
           {{"strategy", strategy}, {"intensity", intensity}, {"period_ms", 5000},
            {"children", std::move(children)}}}};
}

std::string cmdline(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (auto& c : s)
    if (c == '\0')
      c = ' ';
  return s;
}

// The program a pid runs now (after any exec).
std::string comm(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string s;
  std::getline(in, s);
  return s;
}

struct events_fixture {
  test::system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<event_log> sink = std::make_shared<event_log>();
  node_options opts;

  events_fixture() {
    opts.python_path = DSPEX_TEST_PYTHON_DIR;
    opts.subscribers.push_back(sys.spawn(event_sink, sink));
  }

  ~events_fixture() {
    for (auto& s : opts.subscribers)
      caf::anon_send_exit(s, caf::exit_reason::kill);
  }

  std::shared_ptr<node> start(const json& j) {
    auto tc = parse_config(j);
    REQUIRE_MESSAGE(tc, why(tc));
    auto n = node::start(sys, *tc, opts);
    REQUIRE_MESSAGE(n, why(n));
    return *n;
  }

  int pid_of(const std::string& path) {
    // Events reach the sink asynchronously.
    REQUIRE(wait_until([&] { return sink->count(sup::event_kind::child_started, path) == 1; }));
    auto ev = sink->of(sup::event_kind::child_started, path);
    REQUIRE(ev.size() == 1);
    REQUIRE(ev[0].os_pid);
    return *ev[0].os_pid;
  }
};

} // namespace

TEST_SUITE("events") {

TEST_CASE_FIXTURE(events_fixture, "started events come in start order and carry the real os pid") {
  auto n = start(tree({process_node("a", {"sleep", "60"}), process_node("b", {"sleep", "61"}),
                       process_node("c", {"sleep", "62"})}));
  pid_of("root/c");
  std::vector<std::string> order;
  for (auto& e : sink->snapshot())
    if (e.kind == sup::event_kind::child_started)
      order.push_back(e.child_id);
  CHECK(order == std::vector<std::string>{"a", "b", "c"});
  auto a = pid_of("root/a"), b = pid_of("root/b"), c = pid_of("root/c");
  CHECK(cmdline(a).find("sleep 60") != std::string::npos);
  CHECK(cmdline(b).find("sleep 61") != std::string::npos);
  CHECK(cmdline(c).find("sleep 62") != std::string::npos);
  // which_children (and so status) has the same pid without asking the child.
  auto st = n->status();
  CHECK(st["tree"]["children"][0]["os_pid"] == a);
  n->stop();
  CHECK(all_gone({a, b, c}));
}

TEST_CASE_FIXTURE(events_fixture, "stopping the tree asks each process child with SIGTERM: reason shutdown") {
  // A shell that exits cleanly on SIGTERM, and says when its trap is set.
  scratch_dir scratch("trap");
  auto flag = scratch / "trap-set";
  auto n = start(tree({process_node("a", {"sleep", "60"}),
                       process_node("b", {"sh", "-c", "trap 'exit 0' TERM; touch '" + flag
                                                        + "'; while :; do sleep 0.05; done"})}));
  auto a = pid_of("root/a"), b = pid_of("root/b");
  REQUIRE(wait_until([&] { return ::access(flag.c_str(), F_OK) == 0; }));
  ::unlink(flag.c_str());
  n->stop();
  REQUIRE(wait_until([&] { return sink->count(sup::event_kind::supervisor_stopped, "root") == 1; }));
  auto ea = sink->of(sup::event_kind::child_exited, "root/a");
  auto eb = sink->of(sup::event_kind::child_exited, "root/b");
  REQUIRE(ea.size() == 1);
  REQUIRE(eb.size() == 1);
  CHECK(ea[0].reason_class == sup::exit_class::shutdown);
  CHECK(eb[0].reason_class == sup::exit_class::shutdown);
  CHECK(ea[0].os_pid == a);
  REQUIRE(ea[0].exit);
  CHECK(ea[0].exit->signal == SIGTERM);
  CHECK(ea[0].exit->signal_name == "SIGTERM");
  CHECK(ea[0].exit->text == "signal 15 (SIGTERM)");
  REQUIRE(eb[0].exit);
  CHECK(eb[0].exit->exit_code == 0);
  // Reverse start order.
  auto all = sink->snapshot();
  std::vector<std::string> exits;
  for (auto& e : all)
    if (e.kind == sup::event_kind::child_exited)
      exits.push_back(e.child_id);
  CHECK(exits == std::vector<std::string>{"b", "a"});
  CHECK(all_gone({a, b}));
}

TEST_CASE_FIXTURE(events_fixture, "stop_signal is what the process gets") {
  auto p = process_node("a", {"sleep", "60"});
  p["stop_signal"] = "USR1";
  auto n = start(tree({p}));
  auto a = pid_of("root/a");
  n->stop();
  REQUIRE(wait_until([&] { return sink->count(sup::event_kind::supervisor_stopped, "root") == 1; }));
  auto ea = sink->of(sup::event_kind::child_exited, "root/a");
  REQUIRE(ea.size() == 1);
  CHECK(ea[0].reason_class == sup::exit_class::shutdown);
  REQUIRE(ea[0].exit);
  CHECK(ea[0].exit->signal == SIGUSR1);
  CHECK(all_gone({a}));
}

TEST_CASE("stop_signal is validated") {
  for (auto good : {"SIGTERM", "TERM", "SIGINT", "INT", "SIGHUP", "SIGUSR1"}) {
    auto p = process_node("a", {"sleep", "1"});
    p["stop_signal"] = good;
    auto tc = parse_config(tree({p}));
    CHECK_MESSAGE(tc, good);
  }
  for (auto bad : {json("SIGFOO"), json(""), json(15), json("sigterm")}) {
    auto p = process_node("a", {"sleep", "1"});
    p["stop_signal"] = bad;
    auto tc = parse_config(tree({p}));
    REQUIRE_FALSE(tc);
    CHECK(is(tc.error(), errc::invalid_config));
    auto d = detail_of(tc.error());
    CHECK(d.find("root.children[0].stop_signal: expected a signal name") != std::string::npos);
  }
}

TEST_CASE_FIXTURE(events_fixture, "a process that ignores SIGTERM is killed after its shutdown timeout") {
  auto p = process_node("stubborn", {"sh", "-c", "trap '' TERM; exec sleep 60"});
  p["shutdown"] = 300;
  auto n = start(tree({p}));
  auto pid = pid_of("root/stubborn");
  // sh has set SIGTERM to ignored before exec: wait until sleep runs.
  REQUIRE(wait_until([&] { return comm(pid) == "sleep"; }));
  n->stop();
  REQUIRE(wait_until([&] { return sink->count(sup::event_kind::supervisor_stopped, "root") == 1; }));
  auto ev = sink->of(sup::event_kind::child_exited, "root/stubborn");
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].reason_class == sup::exit_class::killed);
  CHECK(ev[0].os_pid == pid);
  CHECK(wait_until([&] { return process_gone(pid); }, 10s));
}

TEST_CASE_FIXTURE(events_fixture, "one_for_all: the siblings of a SIGKILLed process exit with shutdown") {
  auto n = start(tree({{{"id", "grp"},
                        {"type", "supervisor"},
                        {"strategy", "one_for_all"},
                        {"intensity", 5},
                        {"children",
                         {process_node("a", {"sleep", "60"}), process_node("b", {"sleep", "60"}),
                          process_node("c", {"sleep", "60"})}}}}));
  auto a = pid_of("root/grp/a"), b = pid_of("root/grp/b"), c = pid_of("root/grp/c");
  ::kill(b, SIGKILL);
  REQUIRE(wait_until([&] { return sink->count(sup::event_kind::child_restarted, "root/grp/c") == 1; }));
  auto eb = sink->of(sup::event_kind::child_exited, "root/grp/b");
  REQUIRE(eb.size() == 1);
  CHECK(eb[0].reason_class == sup::exit_class::crash);
  CHECK(eb[0].os_pid == b);
  REQUIRE(eb[0].exit);
  CHECK(eb[0].exit->signal == 9);
  CHECK(eb[0].exit->signal_name == "SIGKILL");
  CHECK(eb[0].reason == "signal 9 (SIGKILL)");
  for (auto [path, pid] : {std::pair{"root/grp/a", a}, std::pair{"root/grp/c", c}}) {
    auto ev = sink->of(sup::event_kind::child_exited, path);
    REQUIRE(ev.size() == 1);
    CHECK_MESSAGE(ev[0].reason_class == sup::exit_class::shutdown, path, " ", ev[0].reason);
    CHECK(ev[0].os_pid == pid);
  }
  // Restarted in start order, each with a new pid.
  std::vector<std::string> restarted;
  for (auto& e : sink->snapshot())
    if (e.kind == sup::event_kind::child_restarted) {
      restarted.push_back(e.child_id);
      REQUIRE(e.os_pid);
      CHECK(*e.os_pid != a);
      CHECK(*e.os_pid != b);
      CHECK(*e.os_pid != c);
    }
  CHECK(restarted == std::vector<std::string>{"a", "b", "c"});
  CHECK(all_gone({a, b, c}));
  CHECK_FALSE(n->failure());
  n->stop();
}

TEST_CASE_FIXTURE(events_fixture, "worker events carry os_pid; a SIGKILLed worker's exit names the signal") {
  auto n = start(tree({{{"id", "solo"}, {"type", "worker"}}}));
  auto pid = pid_of("root/solo");
  CHECK(cmdline(pid).find("dspex_worker") != std::string::npos);
  ::kill(pid, SIGKILL);
  REQUIRE(wait_until([&] { return sink->count(sup::event_kind::child_restarted, "root/solo") == 1; }));
  auto ex = sink->of(sup::event_kind::child_exited, "root/solo");
  REQUIRE(ex.size() == 1);
  CHECK(ex[0].os_pid == pid);
  CHECK(ex[0].reason_class == sup::exit_class::crash);
  REQUIRE(ex[0].exit);
  CHECK(ex[0].exit->signal == 9);
  CHECK(ex[0].reason == "signal 9 (SIGKILL)");
  auto re = sink->of(sup::event_kind::child_restarted, "root/solo");
  REQUIRE(re[0].os_pid);
  CHECK(*re[0].os_pid != pid);
  CHECK(cmdline(*re[0].os_pid).find("dspex_worker") != std::string::npos);
  auto second = *re[0].os_pid;
  n->stop();
  REQUIRE(wait_until([&] { return sink->count(sup::event_kind::supervisor_stopped, "root") == 1; }));
  auto stopped = sink->of(sup::event_kind::child_exited, "root/solo");
  REQUIRE(stopped.size() == 2);
  CHECK(stopped[1].os_pid == second);
  CHECK(stopped[1].reason_class == sup::exit_class::shutdown);
  CHECK(all_gone({pid, second}));
}

TEST_CASE_FIXTURE(events_fixture, "a process exiting with code 3 gives exit_code 3") {
  auto p = process_node("three", {"sh", "-c", "exit 3"});
  p["restart"] = "temporary";
  auto n = start(tree({p}));
  REQUIRE(wait_until([&] { return sink->count(sup::event_kind::child_exited, "root/three") == 1; }));
  auto ev = sink->of(sup::event_kind::child_exited, "root/three")[0];
  CHECK(ev.reason_class == sup::exit_class::crash);
  REQUIRE(ev.exit);
  CHECK(ev.exit->exit_code == 3);
  CHECK_FALSE(ev.exit->signal);
  CHECK(ev.reason == "exit code 3");
  CHECK(ev.os_pid == pid_of("root/three"));
  n->stop();
}

TEST_CASE_FIXTURE(events_fixture, "node API: a root that gives up is reported with the path that escalated") {
  promise_box<root_failure> called;
  auto n = start(tree({process_node("steady", {"sleep", "60"}),
                       {{"id", "grp"},
                        {"type", "supervisor"},
                        {"intensity", 1},
                        {"children", {process_node("flaky", {"false"})}}}},
                      "one_for_one", 0));
  n->on_failure([&](const root_failure& f) { called.set(f); });
  auto steady = pid_of("root/steady");
  auto f = n->wait_failure(20s);
  REQUIRE(f);
  CHECK(f->path == "root/grp");
  CHECK(f->child == "flaky");
  CHECK(f->message == "root/grp reached its restart intensity (child flaky), escalated to root");
  REQUIRE(called.wait());
  CHECK(called.get().path == "root/grp");
  CHECK(called.count() == 1);
  CHECK(n->failure());
  // The root stopped everything before it went.
  CHECK(process_gone(steady));
  // Registered after the fact: called at once.
  promise_box<root_failure> late;
  n->on_failure([&](const root_failure& x) { late.set(x); });
  CHECK(late.count() == 1);
  n->stop();
}

TEST_CASE_FIXTURE(events_fixture, "node API: a clean stop() is no failure") {
  promise_box<root_failure> called;
  auto n = start(tree({process_node("a", {"sleep", "60"})}));
  n->on_failure([&](const root_failure& f) { called.set(f); });
  n->stop();
  CHECK_FALSE(n->wait_failure(2s));
  CHECK_FALSE(n->failure());
  CHECK(called.count() == 0);
}

} // TEST_SUITE

// -- the CLI ------------------------------------------------------------------

namespace {

struct cli_events_fixture {
  scratch_dir scratch{"events"};  // first: removed after all that uses it
  bridge::io_loop loop;
  std::string dir = scratch.path(), config, events, sock;

  cli_events_fixture() {
    config = dir + "/tree.json";
    events = dir + "/events.jsonl";
    sock = dir + "/control.sock";
    ::unlink(events.c_str());
  }

  std::vector<json> lines() {
    std::vector<json> out;
    std::ifstream in(events);
    std::string line;
    while (std::getline(in, line))
      out.push_back(json::parse(line));
    return out;
  }

  std::vector<json> matching(const std::string& event, const std::string& path) {
    std::vector<json> out;
    for (auto& l : lines())
      if (l["event"] == event && l["path"] == path)
        out.push_back(l);
    return out;
  }
};

} // namespace

TEST_SUITE("events") {

TEST_CASE_FIXTURE(cli_events_fixture, "dspex run --events: order, os_pid, exit_code, signal, plain detail") {
  auto three = process_node("c", {"sh", "-c", "exit 3"});
  three["restart"] = "temporary";
  json pool = {{"id", "pool_sup"}, {"type", "pool"}, {"name", "default"}, {"size", 1}};
  std::ofstream(config) << tree({process_node("a", {"sleep", "60"}),
                                 {{"id", "b"}, {"type", "worker"}},
                                 three, pool})
                             .dump(2);
  auto node = std::make_unique<cli_process>(
    loop, std::vector<std::string>{"run", config, "--events", events, "--control", sock});
  REQUIRE(wait_until([&] {
    return matching("child_started", "root/pool_sup").size() == 1
           && matching("child_exited", "root/c").size() == 1;
  }, 60s));
  std::vector<std::string> root_starts;
  for (auto& l : lines())
    if (l["event"] == "child_started" && l["path"].get<std::string>().rfind('/') == 4)
      root_starts.push_back(l["child"]);
  CHECK(root_starts == std::vector<std::string>{"a", "b", "c", "pool_sup"});

  auto a = matching("child_started", "root/a")[0];
  auto b = matching("child_started", "root/b")[0];
  auto w1 = matching("child_started", "root/pool_sup/workers/w1");
  REQUIRE(w1.size() == 1);
  REQUIRE(a.contains("os_pid"));
  REQUIRE(b.contains("os_pid"));
  REQUIRE(w1[0].contains("os_pid"));
  int apid = a["os_pid"].get<int>(), wpid = w1[0]["os_pid"].get<int>();
  CHECK(cmdline(apid).find("sleep 60") != std::string::npos);
  CHECK(cmdline(b["os_pid"].get<int>()).find("dspex_worker") != std::string::npos);
  CHECK_MESSAGE(cmdline(wpid).find("--worker-id w1") != std::string::npos, cmdline(wpid));
  CHECK_FALSE(matching("child_started", "root/pool_sup")[0].contains("os_pid"));

  auto c = matching("child_exited", "root/c")[0];
  CHECK(c["reason"] == "crash");
  CHECK(c["exit_code"] == 3);
  CHECK(c["detail"] == "exit code 3");
  CHECK(c["os_pid"] == matching("child_started", "root/c")[0]["os_pid"]);

  // SIGKILL the single worker: its exit names the signal, in plain text.
  int bpid = b["os_pid"].get<int>();
  ::kill(bpid, SIGKILL);
  REQUIRE(wait_until([&] { return matching("child_restarted", "root/b").size() == 1; }, 30s));
  auto bx = matching("child_exited", "root/b")[0];
  CHECK(bx["os_pid"] == bpid);
  CHECK(bx["reason"] == "crash");
  CHECK(bx["signal"] == json{{"number", 9}, {"name", "SIGKILL"}});
  CHECK(bx["detail"] == "signal 9 (SIGKILL)");
  auto b2 = matching("child_restarted", "root/b")[0];
  REQUIRE(b2.contains("os_pid"));
  CHECK(b2["os_pid"] != bpid);

  node->proc->signal(SIGTERM);
  REQUIRE(node->exited.wait(60s));
  CHECK(node->exited.get().code() == 0);
  auto ax = matching("child_exited", "root/a");
  REQUIRE(ax.size() == 1);
  CHECK(ax[0]["reason"] == "shutdown");
  CHECK(ax[0]["os_pid"] == a["os_pid"]);
  CHECK(ax[0]["signal"]["name"] == "SIGTERM");
  auto wx = matching("child_exited", "root/pool_sup/workers/w1");
  REQUIRE(wx.size() == 1);
  CHECK(wx[0]["reason"] == "shutdown");
  CHECK(wx[0]["os_pid"] == w1[0]["os_pid"]);
  auto out = node->output();
  CHECK_MESSAGE(out.find("unexpected message") == std::string::npos, out);
  CHECK(all_gone({apid, bpid, b2["os_pid"].get<int>(), wpid}));
}

TEST_CASE_FIXTURE(cli_events_fixture, "dspex run exits 3 by itself when the root gives up, and names the path") {
  std::ofstream(config) << tree({process_node("steady", {"sleep", "60"}),
                                 {{"id", "grp"},
                                  {"type", "supervisor"},
                                  {"intensity", 1},
                                  {"children", {process_node("flaky", {"false"})}}}},
                                "one_for_one", 0)
                             .dump(2);
  cli_process node(loop, {"run", config, "--events", events, "--control", sock});
  // No signal is sent: it must end on its own.
  REQUIRE(node.exited.wait(60s));
  CHECK(node.exited.get().code() == 3);
  auto out = node.output();
  CHECK_MESSAGE(out.find("dspex: root supervisor stopped: root/grp reached its restart intensity "
                         "(child flaky), escalated to root")
                  != std::string::npos,
                out);
  auto steady = matching("child_started", "root/steady");
  REQUIRE(steady.size() == 1);
  CHECK(process_gone(steady[0]["os_pid"].get<int>()));
  // intensity_reached names the child that tipped it (its path is the child's).
  auto ir = matching("intensity_reached", "root/grp/flaky");
  REQUIRE(ir.size() == 1);
  CHECK(ir[0]["child"] == "flaky");
  CHECK(matching("intensity_reached", "root/grp").size() == 1);
  CHECK(matching("supervisor_stopped", "root").size() == 1);
}

} // TEST_SUITE
