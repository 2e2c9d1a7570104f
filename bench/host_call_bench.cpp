#include <dspex/bench/host_call_bench.hpp>

#include <dspex/bench/python_peer.hpp>
#include <dspex/bench/targets.hpp>

#include <dspex/actors/node/node.hpp>
#include <dspex/actors/pool/call.hpp>

#include <caf/all.hpp>

#include <algorithm>
#include <future>
#include <iostream>
#include <limits>

namespace dspex::bench {

using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;
constexpr auto deadline = std::chrono::seconds(30);  // every request's, in the request

double ratio(double a, double b) { return b > 0 && a > 0 ? a / b : std::numeric_limits<double>::quiet_NaN(); }

// -- round-trip: a unary call, a request of fn: calls, one of pool: calls; repeat --------------

struct round_trips {
  latency_recorder unary, fn_call, pool_call;
  std::string error;
};

struct driver_state {
  caf::actor pool;
  command_request unary, fn_loop, pool_loop;
  int i = 0, warmup = 0, total = 0;
  std::int64_t t0 = 0;
  round_trips out;
  std::shared_ptr<std::promise<round_trips>> done;
  static inline const char* name = "dspex.bench.host_call_driver";
};

using driver = caf::stateful_actor<driver_state>;

void finish(driver* self, std::string error = {}) {
  self->state.out.error = std::move(error);
  self->state.done->set_value(std::move(self->state.out));
  self->quit();
}

// The handler's per-call times (bench_call_loop's answer) into `into`.
bool take_times(driver* self, const json& times, latency_recorder& into) {
  if (!times.is_array() || !std::all_of(times.begin(), times.end(), [](auto& ns) { return ns.is_number_integer(); }))
    return false;
  if (self->state.i >= self->state.warmup)
    for (auto& ns : times)
      into.add_ns(ns.get<std::int64_t>());
  return true;
}

void next_round(driver* self);

void loop_request(driver* self, bool fn) {
  auto& st = self->state;
  call(self, st.pool, fn ? st.fn_loop : st.pool_loop)
    .then(
      [self, fn](json& times) {
        auto& st = self->state;
        if (!take_times(self, times, fn ? st.out.fn_call : st.out.pool_call))
          return finish(self, "bench_call_loop answered " + times.dump());
        if (fn)
          return loop_request(self, false);
        ++st.i;
        next_round(self);
      },
      [self, fn](caf::error& e) { finish(self, std::string(fn ? "fn:" : "pool:") + " calls: " + describe(e)); });
}

void next_round(driver* self) {
  auto& st = self->state;
  if (st.i >= st.total)
    return finish(self);
  st.t0 = steady_ns();
  call(self, st.pool, st.unary)
    .then(
      [self](json&) {
        auto& st = self->state;
        if (st.i >= st.warmup)
          st.out.unary.add_ns(steady_ns() - st.t0);
        loop_request(self, true);
      },
      [self](caf::error& e) { finish(self, "unary: " + describe(e)); });
}

caf::behavior round_trip_driver(driver* self, caf::actor pool, command_request unary, command_request fn_loop,
                                command_request pool_loop, int warmup, int rounds,
                                std::shared_ptr<std::promise<round_trips>> done) {
  auto& st = self->state;
  st.pool = std::move(pool);
  st.unary = std::move(unary);
  st.fn_loop = std::move(fn_loop);
  st.pool_loop = std::move(pool_loop);
  st.warmup = warmup;
  st.total = warmup + rounds;
  st.done = std::move(done);
  next_round(self);
  return {[](caf::ok_atom) {}};  // no messages of its own: its work is in the replies it awaits
}

// -- the node: "default" (the callers) and "tools", both loading bench_cmds.py -----------------

caf::expected<std::shared_ptr<node>> start_two_pools(caf::actor_system& sys, const host_call_bench_options& o,
                                                     int callers, int tools) {
  const auto cmds = locate_peer_file("bench_cmds.py");
  if (cmds.empty())
    return make_error(errc::invalid_config, "bench_cmds.py not found (set DSPEX_BENCH_PEERS_DIR)");
  pool_setup s;
  s.size = callers;
  s.python = o.python;
  s.sched_batch = o.sched_batch;
  s.handler_paths = {cmds.substr(0, cmds.rfind('/'))};
  s.handlers = {"bench_cmds"};
  auto j = pool_config_json(s);
  auto& children = j["root"]["children"];
  for (std::size_t k = 0; k < children.size(); ++k)
    if (children[k].value("type", "") == "pool") {
      auto t = children[k];
      t["id"] = "tools_sup";
      t["name"] = "tools";
      t["size"] = tools;
      children.insert(children.begin() + static_cast<std::ptrdiff_t>(k) + 1, t);
      break;
    }
  auto cfg = parse_config(j);
  if (!cfg)
    return cfg.error();
  return node::start(sys, std::move(*cfg), bench_node_options());
}

json loop_args(const std::string& target, int n, const json& payload) {
  return json{{"target", target}, {"command", "bench_echo"}, {"args", payload}, {"n", n}};
}

class runner : public bench_steps {
public:
  runner(const host_call_bench_options& o, host_call_bench_result& r, progress_line* p, caf::actor_system& sys)
    : bench_steps("bench host_calls", r.failures, p), o_(o), r_(r), sys_(sys) {}

