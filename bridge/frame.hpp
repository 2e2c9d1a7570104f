// Frames of the wire protocol: a 4-byte big-endian length, then the body
// (UTF-8 JSON), as Erlang's {packet, 4}. The decoder is incremental: feed it
// whatever a read returned, one byte or many frames, and it hands back every
// frame that is complete.
//
// The decoder never trusts a length: a header announcing more than
// max_frame_bytes fails the stream at once, before anything is allocated for
// it, because a worker that sent such a header cannot be resynchronised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dspex::bridge {

/// 64 MiB: large enough for any sane payload, small enough that a corrupt
/// header cannot make the host allocate gigabytes.
inline constexpr std::size_t default_max_frame_bytes = 64u * 1024u * 1024u;

/// Bytes of the length prefix.
inline constexpr std::size_t frame_header_bytes = 4;

/// Writes the big-endian length prefix of a body of `n` bytes at `at`.
void write_frame_header(char* at, std::uint32_t n);

/// Appends one encoded frame (header + body) to `out`. Precondition: the body
/// fits in 32 bits (callers check against their max_frame_bytes first).
void append_frame(std::string& out, std::string_view body);

/// Returns one encoded frame.
std::string encode_frame(std::string_view body);

class frame_decoder {
public:
  enum class status {
    ok,         ///< all input consumed; zero or more frames produced
    too_large,  ///< a header announced more than max_frame_bytes; stream failed
  };

  explicit frame_decoder(std::size_t max_frame_bytes = default_max_frame_bytes);

  /// Consumes `n` bytes and appends every completed frame body to `out`.
  /// After `too_large` the decoder stays failed and ignores further input.
  status feed(const char* data, std::size_t n, std::vector<std::string>& out);

  bool failed() const noexcept { return failed_; }

  /// The length the failing header announced (valid after too_large).
  std::uint64_t rejected_length() const noexcept { return rejected_length_; }

  /// True while a frame has started but not completed: at EOF this means a
  /// truncated frame.
  bool mid_frame() const noexcept { return header_fill_ > 0 || in_body_; }

  std::size_t max_frame_bytes() const noexcept { return max_; }

private:
  std::size_t max_;
  unsigned char header_[frame_header_bytes] = {0, 0, 0, 0};
  std::size_t header_fill_ = 0;  // bytes of header_ read so far
  bool in_body_ = false;         // header complete, body pending
  std::size_t body_len_ = 0;     // announced length of the current body
  std::string body_;             // the current body, reserved to body_len_
  bool failed_ = false;
  std::uint64_t rejected_length_ = 0;
};

} // namespace dspex::bridge
