// The actor system configuration tests run on: what dspex ships
// (recommended_settings: the io scheduler, one thread that runs actors and
// the io loop), or with DSPEX_IO_THREAD=1 the io loop on its own thread.
#pragma once

#include <dspex/actors/node/detail/io_scheduler.hpp>
#include <dspex/actors/node/node.hpp>

#include <caf/actor_system_config.hpp>

#include <memory>

namespace dspex::test {

struct system_config : caf::actor_system_config {
  system_config() { recommended_settings(*this); }
};

} // namespace dspex::test
