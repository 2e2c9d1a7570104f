#include <dspex/actors/node/error.hpp>

#include <caf/message.hpp>
#include <caf/sec.hpp>

namespace dspex {

namespace {

// Error types a worker uses for a request it refuses as the caller sent it:
// "invalid_request" (args it cannot parse), "invalid_args" (a built-in
// command's unknown argument key). Both are the caller's invalid_request.
bool callers_error(const std::string& type) noexcept {
  return type == "invalid_request" || type == "invalid_args";
}

} // namespace

const char* to_string(errc code) noexcept {
  switch (code) {
    case errc::checkout_timeout: return "checkout_timeout";
    case errc::command_timeout: return "command_timeout";
    case errc::pool_saturated: return "pool_saturated";
    case errc::worker_crashed: return "worker_crashed";
    case errc::protocol_error: return "protocol_error";
    case errc::python_error: return "python_error";
    case errc::shutting_down: return "shutting_down";
    case errc::circuit_open: return "circuit_open";
    case errc::init_failed: return "init_failed";
    case errc::process_exited: return "process_exited";
    case errc::invalid_request: return "invalid_request";
    case errc::unknown_session: return "unknown_session";
    case errc::duplicate_session: return "duplicate_session";
    case errc::invalid_config: return "invalid_config";
    case errc::unavailable: return "unavailable";
    case errc::node_down: return "node_down";
    case errc::resource_exhausted: return "resource_exhausted";
    case errc::result_too_deep: return "result_too_deep";
    case errc::cancelled: return "cancelled";
    case errc::out_of_memory: return "out_of_memory";
    case errc::cpu_limit: return "cpu_limit";
  }
  return "unknown";
}

caf::error make_error(errc code, std::string detail) {
  return caf::error(static_cast<std::uint8_t>(code), error_category,
                    caf::make_message(std::move(detail)));
}

std::optional<errc> code_of(const caf::error& err) noexcept {
  if (!err || err.category() != error_category)
    return std::nullopt;
  return static_cast<errc>(err.code());
}

std::string detail_of(const caf::error& err) {
  if (!code_of(err))
    return {};
  // The detail is the first element; more may follow (a process's exit
  // status, actors/process/detail/process_link.hpp).
  auto& ctx = err.context();
  if (!ctx.empty() && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return {};
}

caf::error make_python_error(const bridge::python_error& e) {
  nlohmann::json j = {{"type", e.type}, {"message", e.message}, {"traceback", e.traceback}};
  return make_error(errc::python_error, j.dump());
}

caf::error reply_error(const bridge::reply& rep) {
  if (!rep.too_deep.empty())
    return make_error(errc::result_too_deep, rep.too_deep);
  if (callers_error(rep.error.type))
    return make_error(errc::invalid_request, rep.error.message);
  if (rep.error.type == "out_of_memory")
    return make_error(errc::out_of_memory, rep.error.message);
  return make_python_error(rep.error);
}

const char* reply_class(const bridge::reply& rep) noexcept {
  if (!rep.too_deep.empty())
    return "result_too_deep";
  if (rep.success)
    return "ok";
  if (rep.error.type == "out_of_memory")
    return "out_of_memory";
  return callers_error(rep.error.type) ? "invalid_request" : "python_error";
}

std::optional<bridge::python_error> python_error_of(const caf::error& err) {
  if (!is(err, errc::python_error))
    return std::nullopt;
  auto j = nlohmann::json::parse(detail_of(err), nullptr, false);
  if (!j.is_object())
    return std::nullopt;
  return bridge::python_error{j.value("type", ""), j.value("message", ""),
                              j.value("traceback", "")};
}

caf::error classify(caf::error err) {
  if (!err || code_of(err) || err.category() != caf::atom("system"))
    return err;
  switch (static_cast<caf::sec>(err.code())) {
    case caf::sec::request_receiver_down:
      return make_error(errc::worker_crashed, "the worker went down as the request reached it");
    case caf::sec::request_timeout:
      return make_error(errc::command_timeout, "no reply before the caller's deadline");
    default:
      return err;
  }
}

std::string describe(const caf::error& err) {
  if (!err)
    return "none";
  if (auto code = code_of(err)) {
    std::string out = to_string(*code);
    if (auto pe = python_error_of(err))
      return out + ": " + pe->type + ": " + pe->message;
    auto d = detail_of(err);
    return d.empty() ? out : out + ": " + d;
  }
  return caf::to_string(err);
}

} // namespace dspex
