// Tests of mixed-precision training and the channels-last layout: the CPU's bf16 support read from its flags, the
// refusals, autocast scopes, dynamic loss scaling, the layout and its probe leaving the model as it was, and the
// training loop and a whole trial (prune, distill, QAT) in bf16. The bf16 runs skip, with the reason, on a CPU
// without AVX-512 BF16 or AMX.
#include "edgesweep/workers/mixed_precision.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/task.h"
#include "edgesweep/workers/device.h"
#include "edgesweep/workers/run_task.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "fake_datasets.h"
#include "stage_configs.h"
#include "temp_folder.h"
#include "tiny_tasks.h"

namespace edgesweep {
namespace {

TEST(Bf16Support, IsReadFromTheCpuFlags) {
  EXPECT_EQ(cpu_bf16_unavailable_reason("processor : 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n"), "");
  EXPECT_EQ(cpu_bf16_unavailable_reason("flags : fpu amx_tile amx_bf16\n"), "");
  const std::string without = cpu_bf16_unavailable_reason("flags : fpu sse avx2 avx512f avx512_vnni\n");
  EXPECT_NE(without.find("neither AVX-512 BF16 (avx512_bf16) nor AMX (amx_bf16)"), std::string::npos) << without;
  // A flag is a whole word: avx512_bf16x is not avx512_bf16.
  EXPECT_NE(cpu_bf16_unavailable_reason("flags : avx512_bf16x\n"), "");
  EXPECT_NE(cpu_bf16_unavailable_reason("processor : 0\n").find("not readable"), std::string::npos);
}

TEST(Precision, UnusableCombinationsAreRefusedWithTheReason) {
  EXPECT_NO_THROW(check_precision_usable("fp32", torch::kCPU, "precision"));
  expect_error<InputError>([] { check_precision_usable("fp8", torch::kCPU, "pipeline[0]: precision"); },
                           {"pipeline[0]: precision = \"fp8\"", "expected fp32, bf16 or fp16"});
  expect_error<InputError>([] { check_precision_usable("fp16", torch::kCPU, "precision"); },
                           {"precision = \"fp16\" on the CPU", "use bf16"});
  const std::string reason = cpu_bf16_unavailable_reason();
  if (reason.empty()) {
    EXPECT_NO_THROW(check_precision_usable("bf16", torch::kCPU, "precision"));
  } else {
    expect_error<InputError>([] { check_precision_usable("bf16", torch::kCPU, "precision"); }, {reason});
  }
}

TEST(Autocast, RunsConvolutionsInBf16InsideItsScopeOnlyAndNests) {
  const torch::Tensor x = torch::randn({2, 3, 8, 8});
  const torch::Tensor w = torch::randn({4, 3, 3, 3});
  EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kFloat32);
  {
    const AutocastScope outer("bf16", torch::kCPU);
    EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kBFloat16);
    {
      const AutocastScope inner("fp32", torch::kCPU);  // fp32 changes nothing, inside or out
      EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(at_least_fp32(torch::conv2d(x, w)).scalar_type(), torch::kFloat32);
  }
  EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kFloat32);
  EXPECT_EQ(at_least_fp32(torch::ones({1}, torch::kFloat64)).scalar_type(), torch::kFloat64);  // never narrowed
}

TEST(LossScaler, UnscalesSkipsStepsWithInfinitiesAndGrowsAfterGoodSteps) {
  torch::Tensor p = torch::zeros({3}, torch::requires_grad());
  LossScaler scaler(true, 8.0, /*growth_interval=*/2);
  EXPECT_DOUBLE_EQ(scaler.scaled(torch::ones({})).item<double>(), 8.0);
  p.mutable_grad() = torch::full({3}, 16.0);
  EXPECT_TRUE(scaler.unscale_and_update({p}));
  EXPECT_TRUE(torch::equal(p.grad(), torch::full({3}, 2.0)));
  EXPECT_DOUBLE_EQ(scaler.scale(), 8.0);
  p.mutable_grad() = torch::full({3}, 8.0);
  EXPECT_TRUE(scaler.unscale_and_update({p}));
  EXPECT_DOUBLE_EQ(scaler.scale(), 16.0);  // two good steps in a row: doubled
  p.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 0.0f});
  EXPECT_FALSE(scaler.unscale_and_update({p}));
  EXPECT_DOUBLE_EQ(scaler.scale(), 8.0);  // halved
  EXPECT_EQ(scaler.skipped_steps(), 1);
  p.mutable_grad() = torch::full({3}, std::nan(""));
  EXPECT_FALSE(scaler.unscale_and_update({p}));
  EXPECT_EQ(scaler.skipped_steps(), 2);
  LossScaler off(false);
  p.mutable_grad() = torch::full({3}, 5.0);
  EXPECT_TRUE(off.unscale_and_update({p}));
  EXPECT_TRUE(torch::equal(p.grad(), torch::full({3}, 5.0)));
  EXPECT_DOUBLE_EQ(off.scaled(torch::ones({})).item<double>(), 1.0);
}

