// dspex: run supervised pools of Python workers from a config and watch them.
// Subcommands: run, config, status, exec, restart, stop, start, scale, events
// (benchmarks: dspex-bench, bench/).
#include "commands.hpp"
#include "control.hpp"
#include "hup_reload.hpp"
#include "log.hpp"
#include "systemd_notify.hpp"

#include <dspex/actors/node/config.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/bridge/descriptor_limit.hpp>
#include <dspex/bridge/json_limits.hpp>
#include <dspex/metrics/exporter.hpp>

#include <CLI/CLI.hpp>
#include <caf/all.hpp>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

using namespace dspex;

namespace {

// CAF's own options (--caf#..., --config-file=...) go to CAF, the rest to us.
void split_args(int argc, char** argv, std::vector<std::string>& ours,
                std::vector<std::string>& cafs) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--caf#", 0) == 0 || a.rfind("--config-file=", 0) == 0)
      cafs.push_back(a);
    else
      ours.push_back(a);
  }
}

// Exit codes of `dspex run` (README, "Exit codes"); the other subcommands
// use 0, 1 (the node answered with an error, or none answers) and 2.
constexpr int exit_clean = 0;         // stopped by SIGTERM / SIGINT / SIGQUIT (or the demo passed)
constexpr int exit_start_failed = 1;  // the tree did not start
constexpr int exit_usage = 2;         // bad command line, config or CAF option
constexpr int exit_root_stopped = 3;  // the root supervisor stopped by itself

int fail(const std::string& msg, int code = exit_usage) {
  std::fprintf(stderr, "dspex: %s\n", msg.c_str());
  return code;
}

// The signals `dspex run` takes itself (README "Signals", docs/security.md):
// blocked in every thread and read from a signalfd by the main thread, so
// none of them can kill the node by its default action. SIGINT, SIGTERM and
// SIGQUIT drain and stop; SIGHUP reloads every pool (hup_reload.hpp);
// SIGUSR1 and SIGUSR2 are logged and ignored. SIGPIPE is ignored process-wide (a write to a closed socket or
// pipe fails with EPIPE; children get it back at its default, see
// bridge/python_process.cpp).
sigset_t run_signals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2})
    sigaddset(&sigs, s);
  return sigs;
}

// Before any thread exists (CAF's, the io loop's, the control server's, the
// metrics listener's): threads inherit the mask of the thread that creates
// them, and a process-directed signal goes to any thread that does not
// block it. An embedder that waits for signals this way does the same.
sigset_t take_run_signals() {
  auto sigs = run_signals();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  struct sigaction ign{};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGPIPE, &ign, nullptr);
  return sigs;
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGQUIT: return "SIGQUIT";
    case SIGHUP: return "SIGHUP";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
  }
  return "signal";
}

// One signal taken: true when it stops the node (logged either way).
bool stops_node(int sig, std::uint32_t from_pid, cli::hup_reload& hup) {
  auto from = from_pid != 0 ? " from pid " + std::to_string(from_pid) : std::string();
  switch (sig) {
    case SIGINT:
    case SIGTERM:
    case SIGQUIT:
      std::fprintf(stderr, "dspex: %s received%s, draining and shutting down\n", signal_name(sig),
                   from.c_str());
      return true;
    case SIGHUP:
      hup.on_signal(from_pid);
      return false;
    default:
      std::fprintf(stderr, "dspex: %s received%s: ignored\n", signal_name(sig), from.c_str());
      return false;
  }
}

// systemd's STATUS= line for a serving node.
std::string serving_status(node& n) {
  auto st = n.status();
  std::size_t workers = 0, pools = 0;
  for (auto& [name, p] : st["pools"].items())
    if (p.is_object()) {
      ++pools;
      workers += p.value("workers", std::size_t{0});
    }
  return "serving: " + std::to_string(workers) + " workers in " + std::to_string(pools)
         + " pools (mode " + to_string(n.mode()) + ")";
}

