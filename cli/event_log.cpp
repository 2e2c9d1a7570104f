// `dspex run --events FILE`: one JSON object per line for every supervision
// event (control_events.hpp), in the order the supervisors emitted them
// (each line is written as its event arrives; nothing is asked of the child
// first).
#include "commands.hpp"
#include "control_events.hpp"

#include <dspex/actors/messages.hpp>
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

} // namespace

caf::actor spawn_event_log(caf::actor_system& sys, const std::string& path) {
  return sys.spawn(event_log, path);
}

} // namespace dspex::cli
