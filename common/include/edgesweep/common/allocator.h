// How the C library's allocator treats the memory a process frees. By default glibc serves blocks over a (moving)
// threshold with fresh mmaps and returns the top of its heap to the kernel once it is free, so a network run again
// and again maps, faults in and unmaps its larger activations on every run; on this project's machines that cost more
// than the arithmetic (a torchvision ResNet-18 at batch 32 took 104 ms instead of 45). "kept" makes the heap hold
// what was freed, as a long-running inference process or a caching allocator does: every edgesweep process (training,
// the benchmark child, in-process latency, the bench tools) starts with it. EDGESWEEP_ALLOCATOR=default keeps
// glibc's own behaviour, to measure a deployment that runs with it. LibTorch-free.
#pragma once

#include <string>

namespace edgesweep {

/// Applies the policy named by EDGESWEEP_ALLOCATOR ("kept" when unset, or "default") to this process and returns
/// what is in effect (allocator_policy()); call it first in main. Throws InputError naming the variable and its value
/// for anything else.
std::string configure_allocator();

/// Applies `policy` ("kept" or "default"); throws InputError for another name. "default" changes nothing.
void apply_allocator_policy(const std::string& policy);

/// The policy in effect: "kept", "default", or "default (the allocator in use ignores mallopt)" when "kept" was asked
/// of an allocator that replaces glibc's (a sanitizer's, a preloaded one).
const std::string& allocator_policy();

}  // namespace edgesweep
