#include <dspex/supervision/errors.hpp>

#include <caf/make_message.hpp>
#include <caf/message.hpp>

namespace dspex::supervision {

std::string to_string(supervision_errc x) {
  switch (x) {
    case supervision_errc::invalid_spec:
      return "invalid_spec";
    case supervision_errc::start_failed:
      return "start_failed";
    case supervision_errc::already_present:
      return "already_present";
    case supervision_errc::already_started:
      return "already_started";
    case supervision_errc::not_found:
      return "not_found";
    case supervision_errc::running:
      return "running";
    case supervision_errc::restarting:
      return "restarting";
    case supervision_errc::simple_one_for_one:
      return "simple_one_for_one";
    case supervision_errc::shutting_down:
      return "shutting_down";
  }
  return "supervision_errc(" + std::to_string(static_cast<int>(x)) + ")";
}

caf::error make_error(supervision_errc code) {
  return caf::error{static_cast<std::uint8_t>(code), supervision_category};
}

caf::error make_error(supervision_errc code, std::string detail) {
  return caf::error{static_cast<std::uint8_t>(code), supervision_category,
                    caf::make_message(std::move(detail))};
}

bool is(const caf::error& err, supervision_errc code) {
  return err && err.category() == supervision_category
         && err.code() == static_cast<std::uint8_t>(code);
}

std::string describe(const caf::error& err) {
  if (!err)
    return "none";
  if (err.category() == supervision_category) {
    auto out = to_string(static_cast<supervision_errc>(err.code()));
    auto& ctx = err.context();
    if (ctx.match_elements<std::string>())
      out += ": " + ctx.get_as<std::string>(0);
    else if (!ctx.empty())
      out += ": " + caf::to_string(ctx);
    return out;
  }
  return caf::to_string(err);
}

} // namespace dspex::supervision
