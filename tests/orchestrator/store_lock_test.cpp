// The owner lock of a store: a second owner is refused with the first one's pid and host, the lock goes with its
// owner (also when the owner is killed with SIGKILL), and it is never left behind.
#include "edgesweep/orchestrator/store_lock.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <fstream>
#include <optional>

#include "../workers/expect_error.h"
#include "../workers/temp_folder.h"
#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

std::string this_host() {
  std::array<char, 256> name{};
  gethostname(name.data(), name.size() - 1);
  return name.data();
}

TEST(StoreLock, ASecondOwnerIsRefusedNamingTheFirst) {
  TempFolder folder("store-lock");
  const auto store = folder / "results" / "edgesweep.db";
  std::optional<StoreLock> first;
  first.emplace(store);
  EXPECT_TRUE(std::filesystem::exists(StoreLock::lock_path(store)));
  expect_error<Error>([&] { StoreLock second(store); },
                      {"store '" + store.string() + "' is in use by another run",
                       fmt::format("pid {} on host {} since 20", getpid(), this_host()),
                       "edgesweep.db.lock", "status, trials, query and report work meanwhile"});
  first.reset();
  EXPECT_NO_THROW(StoreLock again(store));
  // Another store is another lock.
  EXPECT_NO_THROW({
    StoreLock one(store);
    StoreLock other(folder / "other.db");
  });
}

TEST(StoreLock, GoesWithAKilledOwner) {
  TempFolder folder("store-lock");
  const auto store = folder / "edgesweep.db";
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    try {
      StoreLock lock(store);
      const char byte = 'L';
      if (write(ready[1], &byte, 1) != 1) _exit(3);
      pause();  // until killed
    } catch (...) {
      _exit(2);
    }
    _exit(0);
  }
  close(ready[1]);
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  expect_error<Error>([&] { StoreLock refused(store); }, {fmt::format("pid {} on host", child)});
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_NO_THROW(StoreLock taken(store));  // nothing to clean up by hand
}

TEST(StoreLock, AnUnwritableFolderIsNamed) {
  if (geteuid() == 0) GTEST_SKIP() << "root writes into read-only folders";
  TempFolder folder("store-lock");
  std::filesystem::create_directories(folder / "closed");
  std::filesystem::permissions(folder / "closed", std::filesystem::perms::owner_read | std::filesystem::perms::owner_exec);
  expect_error<Error>([&] { StoreLock lock(folder / "closed" / "edgesweep.db"); },
                      {"cannot create the lock file", "closed/edgesweep.db.lock"});
  std::filesystem::permissions(folder / "closed", std::filesystem::perms::owner_all);
}

}  // namespace
}  // namespace edgesweep
