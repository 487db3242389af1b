// What every bench tool ends with: its Markdown report written to a file and printed, and a main that turns errors
// into exit codes (2 for bad input, 1 otherwise).
#pragma once

#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "edgesweep/common/allocator.h"
#include "edgesweep/common/error.h"

namespace edgesweep::bench {

/// Writes `text` to `output` (creating its folder) and prints it.
inline void write_report(const std::filesystem::path& output, const std::string& text) {
  if (output.has_parent_path()) std::filesystem::create_directories(output.parent_path());
  std::ofstream file(output);
  check(static_cast<bool>(file), "cannot write '{}'", output.string());
  file << text;
  fmt::print("{}", text);
}

/// Runs a bench tool's `run`, printing any error: exit 2 for bad input, 1 for anything else.
inline int main_of(int (*run)(int, char**), int argc, char** argv) {
  try {
    configure_allocator();  // as every edgesweep process: see common/allocator.h
    return run(argc, argv);
  } catch (const InputError& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}

}  // namespace edgesweep::bench
