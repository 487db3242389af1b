// Encoding and checking of frame headers.
#include "edgesweep/device_agents/frame.h"

#include <algorithm>

namespace edgesweep {
namespace {

constexpr std::array<unsigned char, 4> frame_magic{'E', 'S', 'W', 'F'};

size_t cap_of(FrameType type, const FrameLimits& limits) {
  return type == FrameType::Control ? limits.max_control_bytes : limits.max_chunk_bytes;  // chunk, continuation
}

}  // namespace

const char* to_string(FrameType type) {
  switch (type) {
    case FrameType::Control:
      return "control";
    case FrameType::Chunk:
      return "chunk";
    case FrameType::Continuation:
      return "continuation";
  }
  return "unknown";
}

FrameHeaderBytes encode_frame_header(FrameType type, size_t length, const FrameLimits& limits) {
  const size_t cap = cap_of(type, limits);
  if (length > cap || length > UINT32_MAX) {
    throw ProtocolError(fmt::format("{} frame of {} bytes is over the cap of {} bytes", to_string(type), length, cap));
  }
  FrameHeaderBytes bytes{};
  for (size_t i = 0; i < frame_magic.size(); ++i) bytes[i] = frame_magic[i];
  bytes[4] = static_cast<unsigned char>(type);
  const auto value = static_cast<uint32_t>(length);
  bytes[8] = static_cast<unsigned char>(value >> 24);
  bytes[9] = static_cast<unsigned char>(value >> 16);
  bytes[10] = static_cast<unsigned char>(value >> 8);
  bytes[11] = static_cast<unsigned char>(value);
  return bytes;
}

FrameHeader decode_frame_header(const FrameHeaderBytes& bytes, const FrameLimits& limits) {
  for (size_t i = 0; i < frame_magic.size(); ++i) {
    if (bytes[i] != frame_magic[i]) {
      throw ProtocolError("frame does not start with the magic 'ESWF' (not an edgesweep agent peer, or out of step)");
    }
  }
  const unsigned char type_byte = bytes[4];
  if (type_byte != static_cast<unsigned char>(FrameType::Control) &&
      type_byte != static_cast<unsigned char>(FrameType::Chunk) &&
      type_byte != static_cast<unsigned char>(FrameType::Continuation)) {
    throw ProtocolError(fmt::format("unknown frame type {}", static_cast<int>(type_byte)));
  }
  if (bytes[5] != 0 || bytes[6] != 0 || bytes[7] != 0) throw ProtocolError("reserved frame header bytes are not zero");
  FrameHeader header;
  header.type = static_cast<FrameType>(type_byte);
  header.length = (uint32_t{bytes[8]} << 24) | (uint32_t{bytes[9]} << 16) | (uint32_t{bytes[10]} << 8) |
                  uint32_t{bytes[11]};
  const size_t cap = cap_of(header.type, limits);
  if (header.length > cap) {
    throw ProtocolError(
        fmt::format("{} frame of {} bytes is over the cap of {} bytes", to_string(header.type), header.length, cap));
  }
  return header;
}

std::string encode_frame(FrameType type, std::string_view payload, const FrameLimits& limits) {
  const FrameHeaderBytes header = encode_frame_header(type, payload.size(), limits);
  std::string out(reinterpret_cast<const char*>(header.data()), header.size());
  out.append(payload.data(), payload.size());
  return out;
}

std::string encode_control_message(std::string_view text, const FrameLimits& limits) {
  if (text.size() <= limits.max_control_bytes) return encode_frame(FrameType::Control, text, limits);
  if (text.size() > limits.max_message_bytes) {
    throw ProtocolError(fmt::format("control message of {} bytes is over the cap of {} bytes", text.size(),
                                    limits.max_message_bytes));
  }
  // Continuation frames up to the last part, which goes in a control frame; every part is at most both caps.
  const size_t part = std::min(limits.max_chunk_bytes, limits.max_control_bytes);
  std::string out;
  out.reserve(text.size() + (text.size() / part + 1) * frame_header_bytes);
  size_t at = 0;
  while (text.size() - at > part) {
    out += encode_frame(FrameType::Continuation, text.substr(at, part), limits);
    at += part;
  }
  out += encode_frame(FrameType::Control, text.substr(at), limits);
  return out;
}

}  // namespace edgesweep
