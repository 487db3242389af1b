// Parsing and checking of control messages.
#include "edgesweep/device_agents/messages.h"

#include <algorithm>

#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/frame.h"

namespace edgesweep {

Json parse_control_message(std::string_view payload) {
  Json message = Json::parse(payload.begin(), payload.end(), nullptr, false);
  if (message.is_discarded()) throw ProtocolError("control frame is not valid JSON");
  if (!message.is_object()) throw ProtocolError("control message is not a JSON object");
  const auto type = message.find("type");
  if (type == message.end() || !type->is_string()) throw ProtocolError("control message has no string \"type\"");
  return message;
}

void check_message_keys(const Json& message, std::initializer_list<const char*> allowed) {
  for (const auto& item : message.items()) {
    const std::string& key = item.key();
    if (key == "type" || key == "id") continue;
    const bool known = std::any_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; });
    if (!known) {
      throw ProtocolError(fmt::format("unknown key '{}' in message '{}'", key.substr(0, 80),
                                      message.at("type").get<std::string>().substr(0, 80)));
    }
  }
}

std::string message_sha256(const Json& message) {
  const auto sha = message.find("sha256");
  if (sha == message.end() || !sha->is_string()) {
    throw ProtocolError(fmt::format("message '{}' needs a string \"sha256\"", message.at("type").get<std::string>()));
  }
  const std::string value = sha->get<std::string>();
  if (!is_hex_digest(value)) {
    throw ProtocolError(
        fmt::format("sha256 '{}' is not 64 lower-case hex digits (names and paths are refused)", value.substr(0, 80)));
  }
  return value;
}

Json make_reply(const Json& request, const std::string& type) {
  Json reply = {{"type", type}};
  if (request.is_object() && request.contains("id")) reply["id"] = request.at("id");
  return reply;
}

Json make_error(const Json& request, const std::string& text) {
  Json reply = make_reply(request, "error");
  reply["message"] = text;
  return reply;
}

}  // namespace edgesweep
