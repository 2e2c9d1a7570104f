#include <dspex/bridge/frame.hpp>

#include <algorithm>

namespace dspex::bridge {

void write_frame_header(char* at, std::uint32_t n) {
  for (std::size_t i = 0; i < frame_header_bytes; ++i)
    at[i] = static_cast<char>((n >> (8 * (frame_header_bytes - 1 - i))) & 0xFF);
}

void append_frame(std::string& out, std::string_view body) {
  char header[frame_header_bytes];
  write_frame_header(header, static_cast<std::uint32_t>(body.size()));
  out.append(header, frame_header_bytes);
  out.append(body.data(), body.size());
}

std::string encode_frame(std::string_view body) {
  std::string out;
  out.reserve(frame_header_bytes + body.size());
  append_frame(out, body);
  return out;
}

frame_decoder::frame_decoder(std::size_t max_frame_bytes) : max_(max_frame_bytes) {
}

frame_decoder::status frame_decoder::feed(const char* data, std::size_t n,
                                          std::vector<std::string>& out) {
  if (failed_)
    return status::too_large;
  while (n > 0) {
    if (!in_body_) {
      while (n > 0 && header_fill_ < frame_header_bytes) {
        header_[header_fill_++] = static_cast<unsigned char>(*data++);
        --n;
      }
      if (header_fill_ < frame_header_bytes)
        break;
      std::uint64_t len = (std::uint64_t{header_[0]} << 24) | (std::uint64_t{header_[1]} << 16)
                          | (std::uint64_t{header_[2]} << 8) | std::uint64_t{header_[3]};
      header_fill_ = 0;
      if (len > max_) {
        failed_ = true;
        rejected_length_ = len;
        return status::too_large;
      }
      body_len_ = static_cast<std::size_t>(len);
      body_.clear();
      body_.reserve(body_len_);
      in_body_ = true;
    }
    auto take = std::min(n, body_len_ - body_.size());
    body_.append(data, take);
    data += take;
    n -= take;
    if (body_.size() == body_len_) {
      out.emplace_back(std::move(body_));
      body_ = std::string{};
      in_body_ = false;
    }
  }
  return status::ok;
}

} // namespace dspex::bridge
