#include <dspex/actors/process/detail/process_link.hpp>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

namespace dspex {

void process_inbox::post(caf::message msg) {
  std::lock_guard<std::mutex> g(mx_);
  if (!bound_) {
    pending_.push_back(std::move(msg));
    return;
  }
  // Under the lock, so a post racing with bind() cannot overtake the backlog.
  if (auto hdl = caf::actor_cast<caf::actor>(owner_))
    caf::anon_send(hdl, std::move(msg));
}

void process_inbox::bind(const caf::actor& owner) {
  std::lock_guard<std::mutex> g(mx_);
  bound_ = true;
  owner_ = owner.address();
  auto backlog = std::move(pending_);
  pending_.clear();
  if (owner)
    for (auto& m : backlog)
      caf::anon_send(owner, std::move(m));
}

supervision::os_exit os_exit_from(bridge::exit_status s) {
  supervision::os_exit x;
  if (s.exited())
    x.exit_code = s.code();
  if (s.signaled()) {
    x.signal = s.signal();
    x.signal_name = bridge::signal_name(s.signal());
  }
  x.text = s.describe();
  return x;
}

caf::error with_exit_status(caf::error reason, bridge::exit_status s, const std::string& cause) {
  auto x = os_exit_from(s);
  if (!cause.empty())
    x.text += ": " + cause;
  return supervision::with_os_exit(std::move(reason), std::move(x));
}

} // namespace dspex