  std::shared_ptr<node> start(int callers, int tools, const std::string& what) {
    auto n = start_two_pools(sys_, o_, callers, tools);
    if (!n) {
      failed(what + ": the node did not start: " + describe(n.error()));
      return nullptr;
    }
    return *n;
  }

  void round_trip() {
    announce("host-call and pool-to-pool round trips against a unary round trip");
    auto n = start(1, 1, "round trip");
    if (!n)
      return;
    // fn:bench_echo answers as bench_echo does, at once on the caller's actor thread.
    auto err = n->register_function("bench_echo", [](json args, const host_call_info&, host_reply reply) {
      reply(json{{"payload", std::move(args["payload"])}});
    });
    const json payload{{"payload", std::string(o_.payload_bytes, 'x')}};
    auto answer = std::make_shared<std::promise<round_trips>>();
    auto got = answer->get_future();
    auto d = sys_.spawn(round_trip_driver, n->target(), make_command("bench_echo", payload, std::nullopt, deadline),
                        make_command("bench_call_loop", loop_args("fn:bench_echo", o_.calls, payload), std::nullopt,
                                     deadline),
                        make_command("bench_call_loop", loop_args("pool:tools", o_.calls, payload), std::nullopt,
                                     deadline),
                        o_.warmup, o_.rounds, answer);
    const auto limit = std::chrono::milliseconds(60000 + 10 * o_.calls * (o_.rounds + o_.warmup));
    if (err) {
      caf::anon_send_exit(d, caf::exit_reason::user_shutdown);
      failed("register_function: " + describe(err));
    } else if (got.wait_for(limit) != std::future_status::ready) {
      caf::anon_send_exit(d, caf::exit_reason::user_shutdown);
      failed("round trip: did not finish within " + std::to_string(limit.count() / 1000) + " s");
    } else if (auto rt = got.get(); !rt.error.empty()) {
      failed("round trip: " + rt.error);
    } else {
      r_.unary = std::move(rt.unary);
      r_.fn_call = std::move(rt.fn_call);
      r_.pool_call = std::move(rt.pool_call);
      done("unary p50 " + format_micros(r_.unary.summary().p50_us) + ", host call p50 " +
           format_micros(r_.fn_call.summary().p50_us) + ", pool-to-pool p50 " +
           format_micros(r_.pool_call.summary().p50_us));
    }
    n->stop();
  }

