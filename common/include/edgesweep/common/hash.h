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

}  // namespace edgesweep
