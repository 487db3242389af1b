// SHA-256 digests (lower-case hex) of bytes and files, for content addressing.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace edgesweep {

/// SHA-256 of `bytes` as 64 lower-case hex digits.
std::string sha256_hex(std::string_view bytes);

/// SHA-256 of a file's contents; throws Error naming the file when it cannot be read.
std::string sha256_file(const std::filesystem::path& path);

/// A certificate's SHA-256 fingerprint as a user writes it ("sha256:" optional, colons optional, any case, or as
/// `openssl x509 -fingerprint -sha256` prints it) in one form: "sha256:" and 64 lower-case hex digits. Throws
/// InputError quoting the text when it is not one.
std::string normalise_fingerprint(std::string_view text);

}  // namespace edgesweep
