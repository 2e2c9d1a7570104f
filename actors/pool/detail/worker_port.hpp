// The pool's own way to a worker's pipe.
//
// Why: a pooled request used to cross two actors on its way out, client ->
// pool -> worker actor -> pipe, and the worker actor's turn on the one
// scheduler thread came after whatever was queued before it. The pool now
// writes a request to the worker's process itself when nothing about the
// worker asks for its actor: the request goes into the worker's
// inflight_table (so the io thread answers it, and the worker's deadline
// timer, faults and replacement treat it like any other) and its frame
// into the pipe. The worker actor does not run for it at all.
//
// When the worker is not accepting (starting, in its timeout grace,
// adopted and not yet joined, retired, stopping, gone: inflight_table::
// set_accepting), or the request is one the worker must refuse (a string
// that is not UTF-8, args nested deeper than max_json_depth, a frame above
// max_frame_bytes), send() does nothing
// and returns false: the pool then sends the request to the worker actor as
// before, which holds, refuses or fails it with its classified error.
#pragma once

#include <dspex/actors/pool/detail/inflight_table.hpp>
#include <dspex/actors/node/messages.hpp>
#include <dspex/bridge/python_process.hpp>

#include <caf/actor_addr.hpp>
#include <caf/response_promise.hpp>

#include <chrono>
#include <memory>

namespace dspex {

class worker_port {
public:
  worker_port(std::shared_ptr<inflight_table> table, std::weak_ptr<bridge::python_process> proc,
              caf::actor_addr worker, std::chrono::milliseconds request_timeout,
              std::size_t max_json_depth, stream_limits stream_window);

  /// Writes the pooled request `req` (job `req.tag`) to the worker's
  /// process, its answer going to `rp` (moved from only on true).
  bool send(const command_request& req, caf::response_promise& rp);

private:
  std::shared_ptr<inflight_table> table_;
  // Weak, both: the worker actor owns its process (dropping it kills it)
  // and the pool must not keep either alive.
  std::weak_ptr<bridge::python_process> proc_;
  caf::actor_addr worker_;  // its deadline timer's target
  std::chrono::milliseconds request_timeout_;
  std::size_t max_json_depth_;  // the writer refuses deeper args
  stream_limits stream_window_;  // a stream's two windows (stream_credit.hpp)
};

} // namespace dspex

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<dspex::worker_port>)
