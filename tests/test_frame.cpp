// The frame codec: 4-byte big-endian length + body, fed in any chunking.
#include <doctest/doctest.h>

#include <dspex/bridge/frame.hpp>

#include <string>
#include <vector>

using dspex::bridge::encode_frame;
using dspex::bridge::frame_decoder;

TEST_SUITE("frame") {

TEST_CASE("encode writes a big-endian length prefix") {
  auto f = encode_frame("abc");
  REQUIRE(f.size() == 7);
  CHECK(f[0] == 0);
  CHECK(f[1] == 0);
  CHECK(f[2] == 0);
  CHECK(f[3] == 3);
  CHECK(f.substr(4) == "abc");
  std::string big(0x010203, 'x');
  auto g = encode_frame(big);
  CHECK(static_cast<unsigned char>(g[1]) == 0x01);
  CHECK(static_cast<unsigned char>(g[2]) == 0x02);
  CHECK(static_cast<unsigned char>(g[3]) == 0x03);
}

TEST_CASE("a frame fed one byte at a time") {
  frame_decoder dec;
  auto f = encode_frame(R"({"id":1})");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < f.size(); ++i) {
    CHECK(out.empty());
    CHECK(dec.feed(&f[i], 1, out) == frame_decoder::status::ok);
    if (i + 1 < f.size())
      CHECK(dec.mid_frame());
  }
  REQUIRE(out.size() == 1);
  CHECK(out[0] == R"({"id":1})");
  CHECK_FALSE(dec.mid_frame());
}

TEST_CASE("several frames in one read, the last one split") {
  frame_decoder dec;
  std::string stream = encode_frame("one") + encode_frame("two") + encode_frame("three");
  auto tail = encode_frame("four");
  stream += tail.substr(0, 5);
  std::vector<std::string> out;
  CHECK(dec.feed(stream.data(), stream.size(), out) == frame_decoder::status::ok);
  CHECK(out == std::vector<std::string>{"one", "two", "three"});
  CHECK(dec.mid_frame());
  dec.feed(tail.data() + 5, tail.size() - 5, out);
  REQUIRE(out.size() == 4);
  CHECK(out[3] == "four");
}

TEST_CASE("an empty body is a frame") {
  frame_decoder dec;
  auto f = encode_frame("") + encode_frame("");
  std::vector<std::string> out;
  dec.feed(f.data(), f.size(), out);
  CHECK(out == std::vector<std::string>{"", ""});
}

TEST_CASE("a length of 0xFFFFFFFF is rejected without allocating it") {
  frame_decoder dec{1024};
  const char header[] = {'\xFF', '\xFF', '\xFF', '\xFF', 'x', 'y'};
  std::vector<std::string> out;
  CHECK(dec.feed(header, sizeof header, out) == frame_decoder::status::too_large);
  CHECK(dec.failed());
  CHECK(dec.rejected_length() == 0xFFFFFFFFull);
  CHECK(out.empty());
  // A failed stream stays failed: nothing after it is trusted.
  auto f = encode_frame("ok");
  CHECK(dec.feed(f.data(), f.size(), out) == frame_decoder::status::too_large);
  CHECK(out.empty());
}

TEST_CASE("the maximum is inclusive") {
  frame_decoder dec{4};
  auto ok = encode_frame("1234");
  std::vector<std::string> out;
  CHECK(dec.feed(ok.data(), ok.size(), out) == frame_decoder::status::ok);
  CHECK(out.size() == 1);
  auto bad = encode_frame("12345");
  CHECK(dec.feed(bad.data(), bad.size(), out) == frame_decoder::status::too_large);
  CHECK(dec.rejected_length() == 5);
}

TEST_CASE("frames that came before an oversized header are still delivered") {
  frame_decoder dec{16};
  std::string stream = encode_frame("first") + std::string("\x7F\x00\x00\x00", 4);
  std::vector<std::string> out;
  CHECK(dec.feed(stream.data(), stream.size(), out) == frame_decoder::status::too_large);
  CHECK(out == std::vector<std::string>{"first"});
}

} // TEST_SUITE
