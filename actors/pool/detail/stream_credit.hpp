// A stream's credit (protocol 2): the one rule for which chunks the host
// asks its caller to acknowledge.
//
// The worker may send chunk s while s <= acked + chunks AND the bytes it
// sent past chunk `acked` are below `bytes` (a chunk larger than that goes
// when nothing is outstanding, so it never deadlocks). The host must then
// ask for an ack once half of either window came since the chunk it last
// asked for: else the worker waits for credit and the host for chunks.
// Every way a chunk reaches a caller (a sink actor, node::stream, the
// control socket's lines, a remote_pool through its router, a pool_group)
// only echoes stream_chunk::ack, which this rule sets where the chunk
// enters the host (inflight_table): so they all follow it, none decides.
//
// Bytes are a chunk frame's JSON body, as the worker writes it and the host
// reads it (bridge::reply::bytes): both sides count the same thing. So one
// stream holds at most min(chunks, below bytes + one chunk) in the host.
#pragma once

#include <algorithm>
#include <cstdint>

namespace dspex {

/// The two windows a stream runs under (worker.stream_window and
/// worker.stream_window_bytes); chunks 0: not a stream.
struct stream_limits {
  std::uint32_t chunks = 0;
  std::uint64_t bytes = 0;  ///< 0: no byte window
};

/// The host's side of one stream's credit: counts the chunks it took since
/// the last one that asked for an ack.
class stream_credit {
public:
  stream_credit() = default;
  explicit stream_credit(stream_limits w) noexcept : w_(w) {}

  const stream_limits& limits() const noexcept { return w_; }

  /// A chunk whose frame body is `bytes` long came in: whether its caller
  /// must acknowledge it (stream_chunk::ack).
  bool take(std::uint64_t bytes) noexcept {
    ++chunks_;
    bytes_ += bytes;
    const bool by_chunks = chunks_ >= std::max<std::uint64_t>(1, w_.chunks / 2);
    const bool by_bytes = w_.bytes > 0 && bytes_ >= std::max<std::uint64_t>(1, w_.bytes / 2);
    if (!by_chunks && !by_bytes)
      return false;
    chunks_ = 0;
    bytes_ = 0;
    return true;
  }

private:
  stream_limits w_;
  std::uint64_t chunks_ = 0;  // since the last chunk that asked for an ack
  std::uint64_t bytes_ = 0;
};

} // namespace dspex
