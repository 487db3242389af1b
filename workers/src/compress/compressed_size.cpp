// zstd-compressed size of a file, in one shot (artifacts are a few megabytes).
#include "edgesweep/workers/compress/compressed_size.h"

#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include <zstd.h>

#include "edgesweep/common/error.h"

namespace edgesweep {

int64_t compressed_file_size(const std::filesystem::path& path, int level) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot read '{}' to measure its compressed size", path.string());
  const std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<char> out(ZSTD_compressBound(data.size()));
  const std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> context(ZSTD_createCCtx(), ZSTD_freeCCtx);
  check(context != nullptr, "zstd: cannot create a compression context");
  const size_t size = ZSTD_compressCCtx(context.get(), out.data(), out.size(), data.data(), data.size(), level);
  check(!ZSTD_isError(size), "zstd: compressing '{}' failed: {}", path.string(), ZSTD_getErrorName(size));
  return static_cast<int64_t>(size);
}

}  // namespace edgesweep
