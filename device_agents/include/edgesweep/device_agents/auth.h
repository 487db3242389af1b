// Mutual HMAC-SHA256 challenge-response on a shared token.
//   agent  -> client: hello {nonce: A}
//   client -> agent : auth  {nonce: C, proof: HMAC(token, A || C || "edgesweep-v1")}
//   agent  -> client: welcome {proof: HMAC(token, C || A || "edgesweep-v1-agent")}
// Nonces are 32 random bytes, sent as 64 hex digits; the HMAC input holds their raw bytes. Proofs are compared in
// constant time. Each side checks the other, so neither a forged agent nor a forged client gets through.
#pragma once

#include <cstddef>
#include <deque>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <string_view>

namespace edgesweep {

/// Version of the frame and message protocol, sent in hello.
constexpr int agent_protocol_version = 3;  ///< 2: long replies in continuation frames; 3: preamble, TLS
constexpr size_t nonce_bytes = 32;

/// Throws InputError naming the file (`what` says what it is) when it is missing, not a regular file, or can be
/// read or written by its group or by other users.
void check_private_file(const std::filesystem::path& path, std::string_view what);

/// Reads a shared token from a file; trailing white space is dropped. Throws InputError naming the file when it
/// cannot be read, is empty, or can be read by other users (mode o+r).
std::string read_token_file(const std::filesystem::path& path);

/// A fresh nonce from OpenSSL's RAND_bytes, as 64 lower-case hex digits.
std::string make_nonce();

/// True for exactly 64 lower-case hex digits (a nonce or a sha256); anything else, paths included, is false.
bool is_hex_digest(std::string_view text);

/// The client's proof for agent nonce `agent_nonce` and its own `client_nonce` (both hex), as hex.
std::string client_proof(std::string_view token, std::string_view agent_nonce, std::string_view client_nonce);

/// The agent's proof back to the client, as hex.
std::string agent_proof(std::string_view token, std::string_view agent_nonce, std::string_view client_nonce);

/// Compares two proofs in constant time (CRYPTO_memcmp); different lengths are unequal.
bool proofs_equal(std::string_view expected, std::string_view given);

/// The client nonces an agent has accepted, so that an authentication cannot be replayed. Remembers the latest
/// `capacity` nonces; thread-safe.
class NonceRegistry {
 public:
  explicit NonceRegistry(size_t capacity = 65536) : capacity_(capacity) {}

  /// Records `nonce`; false when it was seen before.
  bool remember(const std::string& nonce);

 private:
  size_t capacity_;
  std::mutex mutex_;
  std::set<std::string> seen_;
  std::deque<std::string> order_;
};

}  // namespace edgesweep
