// Helpers of the tests that hand archives to Python's torch (/usr/bin/python3): raw float32 files, running a
// command with its output in a log, and the comparison script tests/interop/compare_torchscript.py.
#pragma once

#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "temp_folder.h"

namespace edgesweep {

namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";

/// Writes a float32 tensor as raw little-endian bytes, row-major.
inline void write_float32(const fs::path& path, const torch::Tensor& tensor) {
  const auto values = tensor.to(torch::kFloat32).contiguous();
  const float* data = values.data_ptr<float>();
  std::string bytes;
  for (int64_t i = 0; i < values.numel(); ++i) {
    uint32_t bits = 0;
    std::memcpy(&bits, &data[i], sizeof bits);
    for (int shift = 0; shift < 32; shift += 8) bytes.push_back(static_cast<char>((bits >> shift) & 0xff));
  }
  std::ofstream out(path, std::ios::binary);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

/// Runs a shell command with its output sent to `log`; returns the exit code, or -1 when it did not exit.
inline int run(const std::string& command, const fs::path& log) {
  const int status = std::system((command + " >'" + log.string() + "' 2>&1").c_str());
  return (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
}

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Runs compare_torchscript.py on the folder's manifest; the test fails with its report when a model disagrees.
inline void compare_in_python(const TempFolder& folder) {
  const fs::path script = fs::path(EDGESWEEP_SOURCE_DIR) / "tests" / "interop" / "compare_torchscript.py";
  ASSERT_TRUE(fs::exists(script)) << script;
  const int code = run(std::string(kPython) + " '" + script.string() + "' '" + folder.path().string() + "'",
                       folder / "compare.log");
  const std::string log = read_text(folder / "compare.log");
  std::cout << log;
  EXPECT_EQ(code, 0) << "compare_torchscript.py failed:\n" << log;
}

}  // namespace edgesweep
