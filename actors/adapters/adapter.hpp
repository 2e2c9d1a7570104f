// Adapters, as in DSPex: one synchronous interface to "programs" (a DSPy
// signature plus an LM) whatever serves them.
//
//   python_pool  a node in pool mode: node::execute_in_session, session affinity,
//                programs replayed onto replacement workers by the pool.
//   python_port  a node in single mode: one supervised worker (DSPex's PythonPort).
//   mock         pure C++, no Python: in-memory programs per session, the same
//                signature forms and validation messages as the worker, and the
//                worker's deterministic mock LM ("mock <field> for <inputs as
//                sorted JSON>"); execute_program without configure_lm fails as the
//                worker does: python_error RuntimeError "No LM is loaded". It
//                accepts the worker's providers (mock, openai) and answers with
//                the mock LM either way: it never touches the network.
//
// Every operation returns caf::expected<json>: the worker's result object, or
// a classified dspex error (errc; Python exceptions as python_error with their
// type, from the mock too). Sessions are strings; "" is the global namespace
// (a request without session_id). Adapters are thread-safe.
//
// Selection (select_adapter), first match wins: the DSPEX_ADAPTER environment
// variable, then adapter_options::name (from code or parse_adapter_options),
// then the nodes at hand (a pool node: python_pool; a single node:
// python_port; none: mock). Unknown names are invalid_config errors.
//
// Fallback cascade (adapter_options::fallback, OFF by default): python_pool ->
// python_port (only when a single-mode node is given) -> mock. A level's error
// moves the request to the next level only when it says "this level cannot
// serve" and the request did not run there or its effects died with the
// worker process (degrades()): unavailable, shutting_down, circuit_open,
// init_failed, worker_crashed, process_exited, protocol_error, and CAF's
// request_receiver_down (the pool or worker actor vanished mid-restart).
// Never caught: python_error and invalid_request (the program's own error
// would repeat anywhere; hiding it would mask bugs); command_timeout (the
// request may still be running: retrying doubles the wait and the side
// effects); checkout_timeout and pool_saturated (back-pressure: the caller
// should slow down, and piling overload onto one worker or answering it with
// mock output is worse). A reply served below the chosen level is marked:
// "degraded": true, "adapter": "<level>", "degraded_reason": "<first error>".
// Replies from the chosen level are returned untouched. Any other error stops
// the cascade and is returned as is (also from a lower level); when the last
// level cannot serve either, its error is returned. The cascade remembers the last
// configure_lm and each session's program definitions (in a session_book, the
// same owner a pool's registry uses: session_state.hpp), and replays them onto a
// level before using it, so a session that created a program on the pool can
// execute it degraded on the mock, and back on the pool once it recovers.
#pragma once

#include <dspex/actors/node/error.hpp>
#include <dspex/actors/node/messages.hpp>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace dspex {

class node;

// -- the interface ---------------------------------------------------------------

class adapter {
public:
  virtual ~adapter() = default;

  /// "python_pool", "python_port", "mock", or for a cascade its levels joined
  /// by '>' ("python_pool>mock").
  virtual std::string name() const = 0;

  /// args: {"signature": "q -> a" | {"inputs": [...], "outputs": [...]},
  /// "id"?: str, "description"?: str}. Result: {"program_id", "status":
  /// "created", "signature"}.
  virtual caf::expected<json> create_program(const std::string& session, json args) = 0;

  /// Result: {"outputs": {field: value}, "program_id", "lm"}.
  virtual caf::expected<json> execute_program(const std::string& session,
                                              const std::string& program_id, json inputs) = 0;

  /// Result: {"programs": [info...], "total_count": n}, in creation order.
  virtual caf::expected<json> list_programs(const std::string& session) = 0;

  /// Result: {"deleted": true, "program_id"}; python_error KeyError when absent.
  virtual caf::expected<json> delete_program(const std::string& session,
                                             const std::string& program_id) = 0;

  /// args: {"provider": "mock" | "openai", "model"?, "responses"?, ...}.
  virtual caf::expected<json> configure_lm(json args) = 0;

  /// {"status": "ok" | "degraded", "adapter", ...}, or why it cannot serve.
  virtual caf::expected<json> health() = 0;
};

using adapter_ptr = std::shared_ptr<adapter>;

// -- implementations -------------------------------------------------------------

/// Over a node in pool (or disabled) mode; a zero timeout means the worker's
/// default. invalid_config for a node in single mode (use python_port).
caf::expected<adapter_ptr> make_python_pool_adapter(std::shared_ptr<node> n,
                                                    std::chrono::milliseconds timeout = {});

/// Over a node in single (or disabled) mode; invalid_config for a pool node.
caf::expected<adapter_ptr> make_python_port_adapter(std::shared_ptr<node> n,
                                                    std::chrono::milliseconds timeout = {});

/// A fresh in-memory mock with no LM configured.
adapter_ptr make_mock_adapter();

/// The cascade over `levels` (the first is the chosen one; see the top of
/// this file). A single level is returned as is.
adapter_ptr make_fallback_adapter(std::vector<adapter_ptr> levels);

/// True when `err` moves a cascaded request to the next level.
bool degrades(const caf::error& err) noexcept;

// -- registry --------------------------------------------------------------------

/// The environment variable that overrides the configured adapter name.
inline constexpr const char* adapter_env_var = "DSPEX_ADAPTER";

/// The registered names, in cascade order.
const std::vector<std::string>& adapter_names();

/// The nodes an adapter may run on. Either may be empty.
struct adapter_sources {
  std::shared_ptr<node> pool;    ///< serves python_pool (pool or disabled mode)
  std::shared_ptr<node> single;  ///< serves python_port (single mode)

  /// Puts `n` in the slot its mode calls for (disabled counts as pool).
  static adapter_sources of(std::shared_ptr<node> n);
};

struct adapter_options {
  std::string name;             ///< empty: DSPEX_ADAPTER, else follow the sources
  bool fallback = false;        ///< the pool -> single -> mock cascade
  std::chrono::milliseconds timeout{0};  ///< per request; 0: the worker's default
};

/// From JSON {"name"?: str, "fallback"?: bool, "timeout_ms"?: int}. Unknown
/// keys and unknown names are invalid_config errors naming the place, e.g.
/// `adapter.name: expected one of python_pool | python_port | mock, found
/// string "pool"`.
caf::expected<adapter_options> parse_adapter_options(const json& j);

/// Exactly the adapter `name` (no environment, no cascade); invalid_config
/// for an unknown name or when `src` lacks the node it needs.
caf::expected<adapter_ptr> make_adapter(const std::string& name, const adapter_sources& src,
                                        std::chrono::milliseconds timeout = {});

/// Chooses by DSPEX_ADAPTER, then opts.name, then the sources (see the top of
/// this file); wraps the choice in the cascade when opts.fallback. In a
/// cascade a missing node is no error: its level answers `unavailable` and
/// the request moves on.
caf::expected<adapter_ptr> select_adapter(const adapter_sources& src,
                                          const adapter_options& opts = {});

} // namespace dspex
