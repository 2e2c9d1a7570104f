// Embedding dspex in a C++ service: start a supervised tree in our own
// actor_system, call Python synchronously, call the pool from one of our own
// event-based actors, then stop (every worker process is reaped) and exit 0.
//
// Built against the installed package:
//   find_package(dspex REQUIRED)
//   target_link_libraries(embed PRIVATE dspex::dspex dspex::dspex_metrics)
#include <dspex/actors/adapters/adapter.hpp>
#include <dspex/actors/node/node.hpp>
#include <dspex/metrics/exporter.hpp>
#include <dspex/metrics/node_metrics.hpp>

#include <caf/all.hpp>

#include <cstdlib>
#include <iostream>

using namespace std::chrono_literals;
using dspex::json;

namespace {

// Reports a failure and turns it into the exit code.
int fail(const std::string& what, const caf::error& err) {
  std::cerr << "embed: " << what << " failed: " << dspex::describe(err) << '\n';
  return 1;
}

// A service actor of ours that talks to the pool asynchronously: on a
// question it configures its session's LM, creates a program and executes it,
// one reply after the other, and answers with the program's outputs. It
// never blocks: each step runs when the previous reply arrives.
caf::behavior asker(caf::event_based_actor* self, caf::actor pool) {
  return {
    [=](const std::string& question) -> caf::result<json> {
      auto rp = self->make_response_promise<json>();
      const std::string session = "actor-session";
      auto on_error = [rp](caf::error& err) mutable { rp.deliver(std::move(err)); };
      self->request(pool, 30s, dspex::exec_atom::value,
                    dspex::make_command("configure_lm", {{"provider", "mock"}}, session))
        .then(
          [=](json&) {
            self->request(pool, 30s, dspex::exec_atom::value,
                          dspex::make_command("create_program",
                                              {{"id", "qa"}, {"signature", "question -> answer"}},
                                              session))
              .then(
                [=](json&) {
                  self->request(pool, 30s, dspex::exec_atom::value,
                                dspex::make_command("execute_program",
                                                    {{"program_id", "qa"},
                                                     {"inputs", {{"question", question}}}},
                                                    session))
                    .then([=](json& reply) mutable { rp.deliver(reply["outputs"]); }, on_error);
                },
                on_error);
          },
          on_error);
      return rp;
    },
  };
}

} // namespace

int main() {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system sys{cfg};

  // The built-in default tree with a small pool.
  auto j = dspex::default_config();
  j["root"]["children"][1]["size"] = 2;
  auto tree = dspex::parse_config(j);
  if (!tree)
    return fail("parse_config", tree.error());

  // The worker finds its Python package through DSPEX_PYTHON_PATH; without
  // it, use the package installed beside the library we linked.
  dspex::node_options opts;
  auto env = std::getenv("DSPEX_PYTHON_PATH");
#ifdef EMBED_DSPEX_PYTHON_DIR
  if (!env || !*env)
    opts.python_path = EMBED_DSPEX_PYTHON_DIR;
#endif
  std::cout << "python package: " << (env && *env ? env : opts.python_path.c_str()) << '\n';

  auto started = dspex::node::start(sys, *tree, opts);
  if (!started)
    return fail("node::start", started.error());
  auto node = *started;
  std::cout << "node started in " << dspex::to_string(node->mode()) << " mode\n";

  // 1. Synchronous calls from this thread.
  auto r = node->execute_in_session("s1", "configure_lm", {{"provider", "mock"}});
  if (!r)
    return fail("configure_lm", r.error());
  r = node->execute_in_session("s1", "create_program", {{"signature", "question -> answer"}});
  if (!r)
    return fail("create_program", r.error());
  auto program_id = (*r)["program_id"].get<std::string>();
  r = node->execute_in_session("s1", "execute_program",
                               {{"program_id", program_id},
                                {"inputs", {{"question", "What is 2+2?"}}}});
  if (!r)
    return fail("execute_program", r.error());
  std::cout << "sync answer: " << (*r)["outputs"]["answer"].get<std::string>() << '\n';

  // A classified error: a program that does not exist.
  r = node->execute_in_session("s1", "execute_program", {{"program_id", "nope"}});
  if (r || !dspex::is(r.error(), dspex::errc::python_error))
    return fail("the missing-program check", r ? caf::error{} : r.error());
  std::cout << "classified error: " << dspex::describe(r.error()) << '\n';

  // 2. From our own event-based actor, asynchronously.
  auto client = sys.spawn(asker, node->target());
  {
    caf::scoped_actor self{sys};
    caf::error err;
    self->request(client, 60s, std::string("What is the capital of France?"))
      .receive([](json& outputs) { std::cout << "actor answer: " << outputs["answer"].get<std::string>() << '\n'; },
               [&](caf::error& e) { err = std::move(e); });
    self->send_exit(client, caf::exit_reason::user_shutdown);
    if (err)
      return fail("the actor's request", err);
  }

  // 3. The same through an adapter (python_pool here; DSPEX_ADAPTER=mock
  //    would answer without Python).
  auto adapter = dspex::select_adapter(dspex::adapter_sources::of(node));
  if (!adapter)
    return fail("select_adapter", adapter.error());
  auto listed = (*adapter)->list_programs("s1");
  if (!listed)
    return fail("list_programs", listed.error());
  std::cout << "adapter " << (*adapter)->name() << " lists " << (*listed)["total_count"]
            << " program(s) in s1\n";

  // 4. Our node's Prometheus endpoint (dspex::dspex_metrics), on a free
  //    loopback port, and the same families read in-process.
  auto exporter = dspex::metrics::exporter::listen("127.0.0.1:0");
  if (!exporter)
    return fail("metrics exporter", exporter.error());
  (*exporter)->serve(*node);
  double ok = -1;
  for (auto& f : dspex::metrics::node_families(node->status()))
    if (f.name == "dspex_requests_total")
      for (auto& m : f.metric)
        for (auto& l : m.label)
          if (l.name == "result" && l.value == "ok")
            ok = m.counter.value;
  std::cout << "metrics: " << ((*exporter)->port() > 0 ? "listening" : "no port")
            << ", requests ok > 0: " << (ok > 0 ? "yes" : "no") << '\n';
  exporter->reset();  // before the node stops: a scrape reads it

  node->stop();  // graceful: drain, stop the tree in reverse order, reap every process
  std::cout << "embed: ok\n";
  return 0;
}
