#include <dspex/supervision/child_spec.hpp>

#include <dspex/supervision/errors.hpp>

namespace dspex::supervision {

shutdown_spec shutdown_spec::brutal_kill() {
  return {kind::brutal_kill, std::chrono::milliseconds{0}};
}

shutdown_spec shutdown_spec::timeout(std::chrono::milliseconds ms) {
  if (ms.count() < 0)
    ms = std::chrono::milliseconds{0};
  return {kind::timeout, ms};
}

shutdown_spec shutdown_spec::infinity() {
  return {kind::infinity, std::chrono::milliseconds{0}};
}

shutdown_spec shutdown_spec::resolve(child_type type) const {
  if (kind_ != kind::by_type)
    return *this;
  return type == child_type::supervisor ? infinity()
                                        : timeout(default_worker_shutdown);
}

caf::error validate(const child_spec& spec) {
  if (spec.id.empty())
    return make_error(supervision_errc::invalid_spec, "child id is empty");
  if (!spec.start && !spec.start_with_args)
    return make_error(supervision_errc::invalid_spec,
                      "child '" + spec.id + "' has no start function");
  if (spec.significant && spec.restart == restart_type::permanent)
    return make_error(supervision_errc::invalid_spec,
                      "child '" + spec.id
                        + "': a permanent child cannot be significant");
  if (spec.await_ready && spec.await_ready->count() < 0)
    return make_error(supervision_errc::invalid_spec,
                      "child '" + spec.id + "': negative await_ready");
  return caf::none;
}

std::string to_string(restart_type x) {
  switch (x) {
    case restart_type::permanent:
      return "permanent";
    case restart_type::transient:
      return "transient";
    case restart_type::temporary:
      return "temporary";
  }
  return "?";
}

std::string to_string(child_type x) {
  return x == child_type::supervisor ? "supervisor" : "worker";
}

std::string to_string(const shutdown_spec& x) {
  switch (x.how()) {
    case shutdown_spec::kind::by_type:
      return "by_type";
    case shutdown_spec::kind::brutal_kill:
      return "brutal_kill";
    case shutdown_spec::kind::timeout:
      return "timeout(" + std::to_string(x.time().count()) + "ms)";
    case shutdown_spec::kind::infinity:
      return "infinity";
  }
  return "?";
}

} // namespace dspex::supervision