  void agents() {
    announce("agents: " + std::to_string(o_.agents) + " clients x " + std::to_string(o_.agent_rounds) +
             " requests, " + std::to_string(o_.tool_calls) + " tool calls each");
    auto n = start(o_.agent_workers, o_.tool_workers, "agents");
    if (!n)
      return;
    const json payload{{"payload", std::string(o_.payload_bytes, 'x')}};
    auto req = make_command("bench_call_loop", loop_args("pool:tools", o_.tool_calls, payload), std::nullopt,
                            deadline);
    r_.agents = run_actor_load(sys_, n->target(), req, o_.agents, 0ms, 0ms,
                               static_cast<std::uint64_t>(o_.agent_rounds));
    n->stop();
    r_.agents_ran = true;
    const auto sent = static_cast<std::uint64_t>(o_.agents) * static_cast<std::uint64_t>(o_.agent_rounds);
    const auto answered = r_.agents.total_ok + r_.agents.total_errors;
    r_.agent_hangs = sent > answered ? sent - answered : 0;
    if (r_.agents.total_errors || r_.agent_hangs)
      failed("agents: " + std::to_string(r_.agents.total_errors) + " errors, " + std::to_string(r_.agent_hangs) +
             " hangs (" + r_.agents.first_error + ")");
    done("agents: " + format_rate(r_.agents.requests_per_s) + ", p50 " + format_micros(r_.agents.summary.p50_us));
  }

private:
  const host_call_bench_options& o_;
  host_call_bench_result& r_;
  caf::actor_system& sys_;
};

} // namespace

// -- options ----------------------------------------------------------------------------------

host_call_bench_options host_call_bench_options::quick_defaults() {
  host_call_bench_options o;
  o.quick = true;
  o.rounds = 200;
  o.warmup = 20;
  o.agent_rounds = 3;
  return o;
}

bool host_call_bench_options::wants(const std::string& part) const {
  return std::find(parts.begin(), parts.end(), part) != parts.end();
}

// -- measurements -------------------------------------------------------------------------------

host_call_bench_result measure_host_calls(const host_call_bench_options& o, progress_line* progress) {
  host_call_bench_result r;
  r.options = o;
  const auto t0 = clock_type::now();
  r.load_before = load_average_1m();
  r.machine = machine_info(o.python);
  caf::actor_system_config cfg;
  dspex::recommended_settings(cfg);
  if (auto err = apply_caf_args(cfg, o.caf_args))
    r.failures.push_back("CAF options: " + caf::to_string(err));
  caf::actor_system sys{cfg};
  runner run(o, r, progress, sys);
  run.start_clock();
  try {
    if (o.wants("round-trip"))
      run.round_trip();
    if (o.wants("agents"))
      run.agents();
  } catch (const std::exception& e) {
    r.failures.push_back(std::string("dspex-bench host_calls aborted: ") + e.what());
  }
  r.load_after = load_average_1m();
  r.wall_seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  return r;
}

// -- the table ------------------------------------------------------------------------------------

