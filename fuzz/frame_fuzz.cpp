// The frame decoder: any byte stream is read as frames (continuations joined) until it ends or is refused; every
// frame read respects its cap. Small caps, so continuations and caps are reached by short inputs. The first 8 bytes
// are also read as the agent's preamble, as a client reads them first.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "../tests/device_agents/fault_stream.h"
#include "edgesweep/device_agents/frame.h"
#include "edgesweep/device_agents/tls.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  edgesweep::FrameLimits limits;
  limits.max_control_bytes = 256;
  limits.max_chunk_bytes = 128;
  limits.max_message_bytes = 1024;
  // The fuzzer's bytes, handed out at most 7 at a time (short reads), never failing.
  edgesweep::FaultStream stream(std::string(reinterpret_cast<const char*>(data), size), edgesweep::FaultStream::never,
                                7);
  if (size >= edgesweep::agent_preamble_bytes) {
    edgesweep::fuzz::expect_clean([&] {
      edgesweep::AgentPreamble preamble{};
      std::copy(data, data + preamble.size(), preamble.begin());
      const edgesweep::AgentTransport transport = edgesweep::decode_agent_preamble(preamble);
      if (edgesweep::encode_agent_preamble(transport) != preamble) std::abort();
    });
  }
  edgesweep::fuzz::expect_clean([&] {
    while (stream.consumed() < size) {
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
