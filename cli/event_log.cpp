// `dspex run --events FILE`: one JSON object per line for every supervision
// event (control_events.hpp), in the order the supervisors emitted them
// (each line is written as its event arrives; nothing is asked of the child
// first). The stderr log (log.hpp) writes the same fields as one logfmt line
// per event, at a level that says how bad the event is.
#include "commands.hpp"
#include "control_events.hpp"
#include "log.hpp"

#include <dspex/actors/node/messages.hpp>
#include <dspex/supervision/events.hpp>

#include <caf/all.hpp>

#include <fstream>
#include <memory>

namespace dspex::cli {

namespace {

struct event_log_state {
  std::shared_ptr<std::ofstream> out;
  static inline const char* name = "dspex.event_log";
};

caf::behavior event_log(caf::stateful_actor<event_log_state>* self, std::string path) {
  self->state.out = std::make_shared<std::ofstream>(path, std::ios::app);
  return {
    [self](supervision::supervision_event& ev) {
      *self->state.out << event_json(ev).dump() << '\n';
      self->state.out->flush();
    },
  };
}

// How bad an event is: a start or an orderly exit is routine (debug); a
// restart means something died (warn); a crash, a failed start and a
// supervisor that gave up are errors.
log_level level_of(const supervision::supervision_event& ev) {
  using supervision::event_kind;
  using supervision::exit_class;
  bool orderly = ev.reason_class == exit_class::normal || ev.reason_class == exit_class::shutdown;
  switch (ev.kind) {
    case event_kind::child_started: return log_level::debug;
    case event_kind::child_restarted: return log_level::warn;
    case event_kind::child_exited:
      return orderly ? log_level::debug
                     : ev.reason_class == exit_class::killed ? log_level::warn : log_level::error;
    case event_kind::child_start_failed: return log_level::error;
    case event_kind::intensity_reached: return log_level::critical;
    case event_kind::supervisor_stopped: return orderly ? log_level::info : log_level::error;
  }
  return log_level::info;
}

// logfmt: key=value, the value quoted when it holds a space, quote or '='.
std::string logfmt(const json& fields) {
  std::string out;
  // In this order (a json object is sorted); ts is the log line's own.
  for (const char* k : {"event", "path", "child", "os_pid", "reason", "exit_code", "signal",
                        "detail"}) {
    if (!fields.contains(k))
      continue;
    auto& v = fields[k];
    if ((v.is_string() && v.get<std::string>().empty())
        || (std::string(k) == "detail" && fields.value("reason", "") == v))
      continue;  // a supervisor's empty child; a detail that only repeats the reason
    std::string val = v.is_string()   ? v.get<std::string>()
                      : v.is_object() ? v.value("name", v.dump())
                                      : v.dump();
    if (val.empty() || val.find_first_of(" \"=\\") != std::string::npos) {
      std::string q = "\"";
      for (char c : val)
        q += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c == '\n' ? ' ' : c);
      val = q + "\"";
    }
    out += (out.empty() ? "" : " ") + std::string(k) + "=" + val;
  }
  return out;
}

caf::behavior event_logger(caf::event_based_actor*) {
  return {
    [](supervision::supervision_event& ev) {
      auto lv = level_of(ev);
      if (log_enabled(lv))
        log_line(lv, logfmt(event_json(ev)));
    },
  };
}

} // namespace

caf::actor spawn_event_log(caf::actor_system& sys, const std::string& path) {
  return sys.spawn(event_log, path);
}

caf::actor spawn_event_logger(caf::actor_system& sys) { return sys.spawn(event_logger); }

} // namespace dspex::cli
