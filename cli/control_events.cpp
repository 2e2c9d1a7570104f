#include "control_events.hpp"
#include "control_request.hpp"

#include <caf/all.hpp>

#include <ctime>

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

} // namespace

json event_json(const supervision::supervision_event& ev) {
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

caf::actor spawn_event_forwarder(caf::actor_system& sys, std::function<void(std::string)> sink) {
  return sys.spawn([sink](caf::event_based_actor*) -> caf::behavior {
    return {[sink](supervision::supervision_event& ev) { sink(dump_line(event_json(ev))); }};
  });
}

} // namespace dspex::cli
