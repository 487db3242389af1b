// Wall-clock time as Unix seconds, the form the store keeps retry times and heartbeats in.
#pragma once

#include <chrono>

namespace edgesweep {

inline double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace edgesweep
