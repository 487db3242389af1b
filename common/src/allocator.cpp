// The allocator policy of an edgesweep process (see allocator.h).
#include "edgesweep/common/allocator.h"

#include <malloc.h>

#include <climits>
#include <cstdlib>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

std::string& applied() {
  static std::string policy = "default";
  return policy;
}

}  // namespace

void apply_allocator_policy(const std::string& policy) {
  check_input(policy == "kept" || policy == "default",
              "allocator policy '{}' is not one of: kept, default", policy);
  if (policy == "kept") {
    // No block is served by mmap (each would be faulted in afresh and unmapped on free), and the heap's free top is
    // never given back. A thread's arena still falls back to mmap for a block larger than its heap can grow to.
    // An allocator that replaces glibc's (a sanitizer's, a preloaded jemalloc) ignores mallopt: said, not fatal.
    const bool kept = mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
    applied() = kept ? "kept" : "default (the allocator in use ignores mallopt)";
    return;
  }
  applied() = policy;
}

std::string configure_allocator() {
  const char* value = std::getenv("EDGESWEEP_ALLOCATOR");
  const std::string policy = value == nullptr || *value == '\0' ? "kept" : value;
  check_input(policy == "kept" || policy == "default",
              "EDGESWEEP_ALLOCATOR='{}' is not one of: kept (the default), default", policy);
  apply_allocator_policy(policy);
  return allocator_policy();
}

const std::string& allocator_policy() { return applied(); }

}  // namespace edgesweep
