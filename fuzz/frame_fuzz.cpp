// The frame decoder: any byte stream is read as frames (continuations joined) until it ends or is refused; every
// frame read respects its cap. Small caps, so continuations and caps are reached by short inputs.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <boost/asio/error.hpp>

#include "edgesweep/device_agents/frame.h"
#include "fuzz_util.h"

namespace {

/// A SyncReadStream over the fuzzer's bytes, handing them out in pieces of varying size.
class BytesStream {
 public:
  BytesStream(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers, boost::system::error_code& ec) {
    size_t total = 0;
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
      const size_t piece = std::min<size_t>({it->size(), size_ - at_, 1 + (at_ % 7)});
      std::memcpy(it->data(), data_ + at_, piece);
      at_ += piece;
      total += piece;
      if (piece < it->size()) break;
    }
    ec = total == 0 && at_ >= size_ ? boost::asio::error::eof : boost::system::error_code();
    return total;
  }
  template <typename MutableBufferSequence>
  size_t read_some(const MutableBufferSequence& buffers) {
    boost::system::error_code ec;
    const size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }
  bool done() const { return at_ >= size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  edgesweep::FrameLimits limits;
  limits.max_control_bytes = 256;
  limits.max_chunk_bytes = 128;
  limits.max_message_bytes = 1024;
  BytesStream stream(data, size);
  edgesweep::fuzz::expect_clean([&] {
    while (!stream.done()) {
      try {
        const edgesweep::Frame frame = edgesweep::read_message_frame(stream, limits);
        const size_t cap = frame.type == edgesweep::FrameType::Control ? limits.max_message_bytes
                                                                       : limits.max_chunk_bytes;
        if (frame.payload.size() > cap || frame.type == edgesweep::FrameType::Continuation) std::abort();
      } catch (const boost::system::system_error&) {
        return;  // the stream ended inside a frame: what a closed connection gives
      }
    }
  });
  return 0;
}
