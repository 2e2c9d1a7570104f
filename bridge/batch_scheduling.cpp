#include <dspex/bridge/batch_scheduling.hpp>

#include <sched.h>

namespace dspex::bridge {

void enter_batch_scheduling() noexcept {
  sched_param sp{};
  sp.sched_priority = 0;  // the only priority SCHED_BATCH has
  ::sched_setscheduler(0, SCHED_BATCH, &sp);
}

} // namespace dspex::bridge
