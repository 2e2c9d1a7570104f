#include <dspex/supervision/events.hpp>

#include <caf/exit_reason.hpp>
#include <caf/message.hpp>

#include <dspex/supervision/errors.hpp>

namespace dspex::supervision {

namespace {

bool is_exit(const caf::error& reason, caf::exit_reason code) {
  return reason && reason.category() == caf::atom("exit")
         && reason.code() == static_cast<std::uint8_t>(code);
}

} // namespace

exit_class classify(const caf::error& reason) {
  if (!reason)
    return exit_class::normal;
  if (is_exit(reason, caf::exit_reason::user_shutdown))
    return exit_class::shutdown;
  if (is_exit(reason, caf::exit_reason::kill))
    return exit_class::killed;
  return exit_class::crash;
}

caf::error with_os_exit(caf::error reason, os_exit x) {
  if (!reason)
    return reason;
  auto ctx = reason.context();
  auto extra = caf::make_message(std::move(x));
  return caf::error{reason.code(), reason.category(),
                    ctx.empty() ? std::move(extra) : ctx + extra};
}

std::optional<os_exit> os_exit_of(const caf::error& reason) {
  if (!reason)
    return std::nullopt;
  auto& ctx = reason.context();
  if (ctx.empty() || !ctx.match_element<os_exit>(ctx.size() - 1))
    return std::nullopt;
  return ctx.get_as<os_exit>(ctx.size() - 1);
}

std::string render_reason(const caf::error& reason) {
  if (!reason)
    return "normal";
  auto full = reason.context();
  auto ex = os_exit_of(reason);
  // The context without an attached os_exit.
  auto ctx = ex ? full.take(full.size() - 1) : full;
  if (is_exit(reason, caf::exit_reason::user_shutdown)) {
    // OTP's {shutdown, Term}: keep the term.
    if (ctx.empty())
      return ex ? ex->text : "shutdown";
    if (ctx.match_elements<caf::error>())
      return "shutdown: " + render_reason(ctx.get_as<caf::error>(0));
    if (ctx.match_elements<std::string>())
      return "shutdown: " + ctx.get_as<std::string>(0);
  }
  if (is_exit(reason, caf::exit_reason::kill) && ctx.empty())
    return ex ? ex->text : "killed";
  if (reason.category() == supervision_category)
    return describe(caf::error{reason.code(), reason.category(), ctx});
  // Plain text, not CAF's error(10, 'dspex', ("...")): the detail string
  // that dspex's errors (and most others) carry first.
  if (!ctx.empty() && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  if (ex)
    return ex->text;
  return describe(reason);
}

std::string to_string(event_kind x) {
  switch (x) {
    case event_kind::child_started:
      return "child_started";
    case event_kind::child_exited:
      return "child_exited";
    case event_kind::child_restarted:
      return "child_restarted";
    case event_kind::child_start_failed:
      return "child_start_failed";
    case event_kind::intensity_reached:
      return "intensity_reached";
    case event_kind::supervisor_stopped:
      return "supervisor_stopped";
  }
  return "?";
}

std::string to_string(exit_class x) {
  switch (x) {
    case exit_class::normal:
      return "normal";
    case exit_class::shutdown:
      return "shutdown";
    case exit_class::killed:
      return "killed";
    case exit_class::crash:
      return "crash";
  }
  return "?";
}

std::string to_string(const supervision_event& x) {
  auto out = to_string(x.kind);
  out += ' ';
  out += x.path;
  if (x.kind != event_kind::child_started
      && x.kind != event_kind::child_restarted) {
    out += ' ';
    out += to_string(x.reason_class);
    if (!x.reason.empty() && x.reason != to_string(x.reason_class)) {
      out += ' ';
      out += x.reason;
    }
  }
  return out;
}

} // namespace dspex::supervision
