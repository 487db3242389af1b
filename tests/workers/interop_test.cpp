// Interop tests: every zoo model, exported from C++ with randomised batch-norm statistics (in fp32, and as static
// int8 for each quantized engine), must give Python's torch.jit.load the outputs C++ computed. The C++ side writes the archives, a fixed input and its outputs (raw
// little-endian float32) and a manifest; tests/interop/compare_torchscript.py compares under /usr/bin/python3.
#include <sys/wait.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/zoo.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";

/// Writes a float32 tensor as raw little-endian bytes, row-major.
void write_float32(const fs::path& path, const torch::Tensor& tensor) {
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
int run(const std::string& command, const fs::path& log) {
  const int status = std::system((command + " >'" + log.string() + "' 2>&1").c_str());
  return (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Batch-norm parameters and running statistics away from their initial 1 / 0 / 0 / 1.
void randomise_batch_norms(GraphModule& model) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < model->graph().nodes.size(); ++i) {
    if (model->graph().nodes[i].op != OpKind::BatchNorm) continue;
    const int index = static_cast<int>(i);
    model->weight(index).uniform_(0.5, 1.5);
    model->bias(index).normal_(0.0, 0.1);
    model->running_mean(index).normal_(0.0, 0.1);
    model->running_var(index).uniform_(0.5, 1.5);
  }
}

/// Runs compare_torchscript.py on the folder's manifest; the test fails with its report when a model disagrees.
void compare_in_python(const TempFolder& folder);

TEST(Interop, PythonTorchJitLoadGivesTheSameOutputs) {
  TempFolder folder("interop");
  ASSERT_EQ(run(std::string(kPython) + " -c 'import torch'", folder / "import.log"), 0)
      << kPython << " cannot import torch: install python3-torch (scripts/test installs it)\n"
      << read_text(folder / "import.log");

  torch::set_num_threads(1);  // the Python side runs at one thread too
  torch::manual_seed(20261123);
  const Shape input{3, 32, 32, false};
  const int64_t batch = 4, classes = 10;
  const auto x = torch::randn({batch, input.channels, input.height, input.width});
  write_float32(folder / "input.f32", x);
  Json manifest = {{"input", {{"file", "input.f32"}, {"shape", {batch, input.channels, input.height, input.width}}}},
                   {"models", Json::array()}};
  for (const std::string& arch : zoo_names()) {
    GraphModule model(build_zoo_model(arch, input, classes, 1.0));
    randomise_batch_norms(model);
    model->eval();
    torch::Tensor output;
    {
      torch::NoGradGuard no_grad;
      output = model->forward(x);
    }
    ASSERT_TRUE(torch::isfinite(output).all().item<bool>()) << arch;
    save_torchscript(model, Json{{"arch", arch}, {"num_classes", classes}}, folder / (arch + ".pt"));
    write_float32(folder / (arch + ".out.f32"), output);
    manifest["models"].push_back({{"name", arch},
                                  {"archive", arch + ".pt"},
                                  {"output", arch + ".out.f32"},
                                  {"output_shape", {batch, classes}}});
  }
  std::ofstream(folder / "manifest.json") << manifest.dump(2);
  compare_in_python(folder);
}

TEST(Interop, PythonRunsTheInt8ArchivesLikeCpp) {
  TempFolder folder("interop-int8");
  torch::set_num_threads(1);
  torch::manual_seed(20261201);
  const Shape input{3, 32, 32, false};
  const int64_t batch = 4, classes = 10;
  // Calibration images: 64 random pixels images; the inputs a normalised batch like the data loader gives.
  DataSplits data;
  data.train = Dataset{torch::randint(0, 256, {64, 3, 32, 32}, torch::kInt64).to(torch::kUInt8),
                       torch::zeros({64}, torch::kInt64)};
  data.input_shape = input;
  data.mean = {0.5, 0.5, 0.5};
  data.std = {0.25, 0.25, 0.25};
  const auto x = normalize_images(torch::randint(0, 256, {batch, 3, 32, 32}, torch::kInt64).to(torch::kUInt8),
                                  data.mean, data.std);
  write_float32(folder / "input.f32", x);
  Json manifest = {{"input", {{"file", "input.f32"}, {"shape", {batch, input.channels, input.height, input.width}}}},
                   {"models", Json::array()}};
  for (const std::string& engine : {"onednn", "qnnpack"}) {
    for (const std::string& arch : zoo_names()) {
      GraphModule model(build_zoo_model(arch, input, classes, 1.0));
      randomise_batch_norms(model);
      model->eval();
      QuantizeOptions options;
      options.engine = engine;
      options.calibration_batches = 2;
      options.calibration_batch_size = 32;
      ScriptedModel quantized = quantize_post_training(model, data, options);
      const torch::Tensor output = quantized.forward(x);
      ASSERT_TRUE(torch::isfinite(output).all().item<bool>()) << arch << " " << engine;
      const std::string name = arch + "-int8-" + engine;
      save_scripted_model(quantized, Json{{"arch", arch}, {"num_classes", classes}}, folder / (name + ".pt"));
      write_float32(folder / (name + ".out.f32"), output);
      manifest["models"].push_back({{"name", name},
                                    {"archive", name + ".pt"},
                                    {"output", name + ".out.f32"},
                                    {"output_shape", {batch, classes}}});
    }
  }
  std::ofstream(folder / "manifest.json") << manifest.dump(2);
  compare_in_python(folder);
}

void compare_in_python(const TempFolder& folder) {
  const fs::path script = fs::path(EDGESWEEP_SOURCE_DIR) / "tests" / "interop" / "compare_torchscript.py";
  ASSERT_TRUE(fs::exists(script)) << script;
  const int code = run(std::string(kPython) + " '" + script.string() + "' '" + folder.path().string() + "'",
                       folder / "compare.log");
  const std::string log = read_text(folder / "compare.log");
  std::cout << log;
  EXPECT_EQ(code, 0) << "compare_torchscript.py failed:\n" << log;
}

}  // namespace
}  // namespace edgesweep