GraphModule small_cnn() {
  torch::manual_seed(2);
  return GraphModule(build_zoo_model("small-cnn", Shape{1, 28, 28, false}, 10, 0.5));
}

TEST(MemoryFormat, ConvolutionWeightsChangeLayoutNotValuesAndTheProbeLeavesTheModelAsItWas) {
  GraphModule model = small_cnn();
  ASSERT_TRUE(has_convolutions(model));
  // With one input channel the first convolution's weight is contiguous in both layouts; it is restrided all the
  // same (else the first convolution's output, and all after it, would stay NCHW).
  set_memory_format(model, torch::MemoryFormat::ChannelsLast);
  for (const torch::Tensor& t : model->parameters()) {
    if (t.dim() == 4) {
      EXPECT_EQ(t.suggest_memory_format(), torch::MemoryFormat::ChannelsLast) << t.sizes();
    }
  }
  const torch::Tensor one_channel = in_memory_format(torch::randn({2, 1, 28, 28}), torch::MemoryFormat::ChannelsLast);
  EXPECT_EQ(one_channel.suggest_memory_format(), torch::MemoryFormat::ChannelsLast);
  // Every 4-D value inside the network is channels-last, from the first convolution on.
  std::vector<torch::MemoryFormat> inside;
  model->output_transform = [&](int, const torch::Tensor& value) {
    if (value.dim() == 4) inside.push_back(value.suggest_memory_format());
    return value;
  };
  {
    torch::NoGradGuard no_grad;
    model->forward(one_channel);
  }
  model->output_transform = nullptr;
  ASSERT_FALSE(inside.empty());
  for (const torch::MemoryFormat format : inside) EXPECT_EQ(format, torch::MemoryFormat::ChannelsLast);
  set_memory_format(model, torch::MemoryFormat::Contiguous);
  for (const torch::Tensor& t : model->parameters()) {
    if (t.dim() == 4) {
      EXPECT_EQ(t.suggest_memory_format(), torch::MemoryFormat::Contiguous) << t.sizes();
    }
  }
  // The second convolution: a plain case.
  torch::Tensor conv2;
  for (const torch::Tensor& t : model->parameters()) {
    if (t.dim() == 4 && t.size(1) > 1) {
      conv2 = t;
      break;
    }
  }
  ASSERT_TRUE(conv2.defined());
  const torch::Tensor weight = conv2.clone();
  set_memory_format(model, torch::MemoryFormat::ChannelsLast);
  EXPECT_TRUE(conv2.is_contiguous(torch::MemoryFormat::ChannelsLast));
  EXPECT_FALSE(conv2.is_contiguous());
  EXPECT_TRUE(torch::equal(conv2, weight));
  set_memory_format(model, torch::MemoryFormat::Contiguous);
  EXPECT_TRUE(conv2.is_contiguous());

  std::vector<torch::Tensor> before;
  for (const torch::Tensor& t : model->parameters()) before.push_back(t.clone());
  for (const torch::Tensor& t : model->buffers()) before.push_back(t.clone());
  model->train();
  channels_last_is_faster(model, Shape{1, 28, 28, false}, 16, "fp32", torch::kCPU);
  EXPECT_TRUE(model->is_training());
  size_t k = 0;
  for (const torch::Tensor& t : model->parameters()) {
    EXPECT_TRUE(torch::equal(t, before[k++]));
    EXPECT_FALSE(t.grad().defined());
    EXPECT_TRUE(t.is_contiguous());
  }
  for (const torch::Tensor& t : model->buffers()) EXPECT_TRUE(torch::equal(t, before[k++]));  // running statistics

  GraphModule flat(graph_from_layers(Json::parse(R"([{"op": "flatten"}, {"op": "linear", "out": 4}])"),
                                     Shape{4, 1, 1, false}, 4));
  EXPECT_FALSE(has_convolutions(flat));
  EXPECT_FALSE(channels_last_is_faster(flat, Shape{4, 1, 1, false}, 8, "fp32", torch::kCPU));
}

DataSplits digits_like(int64_t images) {
  torch::Generator generator = at::detail::createCPUGenerator(3);
  // Class c: a bright 6x6 square at one of 10 places, on noise: learnable within an epoch or two.
  auto labels = torch::randint(0, 10, {images}, generator, torch::kInt64);
  auto pictures = torch::randint(0, 60, {images, 1, 28, 28}, generator, torch::kInt64);
  for (int64_t i = 0; i < images; ++i) {
    const int64_t c = labels[i].item<int64_t>();
    const int64_t row = (c / 5) * 12 + 4, column = (c % 5) * 5 + 1;
    pictures[i].slice(1, row, row + 6).slice(2, column, column + 4).fill_(230);
  }
  DataSplits data;
  data.train = Dataset{pictures.to(torch::kUInt8), labels};
  data.input_shape = Shape{1, 28, 28, false};
  data.mean = {0.2};
  data.std = {0.3};
  for (int i = 0; i < 10; ++i) data.class_names.push_back(std::to_string(i));
  data.id = "squares@mixed-precision-test";
  return data;
}

