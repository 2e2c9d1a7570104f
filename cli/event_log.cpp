// `dspex run --events FILE`: one JSON object per line for every supervision
// event: ts, event, path, os_pid (when a process backs the child), reason.
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

struct event_log_state {
  std::shared_ptr<std::ofstream> out;
  static inline const char* name = "dspex.event_log";
};

caf::behavior event_log(caf::stateful_actor<event_log_state>* self, std::string path) {
  self->state.out = std::make_shared<std::ofstream>(path, std::ios::app);
  return {
    [self](supervision::supervision_event& ev) {
      json j = {{"ts", iso_time(ev.ts)},
                {"event", supervision::to_string(ev.kind)},
                {"path", ev.path},
                {"child", ev.child_id}};
      if (ev.kind == supervision::event_kind::child_exited
          || ev.kind == supervision::event_kind::child_start_failed
          || ev.kind == supervision::event_kind::supervisor_stopped) {
        j["reason"] = supervision::to_string(ev.reason_class);
        if (!ev.reason.empty())
          j["detail"] = ev.reason;
      }
      auto write = [self, j]() mutable {
        *self->state.out << j.dump() << '\n';
        self->state.out->flush();
      };
      // Ask a freshly started child which OS process backs it.
      auto child = caf::actor_cast<caf::actor>(ev.child);
      if (child && (ev.kind == supervision::event_kind::child_started
                    || ev.kind == supervision::event_kind::child_restarted)) {
        self->request(child, std::chrono::seconds(2), stats_atom::value)
          .then(
            [j, self](json& s) mutable {
              if (s.is_object() && s.contains("os_pid"))
                j["os_pid"] = s["os_pid"];
              *self->state.out << j.dump() << '\n';
              self->state.out->flush();
            },
            [write](caf::error&) mutable { write(); });
        return;
      }
      write();
    },
  };
}

} // namespace

caf::actor spawn_event_log(caf::actor_system& sys, const std::string& path) {
  return sys.spawn(event_log, path);
}

} // namespace dspex::cli
