// One run owns a store at a time. A run takes an exclusive flock(2) on "<store>.lock" before it opens the store
// for writing; the kernel releases it when the owner ends, however it ends (SIGKILL and crashes included), so a
// lock is never left behind. The file holds the owner's host, pid and start, which a refused run names. The
// commands that only read (status, trials, query, report, pareto, export) never take it and work during a run.
#pragma once

#include <filesystem>
#include <string>

namespace edgesweep {

class StoreLock {
 public:
  /// Takes the lock of the store file `store` (creating "<store>.lock" beside it, left in place afterwards).
  /// Throws Error naming the store, the owner ("pid P on host H since T") and the lock file when another process
  /// holds it, or naming the lock file when it cannot be created.
  explicit StoreLock(const std::filesystem::path& store);
  ~StoreLock();
  StoreLock(const StoreLock&) = delete;
  StoreLock& operator=(const StoreLock&) = delete;

  /// The lock file of a store.
  static std::filesystem::path lock_path(const std::filesystem::path& store);

 private:
  int fd_ = -1;
};

}  // namespace edgesweep