TrainConfig two_epochs(const std::string& precision) {
  TrainConfig config;
  config.epochs = 2;
  config.batch_size = 32;
  config.lr = 0.05;
  config.precision = precision;
  return config;
}

TEST(MemoryFormat, AChannelsLastTrainingGivesWhatAContiguousOneGivesAndEndsContiguous) {
  const DataSplits data = digits_like(256);
  std::vector<EpochRecord> runs[2];
  const char* formats[2] = {"contiguous", "channels-last"};
  for (int i = 0; i < 2; ++i) {
    const task_device::Scope scope(torch::kCPU, formats[i]);
    GraphModule model = small_cnn();
    runs[i] = train_model(model, data, two_epochs("fp32"), false, 9);
    for (const torch::Tensor& t : model->parameters()) EXPECT_TRUE(t.is_contiguous());
  }
  ASSERT_EQ(runs[0].size(), 2u);
  ASSERT_EQ(runs[1].size(), 2u);
  EXPECT_FALSE(runs[0][0].channels_last);
  EXPECT_TRUE(runs[1][0].channels_last);
  for (size_t e = 0; e < 2; ++e) EXPECT_NEAR(runs[1][e].train_loss, runs[0][e].train_loss, 1e-3);
}

TEST(MixedPrecision, Bf16TrainingLearnsKeepsFp32WeightsAndTracksFp32) {
  if (const std::string reason = cpu_bf16_unavailable_reason(); !reason.empty()) GTEST_SKIP() << reason;
  const DataSplits data = digits_like(512);
  GraphModule fp32 = small_cnn();
  const auto reference = train_model(fp32, data, two_epochs("fp32"), false, 4);
  GraphModule bf16 = small_cnn();
  const auto mixed = train_model(bf16, data, two_epochs("bf16"), false, 4);
  for (const torch::Tensor& t : bf16->parameters()) EXPECT_EQ(t.scalar_type(), torch::kFloat32);
  for (const torch::Tensor& t : bf16->buffers()) EXPECT_NE(t.scalar_type(), torch::kBFloat16);
  ASSERT_EQ(mixed.size(), 2u);
  EXPECT_LT(mixed[1].train_loss, 0.5 * mixed[0].train_loss + 1.0);
  EXPECT_GT(mixed[1].train_accuracy, 80.0) << "the squares are easy";
  // bf16 keeps 8 bits of mantissa: the losses follow fp32's closely, not bit for bit.
  for (size_t e = 0; e < 2; ++e) {
    EXPECT_NEAR(mixed[e].train_loss, reference[e].train_loss, 0.1 * reference[e].train_loss + 0.02) << e;
    EXPECT_NE(mixed[e].train_loss, reference[e].train_loss) << "bf16 changed nothing: was autocast on?";
  }
}

TEST(MixedPrecision, ATrialPrunesDistilsAndRunsQatInBf16AndExportsInt8) {
  if (const std::string reason = cpu_bf16_unavailable_reason(); !reason.empty()) GTEST_SKIP() << reason;
  const TempFolder folder{"bf16-trial"};
  write_fashion_mnist_folder(folder / "data", labels_with_counts(std::vector<int>(10, 12)),
                             labels_with_counts(std::vector<int>(10, 4)));
  Task task = baseline_task(folder / "data", folder / "results", {0, 1, 2}, 1);
  task.config.baseline.precision = "bf16";
  const TaskResult baseline = run_task(task);
  ASSERT_TRUE(baseline.ok) << baseline.error;
  task.kind = "trial";
  task.trial_id = 2;
  task.baseline_path = baseline.artifacts.at(0).path;
  task.baseline_sha256 = baseline.artifacts.at(0).sha256;
  task.config.pipeline = {
      stage_config("prune", {{"method", "block"}, {"sparsity", 0.5}, {"finetune_epochs", 1}, {"batch_size", 16},
                             {"distill", true}, {"precision", "bf16"}}),
      stage_config("distill", {{"epochs", 1}, {"batch_size", 16}, {"hint_layer", "conv1"}, {"precision", "bf16"}}),
      stage_config("quantize", {{"mode", "qat-int8"}, {"qat_epochs", 1}, {"calibration_batches", 2},
                                {"batch_size", 16}, {"precision", "bf16"}})};
  const TaskResult trial = run_task(task);
  ASSERT_TRUE(trial.ok) << trial.error;
  EXPECT_EQ(trial.artifacts.at(0).metadata.at("precision"), "int8");
  double accuracy = -1;
  for (const Metric& m : trial.metrics) {
    if (m.name == "test_accuracy" && m.step == -1) accuracy = m.value;
  }
  EXPECT_GE(accuracy, 0.0);
}

}  // namespace
}  // namespace edgesweep
