// Frames: the header layout by its definition, round trips over short reads and writes, and a failure injected at
// every read and every write (never a wrong frame, never a crash), truncation at every byte, size caps, and control
// messages longer than a control frame carried in continuation frames.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "../workers/expect_error.h"
#include "edgesweep/device_agents/frame.h"
#include "fault_stream.h"

namespace edgesweep {
namespace {

FrameLimits small_limits() {
  FrameLimits limits;
  limits.max_control_bytes = 4096;
  limits.max_chunk_bytes = 8192;
  return limits;
}

std::vector<Frame> sample_frames() {
  std::mt19937 random(7);
  std::vector<Frame> frames;
  frames.push_back({FrameType::Control, R"({"type":"ping"})"});
  frames.push_back({FrameType::Chunk, ""});
  frames.push_back({FrameType::Control, std::string(4096, 'x')});  // exactly at the cap
  std::string binary(1000, '\0');
  for (char& c : binary) c = static_cast<char>(random() & 0xff);
  frames.push_back({FrameType::Chunk, binary});
  frames.push_back({FrameType::Chunk, std::string(8192, '\xff')});
  return frames;
}

std::string encode_all(const std::vector<Frame>& frames, const FrameLimits& limits) {
  std::string bytes;
  for (const Frame& f : frames) bytes += encode_frame(f.type, f.payload, limits);
  return bytes;
}

TEST(Frame, HeaderIsMagicTypeZerosAndBigEndianLength) {
  const FrameHeaderBytes header = encode_frame_header(FrameType::Chunk, 0x010203, FrameLimits{});
  const FrameHeaderBytes expected{'E', 'S', 'W', 'F', 2, 0, 0, 0, 0x00, 0x01, 0x02, 0x03};
  EXPECT_EQ(header, expected);
  const FrameHeader decoded = decode_frame_header(expected, FrameLimits{});
  EXPECT_EQ(decoded.type, FrameType::Chunk);
  EXPECT_EQ(decoded.length, 0x010203u);
  EXPECT_EQ(encode_frame(FrameType::Control, "{}", FrameLimits{}), std::string("ESWF\x01\0\0\0\0\0\0\x02{}", 14));
}

TEST(Frame, RoundTripWithShortReadsAndWrites) {
  const FrameLimits limits = small_limits();
  for (size_t step : {size_t{1}, size_t{5}, size_t{12}, size_t{13}, size_t{1} << 20}) {
    FaultStream out({}, FaultStream::never, step);
    for (const Frame& f : sample_frames()) write_frame(out, f.type, f.payload, limits);
    EXPECT_EQ(out.written(), encode_all(sample_frames(), limits)) << "step " << step;

    FaultStream in(out.written(), FaultStream::never, step);
    for (const Frame& expected : sample_frames()) {
      const Frame got = read_frame(in, limits);
      EXPECT_EQ(got.type, expected.type);
      EXPECT_EQ(got.payload, expected.payload);
    }
    EXPECT_THROW(read_frame(in, limits), boost::system::system_error);  // end of stream
  }
}

TEST(Frame, FailureAtEveryWriteIsReported) {
  const FrameLimits limits = small_limits();
  const std::string all = encode_all(sample_frames(), limits);
  FaultStream clean({}, FaultStream::never, 7);
  for (const Frame& f : sample_frames()) write_frame(clean, f.type, f.payload, limits);
  const size_t total = clean.operations();
  ASSERT_GT(total, 100u);
  for (size_t n = 0; n < total; ++n) {
    FaultStream out({}, n, 7);
    size_t written_frames = 0;
    bool failed = false;
    try {
      for (const Frame& f : sample_frames()) {
        write_frame(out, f.type, f.payload, limits);
        ++written_frames;
      }
    } catch (const boost::system::system_error& e) {
      failed = true;
      EXPECT_EQ(e.code(), boost::asio::error::connection_reset);
    }
    EXPECT_TRUE(failed) << "operation " << n << " failed silently";
    EXPECT_LT(written_frames, sample_frames().size());
    EXPECT_EQ(out.written(), all.substr(0, out.written().size())) << "operation " << n;
  }
}

TEST(Frame, FailureAtEveryReadNeverYieldsAWrongFrame) {
  const FrameLimits limits = small_limits();
  const std::vector<Frame> frames = sample_frames();
  const std::string all = encode_all(frames, limits);
  FaultStream clean(all, FaultStream::never, 7);
  for (size_t i = 0; i < frames.size(); ++i) read_frame(clean, limits);
  const size_t total = clean.operations();
  for (size_t n = 0; n < total; ++n) {
    FaultStream in(all, n, 7);
    size_t good = 0;
    try {
      for (const Frame& expected : frames) {
        const Frame got = read_frame(in, limits);
        ASSERT_EQ(got.type, expected.type) << "operation " << n;
        ASSERT_EQ(got.payload, expected.payload) << "operation " << n;
        ++good;
      }
    } catch (const boost::system::system_error& e) {
      EXPECT_EQ(e.code(), boost::asio::error::connection_reset);
    }
    EXPECT_LT(good, frames.size()) << "operation " << n << " failed silently";
  }
}

TEST(Frame, TruncationAtEveryByteIsAnError) {
  const FrameLimits limits = small_limits();
  const std::vector<Frame> frames = {{FrameType::Control, R"({"type":"has"})"}, {FrameType::Chunk, "0123456789"}};
  const std::string all = encode_all(frames, limits);
  const size_t first = frame_header_bytes + frames[0].payload.size();
  for (size_t cut = 0; cut < all.size(); ++cut) {
    FaultStream in(all.substr(0, cut), FaultStream::never, 3);
    if (cut >= first) {
      const Frame got = read_frame(in, limits);
      EXPECT_EQ(got.payload, frames[0].payload);
    }
    EXPECT_THROW(read_frame(in, limits), boost::system::system_error) << "cut at " << cut;
  }
}

TEST(Frame, OversizeFrameRefusedBeforeItsPayloadIsRead) {
  const FrameLimits limits = small_limits();
  FrameLimits large;
  large.max_control_bytes = 1 << 20;
  const std::string too_big = encode_frame(FrameType::Control, std::string(4097, 'a'), large);
  FaultStream in(too_big);
  expect_error<ProtocolError>([&] { read_frame(in, limits); }, {"control frame of 4097 bytes", "cap of 4096"});
  EXPECT_EQ(in.consumed(), frame_header_bytes);

  FaultStream out;
  expect_error<ProtocolError>([&] { write_frame(out, FrameType::Chunk, std::string(8193, 'b'), limits); },
                              {"chunk frame of 8193 bytes", "cap of 8192"});
  EXPECT_TRUE(out.written().empty());
}

TEST(Frame, BadHeadersRefused) {
  const FrameLimits limits;
  FrameHeaderBytes header = encode_frame_header(FrameType::Control, 3, limits);
  FrameHeaderBytes bad_magic = header;
  bad_magic[0] = 'G';
  expect_error<ProtocolError>([&] { decode_frame_header(bad_magic, limits); }, {"magic"});
  FrameHeaderBytes bad_type = header;
  bad_type[4] = 9;
  expect_error<ProtocolError>([&] { decode_frame_header(bad_type, limits); }, {"unknown frame type 9"});
  FrameHeaderBytes bad_reserved = header;
  bad_reserved[6] = 1;
  expect_error<ProtocolError>([&] { decode_frame_header(bad_reserved, limits); }, {"reserved"});
  // An HTTP request is not a frame.
  FaultStream http("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THROW(read_frame(http, limits), ProtocolError);
}

/// A JSON-like text of `bytes` bytes whose every position is distinct enough to catch a misplaced part.
std::string long_text(size_t bytes) {
  std::string text;
  for (size_t i = 0; text.size() < bytes; ++i) text += std::to_string(i) + ",";
  text.resize(bytes);
  return text;
}

TEST(ControlMessage, FitsInOneFrameAtTheCap) {
  const FrameLimits limits = small_limits();
  const std::string text = long_text(limits.max_control_bytes);
  EXPECT_EQ(encode_control_message(text, limits), encode_frame(FrameType::Control, text, limits));
}

TEST(ControlMessage, LongerThanAFrameArrivesWholeOverShortReads) {
  const FrameLimits limits = small_limits();
  for (size_t bytes : {size_t{4097}, size_t{8192}, size_t{3 * 4096 + 1}, size_t{100000}}) {
    const std::string text = long_text(bytes);
    const std::string wire = encode_control_message(text, limits) + encode_frame(FrameType::Chunk, "after", limits);
    // Every frame stays within its own cap: continuation frames of at most min(chunk, control) bytes.
    FaultStream frames(wire);
    size_t continuations = 0;
    for (Frame f = read_frame(frames, limits); f.type == FrameType::Continuation; f = read_frame(frames, limits)) {
      EXPECT_LE(f.payload.size(), limits.max_control_bytes);
      ++continuations;
    }
    EXPECT_EQ(continuations, (bytes - 1) / limits.max_control_bytes) << bytes;

    for (size_t step : {size_t{1} << 20, size_t{13}}) {
      FaultStream in(wire, FaultStream::never, step);
      const Frame got = read_message_frame(in, limits);
      EXPECT_EQ(got.type, FrameType::Control);
      EXPECT_EQ(got.payload, text) << bytes << " bytes, step " << step;
      const Frame next = read_message_frame(in, limits);  // the stream is in step after the message
      EXPECT_EQ(next.type, FrameType::Chunk);
      EXPECT_EQ(next.payload, "after");
    }
  }
}

TEST(ControlMessage, FailureAtEveryReadOfALongMessageIsAnError) {
  const FrameLimits limits = small_limits();
  const std::string text = long_text(20000);
  const std::string wire = encode_control_message(text, limits);
  FaultStream clean(wire, FaultStream::never, 997);
  ASSERT_EQ(read_message_frame(clean, limits).payload, text);
  for (size_t n = 0; n < clean.operations(); ++n) {
    FaultStream in(wire, n, 997);
    EXPECT_THROW(read_message_frame(in, limits), boost::system::system_error) << "operation " << n;
  }
  for (size_t cut = 0; cut < wire.size(); cut += 101) {
    FaultStream in(wire.substr(0, cut));
    EXPECT_THROW(read_message_frame(in, limits), boost::system::system_error) << "cut at " << cut;
  }
}

TEST(ControlMessage, OverTheMessageCapRefusedOnBothSides) {
  FrameLimits limits = small_limits();
  limits.max_message_bytes = 10000;
  expect_error<ProtocolError>([&] { encode_control_message(long_text(10001), limits); },
                              {"control message of 10001 bytes", "cap of 10000"});
  FrameLimits sender = limits;
  sender.max_message_bytes = 1 << 20;
  FaultStream in(encode_control_message(long_text(50000), sender));
  expect_error<ProtocolError>([&] { read_message_frame(in, limits); }, {"over the cap of 10000"});
  EXPECT_LT(in.consumed(), 20000u) << "the reader stops at its cap, not at the end of the message";
}

TEST(ControlMessage, ChunkInsideAContinuedMessageRefused) {
  const FrameLimits limits = small_limits();
  const std::string wire = encode_frame(FrameType::Continuation, "{\"type\":", limits) +
                           encode_frame(FrameType::Chunk, "bytes", limits) +
                           encode_frame(FrameType::Control, "\"x\"}", limits);
  FaultStream in(wire);
  expect_error<ProtocolError>([&] { read_message_frame(in, limits); }, {"chunk frame came inside"});
}

}  // namespace
}  // namespace edgesweep
