// SHA-256 through OpenSSL's EVP interface.
#include "edgesweep/common/hash.h"

#include <array>
#include <cctype>
#include <fstream>
#include <memory>

#include <openssl/evp.h>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

struct DigestContextDeleter {
  void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};
using DigestContext = std::unique_ptr<EVP_MD_CTX, DigestContextDeleter>;

DigestContext start_sha256() {
  DigestContext context(EVP_MD_CTX_new());
  check(context && EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) == 1, "sha256: cannot initialise digest");
  return context;
}

std::string finish_hex(EVP_MD_CTX* context) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  check(EVP_DigestFinal_ex(context, digest.data(), &length) == 1, "sha256: cannot finish digest");
  static const char* digits = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(digits[digest[i] >> 4]);
    hex.push_back(digits[digest[i] & 15]);
  }
  return hex;
}

}  // namespace

std::string sha256_hex(std::string_view bytes) {
  DigestContext context = start_sha256();
  check(EVP_DigestUpdate(context.get(), bytes.data(), bytes.size()) == 1, "sha256: update failed");
  return finish_hex(context.get());
}

std::string sha256_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot read '{}' to hash it", path.string());
  DigestContext context = start_sha256();
  std::array<char, 1 << 16> buffer{};
  while (in) {
    in.read(buffer.data(), buffer.size());
    if (in.gcount() > 0) {
      check(EVP_DigestUpdate(context.get(), buffer.data(), static_cast<size_t>(in.gcount())) == 1,
            "sha256: update failed");
    }
  }
  check(in.eof(), "error while reading '{}' to hash it", path.string());
  return finish_hex(context.get());
}

std::string normalise_fingerprint(std::string_view text) {
  std::string_view rest = text;
  for (std::string_view prefix : {"sha256:", "SHA256:", "sha256 Fingerprint=", "SHA256 Fingerprint="}) {
    if (rest.substr(0, prefix.size()) == prefix) {
      rest.remove_prefix(prefix.size());
      break;
    }
  }
  std::string hex;
  for (char c : rest) {
    if (c == ':') continue;
    const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    check_input((lower >= '0' && lower <= '9') || (lower >= 'a' && lower <= 'f'),
                "'{}' is not a SHA-256 certificate fingerprint: write \"sha256:\" and 64 hex digits (colons allowed), "
                "as `openssl x509 -noout -fingerprint -sha256 -in CERT` prints them",
                std::string(text.substr(0, 120)));
    hex.push_back(lower);
  }
  check_input(hex.size() == 64, "'{}' is not a SHA-256 certificate fingerprint: it has {} hex digits, not 64",
              std::string(text.substr(0, 120)), hex.size());
  return "sha256:" + hex;
}

}  // namespace edgesweep
