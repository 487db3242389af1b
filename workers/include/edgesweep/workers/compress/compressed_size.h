// The size of a file after general-purpose compression (zstd): what sparsity saves in storage and download.
#pragma once

#include <cstdint>
#include <filesystem>

namespace edgesweep {

/// Bytes of `path` compressed with zstd at `level` (1-22). Throws Error naming the file when it cannot be read.
int64_t compressed_file_size(const std::filesystem::path& path, int level = 19);

}  // namespace edgesweep
