// SHA-256 through OpenSSL's EVP interface.
#include "edgesweep/common/hash.h"

#include <array>
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

}  // namespace edgesweep
