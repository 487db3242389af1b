// The owner lock of a store (see store_lock.h).
#include "edgesweep/orchestrator/store_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

std::string host_name() {
  std::array<char, 256> name{};
  if (gethostname(name.data(), name.size() - 1) != 0) return "an unknown host";
  return name.data();
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm parts{};
  gmtime_r(&now, &parts);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &parts);
  return text.data();
}

/// What the lock file says of its owner, one line at most.
std::string read_owner(int fd) {
  std::array<char, 512> buffer{};
  const ssize_t got = pread(fd, buffer.data(), buffer.size() - 1, 0);
  std::string text = got > 0 ? std::string(buffer.data(), static_cast<size_t>(got)) : std::string();
  const size_t end = text.find('\n');
  if (end != std::string::npos) text.resize(end);
  return text.empty() ? "a process that has not written its name yet" : text;
}

}  // namespace

std::filesystem::path StoreLock::lock_path(const std::filesystem::path& store) {
  return std::filesystem::path(store.string() + ".lock");
}

StoreLock::StoreLock(const std::filesystem::path& store) {
  const std::filesystem::path path = lock_path(store);
  std::error_code ignored;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ignored);
  fd_ = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  check(fd_ >= 0, "cannot create the lock file '{}' of store '{}': {}", path.string(), store.string(),
        std::strerror(errno));
  int locked = 0;
  do {
    locked = flock(fd_, LOCK_EX | LOCK_NB);
  } while (locked != 0 && errno == EINTR);
  if (locked != 0) {
    const int error = errno;
    const std::string owner = error == EWOULDBLOCK ? read_owner(fd_) : std::string();
    close(fd_);
    fd_ = -1;
    check(error != EWOULDBLOCK,
          "store '{}' is in use by another run ({}; lock file '{}'): one run owns a store at a time. Wait for it to "
          "end or stop it; status, trials, query and report work meanwhile",
          store.string(), owner, path.string());
    throw Error(fmt::format("cannot lock '{}' of store '{}': {}", path.string(), store.string(),
                            std::strerror(error)));
  }
  const std::string owner = fmt::format("pid {} on host {} since {}\n", getpid(), host_name(), utc_now());
  if (ftruncate(fd_, 0) != 0 || pwrite(fd_, owner.data(), owner.size(), 0) != static_cast<ssize_t>(owner.size())) {
    // The lock holds all the same; only a refused run's message loses the owner's name.
    fmt::print(stderr, "warning: cannot write the owner into '{}': {}\n", path.string(), std::strerror(errno));
  }
}

StoreLock::~StoreLock() {
  if (fd_ >= 0) close(fd_);  // releases the lock; the file stays (removing it would race with the next owner)
}

}  // namespace edgesweep
