// The agent example, embedded: start the node of agent.json (an agent pool
// on a scripted mock LM and a tool pool), serve the agent's "add" tool from
// C++ (fn:add), run the agent once, print its steps, stop. `dspex run
// agent.json` runs the same pools with every tool in Python (README.md).
//
// Run from the repository root (the config's handler_paths are relative):
//   build/examples/agent/agent [examples/agent/agent.json]
#include <dspex/actors/node/node.hpp>

#include <caf/all.hpp>

#include <iostream>
#include <regex>

using namespace std::chrono_literals;
using dspex::json;

namespace {

int fail(const std::string& what, const caf::error& err) {
  std::cerr << "agent: " << what << " failed: " << dspex::describe(err) << '\n';
  return 1;
}

// The sum of the numbers in args.input ("2102650, 522250"). A host function
// answers through `reply`; this one at once, on the calling worker's actor
// thread, as it never blocks.
void add(json args, const dspex::host_call_info&, dspex::host_reply reply) {
  if (!args["input"].is_string())
    return reply(dspex::make_error(dspex::errc::invalid_request, "add: input must be a string"));
  const auto input = args["input"].get<std::string>();
  const std::regex number("-?[0-9]+");
  long long sum = 0;
  for (std::sregex_iterator it(input.begin(), input.end(), number), end; it != end; ++it)
    sum += std::stoll(it->str());
  reply(json(sum));
}

} // namespace

int main(int argc, char** argv) {
  auto tree = dspex::load_config(argc > 1 ? argv[1] : "examples/agent/agent.json");
  if (!tree)
    return fail("load_config", tree.error());
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto started = dspex::node::start(sys, *tree);
  if (!started)
    return fail("node::start", started.error());
  auto node = *started;

  if (auto err = node->register_function("add", add))
    return fail("register_function", err);
  // "search" stays on the tool pool; "add" comes here.
  auto r = node->execute_on("agent", "agent",
                            {{"question", "How many people live in Paris and Lyon together?"},
                             {"tools", {{"add", "fn:add"}}}},
                            "s1", 60s);
  if (!r)
    return fail("the agent", r.error());
  for (auto& step : (*r)["steps"])
    std::cout << step["action"].get<std::string>() << " -> "
              << (step["target"].is_string() ? step["target"].get<std::string>() : "no tool") << ": "
              << step["observation"].dump() << '\n';
  std::cout << "answer: " << (*r)["answer"].get<std::string>() << '\n';

  node->stop();  // drains, stops the tree, reaps every worker
  std::cout << "agent: ok\n";
  return 0;
}
