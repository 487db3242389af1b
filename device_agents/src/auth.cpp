// HMAC-SHA256 proofs, nonces and token files through OpenSSL's libcrypto.
#include "edgesweep/device_agents/auth.h"

#include <sys/stat.h>

#include <array>
#include <fstream>
#include <sstream>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

const char* const hex_digits = "0123456789abcdef";

std::string to_hex(const unsigned char* bytes, size_t size) {
  std::string hex;
  hex.reserve(size * 2);
  for (size_t i = 0; i < size; ++i) {
    hex.push_back(hex_digits[bytes[i] >> 4]);
    hex.push_back(hex_digits[bytes[i] & 15]);
  }
  return hex;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/// Raw bytes of a hex nonce; callers have checked it with is_hex_digest.
std::string from_hex(std::string_view hex) {
  check(is_hex_digest(hex), "not a 64-digit hex nonce: '{}'", hex.substr(0, 80));
  std::string bytes(hex.size() / 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<char>(hex_value(hex[2 * i]) * 16 + hex_value(hex[2 * i + 1]));
  }
  return bytes;
}

std::string hmac_hex(std::string_view token, const std::string& message) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  const unsigned char* result =
      HMAC(EVP_sha256(), token.data(), static_cast<int>(token.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest.data(), &length);
  check(result != nullptr, "HMAC-SHA256 failed");
  return to_hex(digest.data(), length);
}

}  // namespace

void check_private_file(const std::filesystem::path& path, std::string_view what) {
  struct stat info {};
  check_input(stat(path.c_str(), &info) == 0, "cannot read {} '{}'", what, path.string());
  check_input(S_ISREG(info.st_mode), "{} '{}' is not a regular file", what, path.string());
  // Like ssh's private keys: only the owner may read or write it (0600 or 0400).
  check_input((info.st_mode & (S_IRWXG | S_IRWXO)) == 0,
              "{} '{}' can be read or written by {} (mode {:o}); hint: chmod 600 '{}'", what, path.string(),
              (info.st_mode & S_IRWXO) != 0 ? "other users" : "its group", info.st_mode & 0777, path.string());
}

std::string read_token_file(const std::filesystem::path& path) {
  check_private_file(path, "token file");
  std::ifstream in(path, std::ios::binary);
  check_input(in.good(), "cannot read token file '{}'", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  std::string token = text.str();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' || token.back() == '\t')) {
    token.pop_back();
  }
  check_input(!token.empty(), "token file '{}' is empty", path.string());
  return token;
}

std::string make_nonce() {
  std::array<unsigned char, nonce_bytes> bytes{};
  check(RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) == 1, "RAND_bytes failed to make a nonce");
  return to_hex(bytes.data(), bytes.size());
}

bool is_hex_digest(std::string_view text) {
  if (text.size() != 2 * nonce_bytes) return false;
  for (char c : text) {
    if (hex_value(c) < 0) return false;
  }
  return true;
}

std::string client_proof(std::string_view token, std::string_view agent_nonce, std::string_view client_nonce) {
  return hmac_hex(token, from_hex(agent_nonce) + from_hex(client_nonce) + "edgesweep-v1");
}

std::string agent_proof(std::string_view token, std::string_view agent_nonce, std::string_view client_nonce) {
  return hmac_hex(token, from_hex(client_nonce) + from_hex(agent_nonce) + "edgesweep-v1-agent");
}

bool proofs_equal(std::string_view expected, std::string_view given) {
  if (expected.size() != given.size()) return false;
  return CRYPTO_memcmp(expected.data(), given.data(), expected.size()) == 0;
}

bool NonceRegistry::remember(const std::string& nonce) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!seen_.insert(nonce).second) return false;
  order_.push_back(nonce);
  if (order_.size() > capacity_) {
    seen_.erase(order_.front());
    order_.pop_front();
  }
  return true;
}

}  // namespace edgesweep