void add_host_call_rows(report_table& t, const host_call_bench_result& r) {
  const auto& o = r.options;
  if (!r.unary.empty() && !r.fn_call.empty() && !r.pool_call.empty()) {
    t.section("host calls: 1 worker a pool, " + std::to_string(o.payload_bytes) + " B payload, " +
              std::to_string(r.unary.size()) + " rounds of 1 unary call (client actor) and " +
              std::to_string(o.calls) + " + " + std::to_string(o.calls) + " ctx.call (timed in the handler)");
    auto u = r.unary.summary(), f = r.fn_call.summary(), p = r.pool_call.summary();
    t.add({"unary round trip p50 (bench_echo, call)", format_micros(u.p50_us), "", "", "the floor here",
           verdict::floor, ""});
    double qf = ratio(f.p50_us, u.p50_us), qp = ratio(p.p50_us, u.p50_us);
    t.add({"host call p50 (ctx.call fn:bench_echo, a C++ function)", format_micros(f.p50_us),
           "unary " + format_micros(u.p50_us), format_ratio(qf),
           targets::at_most(targets::host_call_p50_vs_unary, "unary"),
           judge_at_most(qf, targets::host_call_p50_vs_unary), ""});
    t.add({"pool-to-pool call p50 (ctx.call pool:tools bench_echo)", format_micros(p.p50_us),
           "unary " + format_micros(u.p50_us), format_ratio(qp),
           targets::at_most(targets::pool_call_p50_vs_unary, "unary"),
           judge_at_most(qp, targets::pool_call_p50_vs_unary), ""});
    t.add({"host call p99 / pool-to-pool p99", format_micros(f.p99_us) + " / " + format_micros(p.p99_us),
           "unary " + format_micros(u.p99_us), "", "", verdict::info, ""});
  }
  if (r.agents_ran) {
    const auto& a = r.agents;
    t.section("agents: " + std::to_string(o.agents) + " clients x " + std::to_string(o.agent_rounds) +
              " requests, each " + std::to_string(o.tool_calls) + " ctx.call pool:tools; agent pool " +
              std::to_string(o.agent_workers) + " workers, tool pool " + std::to_string(o.tool_workers));
    t.add({"agent requests/s", format_rate(a.requests_per_s), "", "", "", verdict::info,
           format_fixed(a.requests_per_s * o.tool_calls, 0) + " tool calls/s"});
    t.add({"agent request p50 / p99", format_micros(a.summary.p50_us) + " / " + format_micros(a.summary.p99_us), "",
           "", "", verdict::info, ""});
    t.add({"errors", std::to_string(a.total_errors), "", "", "0", a.total_errors ? verdict::fail : verdict::pass,
           a.first_error});
    t.add({"hangs (unanswered 10 s past the deadline)", std::to_string(r.agent_hangs), "", "", "0",
           r.agent_hangs ? verdict::fail : verdict::pass, ""});
  }
}

json to_json(const host_call_bench_result& r) {
  const auto& o = r.options;
  auto lat = [](const latency_recorder& l) { return l.empty() ? json(nullptr) : to_json(l.summary()); };
  auto p50_ratio = [&](const latency_recorder& l) {
    return l.empty() || r.unary.empty() ? json(nullptr) : json(ratio(l.summary().p50_us, r.unary.summary().p50_us));
  };
  report_table t;
  add_host_call_rows(t, r);
  return json{{"machine", r.machine},
              {"load_average_1m_before", r.load_before},
              {"load_average_1m_after", r.load_after},
              {"options",
               {{"parts", o.parts},
                {"rounds", o.rounds},
                {"warmup", o.warmup},
                {"calls", o.calls},
                {"payload_bytes", o.payload_bytes},
                {"agent_workers", o.agent_workers},
                {"tool_workers", o.tool_workers},
                {"agents", o.agents},
                {"agent_rounds", o.agent_rounds},
                {"tool_calls", o.tool_calls},
                {"sched_batch", o.sched_batch},
                {"caf_args", o.caf_args},
                {"quick", o.quick}}},
              {"round_trip",
               {{"unary", lat(r.unary)},
                {"host_call", lat(r.fn_call)},
                {"pool_call", lat(r.pool_call)},
                {"host_call_ratio_p50", p50_ratio(r.fn_call)},
                {"pool_call_ratio_p50", p50_ratio(r.pool_call)}}},
              {"agents", r.agents_ran ? to_json(r.agents) : json(nullptr)},
              {"agent_hangs", r.agent_hangs},
              {"failures", r.failures},
              {"table", t.to_json()},
              {"wall_seconds", r.wall_seconds}};
}

int run_host_call_bench(const host_call_bench_options& o) {
  progress_line progress;
  print_bench_start("host_calls", o.parts, o.quick);
  auto r = measure_host_calls(o, &progress);
  progress.clear();
  report_table table(bench_title("host_calls", r.machine, r.load_before, r.load_after));
  add_host_call_rows(table, r);
  std::cout << '\n';
  table.print(std::cout);
  return write_report("dspex-bench host_calls", o.out_dir + "/host_calls.json", to_json(r), {}, r.wall_seconds,
                      r.failures)
           ? 0
           : 1;
}

} // namespace dspex::bench
