// The allocator policy: "kept" serves even a large block from the heap (nothing mmapped) and keeps it there once
// freed, so the next run of a network reuses those pages; bad names are refused naming the variable.
#include <malloc.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include <cstring>

#include "../workers/expect_error.h"
#include "edgesweep/common/allocator.h"
#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

/// Whether glibc's malloc is the one in use (not a sanitizer's).
bool glibc_malloc() {
#if defined(__SANITIZE_ADDRESS__)
  return false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  return false;
#else
  return true;
#endif
#else
  return true;
#endif
}

TEST(Allocator, KeptServesLargeBlocksFromTheHeapAndKeepsThemWhenFreed) {
  apply_allocator_policy("kept");
  if (!glibc_malloc()) {
    EXPECT_EQ(allocator_policy(), "default (the allocator in use ignores mallopt)");
    GTEST_SKIP() << "the sanitizer's allocator replaces glibc's";
  }
  EXPECT_EQ(allocator_policy(), "kept");
  constexpr size_t bytes = size_t{64} << 20;  // over glibc's largest mmap threshold (32 MiB)
  const struct mallinfo2 before = mallinfo2();
  char* block = static_cast<char*>(std::malloc(bytes));
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, bytes);
  const struct mallinfo2 holding = mallinfo2();
  EXPECT_EQ(holding.hblkhd, before.hblkhd) << "the block was mmapped";
  EXPECT_GE(holding.arena, before.arena + bytes);
  std::free(block);
  const struct mallinfo2 after = mallinfo2();
  EXPECT_EQ(after.arena, holding.arena) << "the freed block went back to the kernel";
  EXPECT_GE(after.fordblks, bytes);
}

TEST(Allocator, PolicyNamesAreChecked) {
  expect_error<InputError>([] { apply_allocator_policy("jemalloc"); }, {"'jemalloc'", "kept, default"});
  setenv("EDGESWEEP_ALLOCATOR", "fast", 1);
  expect_error<InputError>([] { configure_allocator(); }, {"EDGESWEEP_ALLOCATOR='fast'", "kept (the default)"});
  setenv("EDGESWEEP_ALLOCATOR", "default", 1);
  EXPECT_EQ(configure_allocator(), "default");
  EXPECT_EQ(allocator_policy(), "default");
  unsetenv("EDGESWEEP_ALLOCATOR");
  EXPECT_EQ(configure_allocator(), glibc_malloc() ? "kept" : "default (the allocator in use ignores mallopt)");
}

}  // namespace
}  // namespace edgesweep
