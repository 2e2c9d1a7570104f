// `dspex run --events FILE`: one JSON object per line for every supervision
// event, in the order the supervisors emitted them (each line is written as
// its event arrives; nothing is asked of the child first):
//   ts, event, path, child,
//   os_pid     when an OS process backs the child (from the event itself),
//   reason     on exits, failed starts and supervisor stops: normal |
//              shutdown | killed | crash,
//   exit_code  or signal {"number": 9, "name": "SIGKILL"}, when the child's
//              process ended and its exit reason says how,
//   detail     plain text: "signal 9 (SIGKILL)", "exit code 3", or the
//              reason's own detail.
#include "commands.hpp"

#include <dspex/actors/messages.hpp>
#include <dspex/supervision/events.hpp>

#include <caf/all.hpp>

#include <fstream>
#include <memory>

namespace dspex::cli {

namespace {

std::string iso_time(std::chrono::system_clock::time_point tp) {
  using namespace std::chrono;
  auto t = system_clock::to_time_t(tp);
  auto ms = duration_cast<milliseconds>(tp.time_since_epoch()).count() % 1000;
  char buf[64];
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[80];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

json to_json(const supervision::supervision_event& ev) {
  using supervision::event_kind;
  json j = {{"ts", iso_time(ev.ts)},
            {"event", supervision::to_string(ev.kind)},
            {"path", ev.path},
            {"child", ev.child_id}};
  if (ev.os_pid)
    j["os_pid"] = *ev.os_pid;
  if (ev.kind == event_kind::child_exited || ev.kind == event_kind::child_start_failed
      || ev.kind == event_kind::supervisor_stopped) {
    j["reason"] = supervision::to_string(ev.reason_class);
    if (ev.exit) {
      if (ev.exit->exit_code)
        j["exit_code"] = *ev.exit->exit_code;
      if (ev.exit->signal)
        j["signal"] = {{"number", *ev.exit->signal}, {"name", ev.exit->signal_name}};
      j["detail"] = ev.exit->text;
    } else if (!ev.reason.empty()) {
      j["detail"] = ev.reason;
    }
  }
  return j;
}

struct event_log_state {
  std::shared_ptr<std::ofstream> out;
  static inline const char* name = "dspex.event_log";
};

caf::behavior event_log(caf::stateful_actor<event_log_state>* self, std::string path) {
  self->state.out = std::make_shared<std::ofstream>(path, std::ios::app);
  return {
    [self](supervision::supervision_event& ev) {
      *self->state.out << to_json(ev).dump() << '\n';
      self->state.out->flush();
    },
  };
}

} // namespace

caf::actor spawn_event_log(caf::actor_system& sys, const std::string& path) {
  return sys.spawn(event_log, path);
}

} // namespace dspex::cli