// Blocks until SIGINT / SIGTERM / SIGQUIT (run_signals, already blocked in
// every thread) or until the root supervisor stops by itself, whichever
// comes first; the other signals of run_signals are logged on the way.
// Returns the exit code. signalfd + an eventfd, so that one poll waits for
// both.
int serve_until_stopped(const sigset_t& sigs, node& n, cli::hup_reload& hup) {
  // Called once the pools are warm and the control socket listens.
  cli::systemd_notifier systemd;
  if (systemd.active())
    systemd.ready(serving_status(n));
  auto watchdog_ms = static_cast<int>(systemd.watchdog_interval().count());
  // Each descriptor closes with its last holder: the eventfd lives on in the
  // failure callback until stop() drops it, so a late call never writes to a
  // closed (or reused) descriptor.
  auto fd_owner = [](int fd) {
    return std::shared_ptr<int>(new int(fd), [](int* p) {
      if (*p >= 0)
        ::close(*p);
      delete p;
    });
  };
  auto sfd_hold = fd_owner(::signalfd(-1, &sigs, SFD_CLOEXEC));
  auto efd_hold = fd_owner(::eventfd(0, EFD_CLOEXEC));
  int sfd = *sfd_hold, efd = *efd_hold;
  if (sfd < 0 || efd < 0) {  // cannot happen on Linux >= 2.6.27; keep serving on sigwait
    for (;;) {
      siginfo_t info{};
      if (sigwaitinfo(&sigs, &info) < 0)
        continue;  // EINTR
      if (stops_node(info.si_signo, static_cast<std::uint32_t>(info.si_pid), hup))
        break;
    }
    systemd.stopping("shutting down");
    return exit_clean;
  }
  n.on_failure([efd_hold](const root_failure&) {
    std::uint64_t one = 1;
    [[maybe_unused]] auto r = ::write(*efd_hold, &one, sizeof one);
  });
  pollfd fds[2] = {{sfd, POLLIN, 0}, {efd, POLLIN, 0}};
  for (;;) {
    int r = ::poll(fds, 2, watchdog_ms > 0 ? watchdog_ms : -1);
    if (r == 0) {
      systemd.watchdog();  // this thread and the root are alive (a failure wakes the poll)
      continue;
    }
    if (r < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    if (fds[1].revents & POLLIN)
      break;  // the root stopped by itself
    if (!(fds[0].revents & POLLIN))
      break;
    // A read takes every pending signal (one record each); a signal that
    // stops the node ends the loop, the others are logged and serving goes on.
    signalfd_siginfo infos[8];
    auto got = ::read(sfd, infos, sizeof infos);
    bool stop = false;
    for (ssize_t i = 0; got > 0 && i < got / static_cast<ssize_t>(sizeof infos[0]); ++i)
      stop = stops_node(static_cast<int>(infos[i].ssi_signo), infos[i].ssi_pid, hup) || stop;
    if (stop) {
      systemd.stopping("shutting down");
      return exit_clean;
    }
  }
  auto f = n.failure();
  std::fprintf(stderr, "dspex: root supervisor stopped: %s\n",
               f ? f->message.c_str() : "reason unknown");
  systemd.stopping("root supervisor stopped: " + (f ? f->message : std::string("reason unknown")));
  return exit_root_stopped;
}

// Operations options of `dspex run` (README, "Operations").
struct ops_options {
  std::string metrics;    // --metrics ADDR: overrides config metrics.listen
  std::string log_level;  // --log-level: overrides config log_level
};

// --listen / --insecure (run) and --node / --tls-* (status, exec).
struct net_args {
  std::string listen, node;
  bool insecure = false;
  tls_options tls;
};

int cmd_run(int argc, char** argv, const std::vector<std::string>& cafs,
            const std::string& config_path, bool demo, const std::string& events_path,
            const std::string& control_path, const ops_options& ops, const net_args& net) {
  // First of all: no thread exists yet (take_run_signals).
  auto sigs = take_run_signals();
  caf::expected<tree_config> cfg = config_path.empty() ? parse_config(default_config())
                                                       : load_config(config_path);
  if (!cfg)
    return fail("invalid config:\n" + detail_of(cfg.error()));
  std::string metrics_listen = cfg->metrics_listen;
  if (!ops.metrics.empty()) {
    auto addr = parse_listen_address(ops.metrics);
    if (!addr)
      return fail("--metrics: " + detail_of(addr.error()));
    metrics_listen = *addr;
  }
  if (!cli::set_log_level(ops.log_level.empty() ? cfg->log_level : ops.log_level))
    return fail("--log-level: expected trace | debug | info | warn | error | critical | off, found "
                + ops.log_level);
  if (!net.listen.empty())
    cfg->listen = net.listen;
  cfg->insecure = cfg->insecure || net.insecure;
  if (auto why = check_listen(*cfg); !why.empty())
    return fail("--listen " + cfg->listen + ": " + why);

  // Every connection and worker pipe is a descriptor: take the hard limit.
  std::fprintf(stderr, "dspex: %s\n", bridge::raise_descriptor_limit().describe().c_str());

  caf::actor_system_config sys_cfg;
  recommended_settings(sys_cfg);
  if (auto err = network_settings(sys_cfg, *cfg))
    return fail("invalid config:\n" + detail_of(err));
  std::vector<char*> caf_argv{argv[0]};
  for (auto& a : cafs)
    caf_argv.push_back(const_cast<char*>(a.c_str()));
  (void)argc;
  if (auto err = sys_cfg.parse(static_cast<int>(caf_argv.size()), caf_argv.data()))
    return fail("CAF configuration: " + caf::to_string(err));
  caf::actor_system sys{sys_cfg};

  // One node per control path: claim it before any worker starts (control.hpp).
  cli::control_socket control_sock;
  if (!demo) {
    control_sock = cli::control_socket::claim(control_path.empty() ? cli::default_control_path()
                                                                   : control_path);
    if (control_sock.in_use())
      return fail(control_sock.error() + "; not starting a second one", 1);
    if (!control_sock.listening())
      std::fprintf(stderr, "dspex: control socket off: %s\n", control_sock.error().c_str());
  }

  // Metrics asked for are not optional: a port in use fails before any worker starts.
  std::unique_ptr<metrics::exporter> exporter;
  if (!metrics_listen.empty()) {
    auto ex = metrics::exporter::listen(metrics_listen, cfg->metrics);
    if (!ex)
      return fail(describe(ex.error()), exit_start_failed);
    exporter = std::move(*ex);
  }

  auto listen_text = cfg->listen;
  auto listen_tls = cfg->tls.enabled();
  node_options opts;
  if (cli::log_enabled(cli::log_level::critical))
    opts.subscribers.push_back(cli::spawn_event_logger(sys));
  if (!events_path.empty())
    opts.subscribers.push_back(cli::spawn_event_log(sys, events_path));
  auto n = node::start(sys, std::move(*cfg), opts);
  if (!n) {
    for (auto& s : opts.subscribers)
      caf::anon_send_exit(s, caf::exit_reason::kill);
    return fail("the tree did not start: " + describe(n.error()), exit_start_failed);
  }
  if (!(*n)->mode_message().empty())
    std::fprintf(stderr, "dspex: %s\n", (*n)->mode_message().c_str());
  if (exporter) {
    exporter->serve(**n);
    std::fprintf(stderr, "dspex: metrics on %s\n", exporter->url().c_str());
  }
  int rc = exit_clean;
  if (demo) {
    rc = cli::run_demo(sys, **n);
  } else {
    cli::control_server control(**n, std::move(control_sock));
    std::fprintf(stderr, "dspex: running (mode %s, control %s); SIGTERM or Ctrl-C stops\n",
                 to_string((*n)->mode()), control.listening() ? control.path().c_str() : "off");
    if ((*n)->listen_port() != 0)
      std::fprintf(stderr, "dspex: listening on %s, port %u (%s)\n", listen_text.c_str(),
                   unsigned((*n)->listen_port()), listen_tls ? "tls" : "plain");
    cli::hup_reload hup(**n);
    rc = serve_until_stopped(sigs, **n, hup);
    // Drain with the control socket still open, so that requests in flight
    // on it get their replies: node calls (status...) are refused from now
    // on, execs are answered by the draining pools. The socket file goes
    // when `control` does.
    control.drain();
    exporter.reset();  // a scrape reads the node: the endpoint goes first
    (*n)->stop();
    hup.join();  // a reload in progress ends with the node
  }
  exporter.reset();
  (*n)->stop();
  n->reset();
  for (auto& s : opts.subscribers)
    caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
  if (demo)
    std::printf("\nshut down cleanly.\n");
  return rc;
}

} // namespace

