// The wire format between an agent and its clients: length-prefixed frames over a byte stream.
// A frame is a 12-byte header (magic "ESWF", type, three zero bytes, payload length as big-endian uint32) followed
// by the payload: a JSON control message or a raw chunk of an artifact. Sizes are capped per type.
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
};

/// Largest payload accepted per frame type.
struct FrameLimits {
  size_t max_control_bytes = size_t{1} << 20;  ///< 1 MiB
  size_t max_chunk_bytes = size_t{4} << 20;    ///< 4 MiB
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

}  // namespace edgesweep
