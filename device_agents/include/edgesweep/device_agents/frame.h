// The wire format between an agent and its clients: length-prefixed frames over a byte stream.
// A frame is a 12-byte header (magic "ESWF", type, three zero bytes, payload length as big-endian uint32) followed
// by the payload: a JSON control message or a raw chunk of an artifact. Sizes are capped per type.
// A control message longer than one control frame (a benchmark result with every timed run of a fast model) is
// sent as continuation frames, each at most a chunk long, and ends with the control frame that holds its last part;
// a reader joins them up to its cap on a whole message.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/system_error.hpp>

#include "edgesweep/common/error.h"

namespace edgesweep {

/// A frame that breaks the protocol: bad magic, unknown type, payload over its cap.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

enum class FrameType : uint8_t {
  Control = 1,  ///< a JSON object with a "type" key
  Chunk = 2,    ///< raw bytes of an upload
  Continuation = 3,  ///< the leading part of a control message that the next frames complete
};

/// Largest payload accepted per frame type.
struct FrameLimits {
  size_t max_control_bytes = size_t{1} << 20;  ///< 1 MiB
  size_t max_chunk_bytes = size_t{4} << 20;    ///< 4 MiB; also the cap of a continuation frame
  size_t max_message_bytes = size_t{256} << 20;  ///< a whole control message read from continuation frames
};

constexpr size_t frame_header_bytes = 12;
using FrameHeaderBytes = std::array<unsigned char, frame_header_bytes>;

struct FrameHeader {
  FrameType type = FrameType::Control;
  uint32_t length = 0;
};

struct Frame {
  FrameType type = FrameType::Control;
  std::string payload;
};

/// "control" or "chunk".
const char* to_string(FrameType type);

/// The header bytes for a payload; throws ProtocolError when `length` is over the cap of `type`.
FrameHeaderBytes encode_frame_header(FrameType type, size_t length, const FrameLimits& limits);

/// Checks and decodes header bytes; throws ProtocolError on bad magic, unknown type or a length over its cap.
FrameHeader decode_frame_header(const FrameHeaderBytes& bytes, const FrameLimits& limits);

/// Header and payload in one string, ready to write.
std::string encode_frame(FrameType type, std::string_view payload, const FrameLimits& limits);

/// The frames of one control message: a single control frame when it fits in one, else continuation frames of at
/// most max_chunk_bytes and a last control frame. Throws ProtocolError when the text is over max_message_bytes.
std::string encode_control_message(std::string_view text, const FrameLimits& limits);

/// Writes one frame to a synchronous stream (Asio's SyncWriteStream: write_some). Throws
/// boost::system::system_error when the stream fails and ProtocolError when the payload is over its cap.
template <typename SyncWriteStream>
void write_frame(SyncWriteStream& stream, FrameType type, std::string_view payload, const FrameLimits& limits) {
  const FrameHeaderBytes header = encode_frame_header(type, payload.size(), limits);
  const std::array<boost::asio::const_buffer, 2> buffers{boost::asio::buffer(header),
                                                         boost::asio::buffer(payload.data(), payload.size())};
  boost::asio::write(stream, buffers);
}

/// Reads one whole frame from a synchronous stream (Asio's SyncReadStream: read_some). The header is checked
/// before any payload is read, so an oversize frame costs 12 bytes. Throws boost::system::system_error when the
/// stream fails or ends (boost::asio::error::eof) and ProtocolError on a bad header.
template <typename SyncReadStream>
Frame read_frame(SyncReadStream& stream, const FrameLimits& limits) {
  FrameHeaderBytes header_bytes{};
  boost::asio::read(stream, boost::asio::buffer(header_bytes));
  const FrameHeader header = decode_frame_header(header_bytes, limits);
  Frame frame;
  frame.type = header.type;
  frame.payload.resize(header.length);
  if (header.length > 0) boost::asio::read(stream, boost::asio::buffer(frame.payload));
  return frame;
}

/// Reads one frame, joining continuation frames with the control frame that ends them: the result is a control
/// frame with the whole message, or a chunk frame. Throws ProtocolError when the joined message is over
/// max_message_bytes or a chunk comes between its parts, and what read_frame throws.
template <typename SyncReadStream>
Frame read_message_frame(SyncReadStream& stream, const FrameLimits& limits) {
  Frame frame = read_frame(stream, limits);
  if (frame.type != FrameType::Continuation) return frame;
  std::string text = std::move(frame.payload);
  for (;;) {
    Frame next = read_frame(stream, limits);
    if (next.type == FrameType::Chunk) throw ProtocolError("a chunk frame came inside a continued control message");
    if (text.size() + next.payload.size() > limits.max_message_bytes) {
      throw ProtocolError(fmt::format("continued control message of more than {} bytes is over the cap of {} bytes",
                                      text.size() + next.payload.size(), limits.max_message_bytes));
    }
    text += next.payload;
    if (next.type == FrameType::Control) return Frame{FrameType::Control, std::move(text)};
  }
}

}  // namespace edgesweep