int main(int argc, char** argv) {
  std::vector<std::string> ours, cafs;
  split_args(argc, argv, ours, cafs);

  CLI::App app{"dspex: supervised pools of Python workers under an OTP-style tree"};
  app.require_subcommand(0, 1);  // none is caught after parsing: an unknown word is "not expected"

  auto run = app.add_subcommand("run", "start the tree and serve until SIGTERM/SIGINT");
  std::string config_path, events_path, control_path;
  bool demo = false;
  run->add_option("config", config_path, "JSON config file (default: the built-in config)");
  run->add_flag("--demo", demo, "run the demo workload once the tree is up, then shut down");
  run->add_option("--events", events_path, "append every supervision event as a JSON line");
  run->add_option("--control", control_path, "control socket path (default /tmp/dspex-UID/default.sock)");
  ops_options ops;
  run->add_option("--metrics", ops.metrics,
                  "serve Prometheus /metrics on HOST:PORT (or PORT, on 127.0.0.1)");
  run->add_option("--log-level", ops.log_level,
                  "stderr log of supervision events: trace debug info warn error critical off "
                  "(default: config log_level, info)");
  net_args net;
  run->add_option("--listen", net.listen, "serve remote nodes at HOST:PORT (config listen)");
  run->add_flag("--insecure", net.insecure, "allow a listen off loopback without TLS (README)");
  auto remote_opts = [&net](CLI::App* sub) {
    sub->add_option("--node", net.node, "talk to the node listening at HOST:PORT instead");
    sub->add_option("--tls-certificate", net.tls.certificate, "with --node: PEM certificate");
    sub->add_option("--tls-key", net.tls.key, "with --node: PEM private key");
    sub->add_option("--tls-cafile", net.tls.cafile, "with --node: PEM CA of the node");
  };

  auto config = app.add_subcommand("config", "print the default config or check one");
  bool print_default = false;
  std::string check_path;
  config->add_flag("--default", print_default, "print the built-in default config");
  config->add_option("--check", check_path, "validate a config file");

  auto status = app.add_subcommand("status", "show the tree and metrics of a running node");
  bool as_json = false;
  std::string status_control;
  status->add_flag("--json", as_json, "machine-readable output");
  status->add_option("--control", status_control, "control socket path");
  remote_opts(status);
  bool watch = false;
  int watch_interval = 1000, watch_count = 0;
  status->add_flag("--watch", watch, "refresh until interrupted (in place on a terminal)");
  status->add_option("--interval-ms", watch_interval, "--watch: time between refreshes")
    ->check(CLI::Range(10, 3600000));
  status->add_option("--count", watch_count, "--watch: stop after N refreshes (0: never)")
    ->check(CLI::NonNegativeNumber);

  // One child of the tree, as supervisorctl: restart | stop | start PATH.
  struct child_cmd {
    CLI::App* app;
    std::string path, control;
  };
  std::vector<std::pair<std::string, child_cmd>> child_cmds;
  for (auto [name, help] : {std::pair{"restart", "restart one child of a running node's tree"},
                            std::pair{"stop", "stop one child; it stays stopped until start"},
                            std::pair{"start", "start a stopped child again"}})
    child_cmds.emplace_back(name, child_cmd{app.add_subcommand(name, help), {}, {}});
  for (auto& [name, c] : child_cmds) {
    c.app->add_option("path", c.path, "the child's path, as root/pool_sup/workers/w1")->required();
    c.app->add_option("--control", c.control, "control socket path");
  }

  auto scale = app.add_subcommand("scale", "resize a running node's pool; no request fails");
  std::string scale_pool, scale_control;
  long long scale_size = 0;
  scale->add_option("pool", scale_pool, "the pool's name")->required();
  scale->add_option("size", scale_size, "its new number of workers (1 to 4096)")->required();
  scale->add_option("--control", scale_control, "control socket path");

  auto reload = app.add_subcommand(
    "reload", "rolling reload of a running node's pool: new code, every worker replaced; no request fails");
  std::string reload_pool, reload_control;
  long long reload_surge = 1;
  reload->add_option("pool", reload_pool, "the pool's name")->required();
  reload->add_option("--surge", reload_surge, "workers replaced at a time (1 to the pool's size; default 1)");
  reload->add_option("--control", reload_control, "control socket path");

  auto events = app.add_subcommand("events", "stream a running node's supervision events");
  bool follow = false;
  int events_count = 0;
  std::string events_control;
  events->add_flag("--follow", follow, "stream events as JSON lines as they happen (required)");
  events->add_option("--count", events_count,
                     "stop after N event lines (0: never); a restart of one child is two "
                     "events: child_exited, then child_started")
    ->check(CLI::NonNegativeNumber);
  events->add_option("--control", events_control, "control socket path");

  auto exec = app.add_subcommand("exec", "run one command against a running node");
  std::string exec_cmd, exec_args = "{}", exec_session, exec_control, exec_pool;
  int exec_timeout = 0;
  bool exec_compact = false;
  exec->add_option("command", exec_cmd, "command name")->required();
  exec->add_option("args", exec_args, "JSON object of arguments");
  exec->add_option("--session", exec_session, "session id");
  exec->add_option("--timeout-ms", exec_timeout, "request timeout");
  exec->add_option("--control", exec_control, "control socket path");
  exec->add_option("--pool", exec_pool, "the pool (or remote_pool) by name (default: the first)");
  exec->add_flag("--compact", exec_compact,
                 "print the reply as one line of JSON (default: indented over several lines)");
  bool exec_stream = false;
  exec->add_flag("--stream", exec_stream,
                 "print each chunk the handler yields as one line of JSON as it arrives, then "
                 "the reply (not with --node)");
  exec->footer("Ctrl-C or SIGTERM closes the connection, and the node cancels the request.\n");
  remote_opts(exec);

  std::reverse(ours.begin(), ours.end());
  try {
    app.parse(ours);
    if (app.get_subcommands().empty())
      throw CLI::RequiredError("A subcommand");
  } catch (const CLI::ParseError& e) {
    auto code = app.exit(e);  // prints help or the usage error
    return code == 0 ? 0 : exit_usage;
  }

  if (*run)
    return cmd_run(argc, argv, cafs, config_path, demo, events_path, control_path, ops, net);
  if (*config) {
    if (!check_path.empty()) {
      auto c = load_config(check_path);
      if (!c)
        return fail("invalid config:\n" + detail_of(c.error()));
      std::printf("%s: ok\n", check_path.c_str());
      return 0;
    }
    std::printf("%s\n", default_config().dump(2).c_str());
    return 0;
  }
  auto control_of = [](const std::string& p) {
    return p.empty() ? cli::default_control_path() : p;
  };
  for (auto& [name, c] : child_cmds)
    if (*c.app)
      return cli::control_child(control_of(c.control), name, c.path);
  if (*scale)
    return cli::control_scale(control_of(scale_control), scale_pool, scale_size);
  if (*reload)
    return cli::control_reload(control_of(reload_control), reload_pool, reload_surge);
  if (*events) {
    if (!follow)
      return fail("events needs --follow (the node keeps no history of events; "
                  "dspex run --events FILE writes one)");
    return cli::follow_events(control_of(events_control), events_count);
  }
  if (*status && watch)
    return cli::watch_status(control_of(status_control), as_json, watch_interval, watch_count);
  if (*status) {
    auto r = !net.node.empty()
               ? cli::remote_status(net.node, net.tls)
               : cli::control_call(status_control.empty() ? cli::default_control_path()
                                                          : status_control,
                                   json{{"op", "status"}});
    if (r.contains("error"))
      return cli::report_error(r);
    if (as_json)
      std::printf("%s\n", r.dump(2).c_str());
    else
      cli::print_status(r);
    return 0;
  }
  if (*exec) {
    // No node takes args deeper than the limit, and copying and writing
    // them here would recurse that deep: refused before the parse, as a
    // node would refuse them.
    if (bridge::text_depth_exceeds(exec_args, bridge::max_json_depth_limit))
      return cli::print_reply(
        cli::error_reply("invalid_request", bridge::depth_message("the args", bridge::max_json_depth_limit)
                                              + "; no node accepts more"),
        exec_compact);
    auto args = json::parse(exec_args, nullptr, false);
    if (!args.is_object())
      return fail("args must be a JSON object, found: " + exec_args);
    json req = {{"op", "exec"}, {"command", exec_cmd}, {"args", args}, {"timeout_ms", exec_timeout}};
    req["session_id"] = exec_session.empty() ? json(nullptr) : json(exec_session);
    if (!exec_pool.empty())
      req["pool"] = exec_pool;
    if (exec_stream && !net.node.empty())
      return fail("--stream cannot be used with --node: a remote node's streams are not "
                  "reachable from the command line yet (use the node's control socket)");
    if (exec_stream) {
      req["stream"] = true;
      return cli::stream_exec(exec_control.empty() ? cli::default_control_path() : exec_control,
                              req, exec_compact);
    }
    auto r = !net.node.empty()
               ? cli::remote_exec(net.node, net.tls,
                                  make_command(exec_cmd, args,
                                               exec_session.empty()
                                                 ? std::nullopt
                                                 : std::optional<std::string>(exec_session),
                                               std::chrono::milliseconds(exec_timeout)),
                                  exec_pool)
               : cli::control_call(exec_control.empty() ? cli::default_control_path()
                                                        : exec_control,
                                   req);
    return cli::print_reply(r, exec_compact);
  }
  return 0;
}
