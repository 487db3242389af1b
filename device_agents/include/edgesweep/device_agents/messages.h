// The control messages of the agent protocol (JSON objects in control frames, each with a "type"):
//   hello {protocol, nonce, auth: bool, hardware, profile}          agent -> client, on connect
//   auth {nonce, proof}                  -> welcome {proof}          mutual HMAC, see auth.h
//   upload_begin {sha256, size}          -> ready                    then chunk frames, then
//   upload_end {}                        -> stored {sha256, size}    file verified and kept as <sha256>.pt
//   has {sha256}                         -> have {sha256, present, size}
//   benchmark {sha256, request, timeout_seconds?} -> result {sha256, result}   one at a time per agent
//   ping {}                              -> pong {queued}
//   any refused or failed request        -> error {message}
// Every request may carry an "id" that its reply repeats. Unknown keys and unknown types are refused.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "edgesweep/common/json.h"

namespace edgesweep {

/// Parses the payload of a control frame: a JSON object with a string "type". Throws ProtocolError.
Json parse_control_message(std::string_view payload);

/// Throws ProtocolError naming the key when `message` has a key other than "type", "id" and `allowed`.
void check_message_keys(const Json& message, std::initializer_list<const char*> allowed);

/// The "sha256" of a message: 64 lower-case hex digits, never a path. Throws ProtocolError naming the value.
std::string message_sha256(const Json& message);

/// A message of `type` that repeats the "id" of `request` when it has one.
Json make_reply(const Json& request, const std::string& type);

/// An error message answering `request` (which may be null).
Json make_error(const Json& request, const std::string& text);

}  // namespace edgesweep
