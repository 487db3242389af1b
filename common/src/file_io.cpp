// Whole-file writes with POSIX calls, so every short write and every flush is checked.
#include "edgesweep/common/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "edgesweep/common/error.h"

namespace edgesweep {

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  const std::filesystem::path partial = path.string() + ".partial";
  const auto fail = [&](const char* step, int error) {
    std::error_code ignored;
    std::filesystem::remove(partial, ignored);
    throw Error(fmt::format("cannot write '{}': {} failed: {}", path.string(), step, std::strerror(error)));
  };
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("open", errno);
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = n < 0 ? errno : ENOSPC;
      ::close(fd);
      fail("write", error);
    }
    written += static_cast<size_t>(n);
  }
  // Space a file system only finds short of at flush time (delayed allocation) is found here, not after the rename.
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail("fsync", error);
  }
  if (::close(fd) != 0) fail("close", errno);
  std::error_code ec;
  std::filesystem::rename(partial, path, ec);
  if (ec) fail("rename", ec.value());
}

}  // namespace edgesweep
