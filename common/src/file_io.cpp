// Whole-file writes with POSIX calls, so every short write and every flush is checked.
#include "edgesweep/common/file_io.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "edgesweep/common/error.h"

namespace edgesweep {

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  // A name of its own beside the target (mkstemp: created exclusively, never through a link), so two writers of the
  // same file never write into each other's temporary file.
  std::string partial = path.string() + ".partial-XXXXXX";
  const int fd = ::mkostemp(partial.data(), O_CLOEXEC);
  const auto fail = [&](const char* step, int error) {
    if (fd >= 0) ::unlink(partial.c_str());
    throw Error(fmt::format("cannot write '{}': {} failed: {}", path.string(), step, std::strerror(error)));
  };
  if (fd < 0) fail("creating a temporary file", errno);
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
  if (::fchmod(fd, 0644) != 0 || ::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail("fsync", error);
  }
  if (::close(fd) != 0) fail("close", errno);
  if (::rename(partial.c_str(), path.c_str()) != 0) fail("rename", errno);
  // The rename itself reaches the disk with its folder.
  const std::filesystem::path folder = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace edgesweep
