// Error types shared by every layer: what the user got wrong (exit 2) versus what failed (exit 1).
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace edgesweep {

/// Something failed while running: I/O, a library, a trial. Maps to exit code 1.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The user's input is wrong: a file, a key, a value. Maps to exit code 2.
class InputError : public Error {
 public:
  using Error::Error;
};

/// A task stopped because it ran past its wall-clock limit ([run] trial_timeout_seconds); its message is
/// "timeout after N s". Passes through rethrow_with_context unchanged.
class TrialTimeout : public Error {
 public:
  explicit TrialTimeout(double limit_seconds);
};

/// Throws InputError with a formatted message when `condition` is false; for checking user input.
template <typename... Args>
void check_input(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) throw InputError(fmt::format(format, std::forward<Args>(args)...));
}

/// Throws Error with a formatted message when `condition` is false; for checking results of operations.
template <typename... Args>
void check(bool condition, fmt::format_string<Args...> format, Args&&... args) {
  if (!condition) throw Error(fmt::format(format, std::forward<Args>(args)...));
}

/// Rethrows the exception in flight with `context` in front of its message, keeping its type.
[[noreturn]] void rethrow_with_context(const std::string& context);

}  // namespace edgesweep

/// An invariant of the code itself; a failure is a bug, never a user's mistake.
#define EDGESWEEP_ASSERT(condition)                                                                  \
  do {                                                                                               \
    if (!(condition))                                                                                \
      throw ::edgesweep::Error(::fmt::format("internal error: {} at {}:{}", #condition, __FILE__, __LINE__)); \
  } while (false)
