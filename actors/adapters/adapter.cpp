// python_pool and python_port: the adapter interface over a running node, and
// which errors move a cascaded request down a level. The mock lives in
// adapter_mock.cpp, the cascade in adapter_fallback.cpp, selection in
// adapter_registry.cpp.
#include <dspex/actors/adapters/adapter.hpp>

#include <dspex/actors/node/node.hpp>

#include <caf/sec.hpp>

namespace dspex {

namespace {

// Both Python adapters are the same calls on a node; they differ in the mode
// they accept and the name they report (DSPex's PythonPool and PythonPort).
class node_adapter final : public adapter {
public:
  node_adapter(std::string name, std::shared_ptr<node> n, std::chrono::milliseconds timeout)
    : name_(std::move(name)), node_(std::move(n)), timeout_(timeout) {}

  std::string name() const override { return name_; }

  caf::expected<json> create_program(const std::string& session, json args) override {
    if (args.is_null())
      args = json::object();
    if (!args.is_object())
      return make_error(errc::invalid_request, "create_program args must be a JSON object");
    return run(session, "create_program", std::move(args));
  }

  caf::expected<json> execute_program(const std::string& session, const std::string& program_id,
                                      json inputs) override {
    return run(session, "execute_program",
               json{{"program_id", program_id},
                    {"inputs", inputs.is_null() ? json::object() : std::move(inputs)}});
  }

  caf::expected<json> list_programs(const std::string& session) override {
    return run(session, "list_programs", json::object());
  }

  caf::expected<json> delete_program(const std::string& session,
                                     const std::string& program_id) override {
    return run(session, "delete_program", json{{"program_id", program_id}});
  }

  caf::expected<json> configure_lm(json args) override {
    if (args.is_null())
      args = json::object();
    if (!args.is_object())
      return make_error(errc::invalid_request, "configure_lm args must be a JSON object");
    return run({}, "configure_lm", std::move(args));
  }

  caf::expected<json> health() override {
    auto r = run({}, "ping", json::object());
    if (!r)
      return r;
    return json{{"status", "ok"},
                {"adapter", name_},
                {"mode", to_string(node_->mode())},
                {"worker", std::move(*r)}};
  }

private:
  caf::expected<json> run(const std::string& session, const char* command, json args) {
    if (!node_)
      return make_error(errc::unavailable, name_ + ": no node to run on");
    std::optional<std::string> sid;
    if (!session.empty())
      sid = session;
    return node_->execute(command, std::move(args), std::move(sid), timeout_);
  }

  std::string name_;
  std::shared_ptr<node> node_;
  std::chrono::milliseconds timeout_;
};

} // namespace

caf::expected<adapter_ptr> make_python_pool_adapter(std::shared_ptr<node> n,
                                                    std::chrono::milliseconds timeout) {
  if (n && n->mode() == bridge_mode::single)
    return make_error(errc::invalid_config,
                      "adapter python_pool needs a node in pool mode; this node runs in single "
                      "mode (use python_port)");
  return adapter_ptr{std::make_shared<node_adapter>("python_pool", std::move(n), timeout)};
}

caf::expected<adapter_ptr> make_python_port_adapter(std::shared_ptr<node> n,
                                                    std::chrono::milliseconds timeout) {
  if (n && (n->mode() == bridge_mode::pool || n->mode() == bridge_mode::auto_detect))
    return make_error(errc::invalid_config,
                      "adapter python_port needs a node in single mode; this node runs pools "
                      "(use python_pool)");
  return adapter_ptr{std::make_shared<node_adapter>("python_port", std::move(n), timeout)};
}

bool degrades(const caf::error& err) noexcept {
  if (!err)
    return false;
  if (err.category() == caf::atom("system"))
    return err.code() == static_cast<std::uint8_t>(caf::sec::request_receiver_down);
  auto code = code_of(err);
  if (!code)
    return false;
  switch (*code) {
    case errc::unavailable:
    case errc::shutting_down:
    case errc::circuit_open:
    case errc::init_failed:
    case errc::worker_crashed:
    case errc::process_exited:
    case errc::protocol_error:
    case errc::node_down:
      return true;
    default:
      return false;
  }
}

} // namespace dspex
