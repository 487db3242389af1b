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
#include "python_interop.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

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
  for (const std::string engine : {"onednn", "qnnpack"}) {
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

}  // namespace
}  // namespace edgesweep
