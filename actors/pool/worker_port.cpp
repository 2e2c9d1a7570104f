#include <dspex/actors/pool/detail/worker_port.hpp>

#include <caf/actor_cast.hpp>
#include <caf/send.hpp>

namespace dspex {

worker_port::worker_port(std::shared_ptr<inflight_table> table, std::weak_ptr<bridge::python_process> proc,
                         caf::actor_addr worker, std::chrono::milliseconds request_timeout,
                         std::size_t max_json_depth, stream_limits stream_window)
    : table_(std::move(table)), proc_(std::move(proc)), worker_(std::move(worker)),
      request_timeout_(request_timeout), max_json_depth_(max_json_depth),
      stream_window_(stream_window) {
}

bool worker_port::send(const command_request& req, caf::response_promise& rp) {
  auto proc = proc_.lock();
  auto worker = caf::actor_cast<caf::actor>(worker_);
  if (!proc || !worker || req.command.empty())
    return false;
  const auto id = table_->next_id();
  const auto timeout = req.timeout.count() > 0 ? req.timeout : request_timeout_;
  const auto window = req.sink ? stream_window_ : stream_limits{};
  std::string frame;
  if (!bridge::append_request_frame(frame, id, req.command, req.args, req.session_id, max_json_depth_,
                                    {static_cast<std::uint64_t>(timeout.count()), window.chunks, window.bytes})
      || !proc->frame_fits(frame.size()))
    return false;
  inflight_request entry{std::move(rp), false, true, req.tag, timeout,
                         deadline_book::clock::now() + timeout, req.ref, req.sink, stream_credit{window}, 0,
                         req.depth, req.session_id};
  std::optional<deadline_book::clock::time_point> arm;
  // In the table before the frame is written: the reply may come at once.
  if (!table_->add_if_accepting(id, entry, req.session_id.has_value(), arm)) {
    rp = std::move(entry.rp);
    return false;
  }
  proc->send_frame(std::move(frame));
  if (arm)  // the worker's own timer, as its arm_deadline would set it
    caf::delayed_anon_send(worker, deadline_book::until(*arm), deadline_atom::value, deadline_book::to_ns(*arm));
  return true;
}

} // namespace dspex
