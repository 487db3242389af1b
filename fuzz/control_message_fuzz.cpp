// Control messages as the agent reads them: parsed, checked for their type's keys and sha256, and answered; a
// refusal is a ProtocolError, nothing else.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "edgesweep/device_agents/frame.h"
#include "edgesweep/device_agents/messages.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  edgesweep::fuzz::expect_clean([&] {
    const edgesweep::Json message = edgesweep::parse_control_message(payload);
    const std::string type = message.at("type").get<std::string>();
    // The same checks the agent's session makes per type.
    if (type == "auth") edgesweep::check_message_keys(message, {"nonce", "proof"});
    if (type == "upload_begin") edgesweep::check_message_keys(message, {"sha256", "size"});
    if (type == "has") edgesweep::check_message_keys(message, {"sha256"});
    if (type == "benchmark") edgesweep::check_message_keys(message, {"sha256", "request", "timeout_seconds"});
    if (type == "upload_end" || type == "ping") edgesweep::check_message_keys(message, {});
    // Replies repeat the request's id whatever it is, and must serialise.
    const std::string reply = edgesweep::make_reply(message, "pong").dump();
    const std::string error = edgesweep::make_error(message, "refused").dump();
    if (reply.empty() || error.empty()) std::abort();
    if (message.contains("sha256")) edgesweep::message_sha256(message);
  });
  return 0;
}
