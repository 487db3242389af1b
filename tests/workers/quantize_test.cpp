// Tests of quantization against its definitions: observer ranges and affine parameters on known data, the
// straight-through gradient of fake quantization, exact batch-norm folding, int8 conv and linear against fp32 within
// a bound derived from the quantization steps, prediction agreement of int8 small-cnn and resnet8, every exported
// variant loading with torch::jit::load, file sizes, quantize after block pruning, QAT, and the stage's errors.
#include "edgesweep/workers/compress/quantize.h"

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "stage_configs.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

/// Four brightness levels of noisy size x size grey images, one class each.
DataSplits brightness_levels(int64_t size, int64_t train = 256) {
  torch::manual_seed(21);
  const auto make = [size](int64_t n) {
    auto labels = torch::arange(n, torch::kInt64).remainder(4);
    auto noise = torch::randint(0, 90, {n, 1, size, size}, torch::kInt64);
    return Dataset{(noise + labels.view({n, 1, 1, 1}) * 55).to(torch::kUInt8), labels};
  };
  DataSplits data;
  data.train = make(train);
  data.val = make(64);
  data.test = make(256);
  data.class_names = {"a", "b", "c", "d"};
  data.input_shape = Shape{1, size, size, false};
  data.mean = {0.5};
  data.std = {0.3};
  data.id = "levels@test";
  return data;
}

GraphModule zoo_model(const std::string& arch, const DataSplits& data, uint64_t seed) {
  torch::manual_seed(seed);
  return GraphModule(build_zoo_model(arch, data.input_shape, 4, 0.5));
}

GraphModule trained_zoo_model(const std::string& arch, const DataSplits& data, uint64_t seed) {
  GraphModule model = zoo_model(arch, data, seed);
  TrainConfig config;
  config.epochs = 2;
  config.lr = 0.05;
  config.batch_size = 32;
  train_model(model, data, config, false, seed);
  model->eval();
  return model;
}

void randomize_batchnorm(GraphModule& model, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < model->graph().nodes.size(); ++i) {
    if (model->graph().nodes[i].op != OpKind::BatchNorm) continue;
    const int n = static_cast<int>(i);
    model->weight(n).uniform_(0.5, 1.5);
    model->bias(n).uniform_(-0.5, 0.5);
    model->running_mean(n).uniform_(-0.2, 0.2);
    model->running_var(n).uniform_(0.5, 2.0);
  }
}

torch::Tensor eval_output(GraphModule& model, const torch::Tensor& input) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(input);
}

torch::Tensor test_inputs(const DataSplits& data) {
  return normalize_images(data.test.images, data.mean, data.std);
}

double agreement(const torch::Tensor& a, const torch::Tensor& b) {
  return 100.0 * a.argmax(1).eq(b.argmax(1)).to(torch::kFloat64).mean().item<double>();
}

QuantizeOptions static_options(const std::string& engine = "onednn", bool per_channel = true) {
  QuantizeOptions options;
  options.mode = "static-int8";
  options.engine = engine;
  options.per_channel = per_channel;
  options.calibration_batches = 8;
  options.calibration_batch_size = 32;
  return options;
}

/// The quantize stage's parameters: schema defaults with `overrides`.
StageConfig quantize_stage_config(const Json& overrides) { return stage_config("quantize", overrides); }

TEST(QuantizeObserver, MinMaxGivesExactScaleAndZeroPoint) {
  ActivationObserver observer(ObserverKind::MinMax);
  observer.observe(torch::tensor({-0.5, 0.0, 3.0}));
  observer.observe(torch::tensor({-1.0, 2.0}));
  EXPECT_EQ(observer.range(), std::make_pair(-1.0, 3.0));
  const QuantParams p = observer.qparams();
  EXPECT_DOUBLE_EQ(p.scale, 4.0 / 255.0);
  EXPECT_EQ(p.zero_point, 64);  // round(1 / (4 / 255)) = round(63.75)
  // A range without 0 is widened to include it: relu outputs get zero point 0.
  const QuantParams positive = affine_qparams(0.5, 2.55);
  EXPECT_DOUBLE_EQ(positive.scale, 0.01);
  EXPECT_EQ(positive.zero_point, 0);
}

TEST(QuantizeObserver, MovingAverageFollowsBatchesWithConstantOneHundredth) {
  ActivationObserver observer(ObserverKind::MovingAverage);
  observer.observe(torch::tensor({0.0, 1.0}));
  observer.observe(torch::tensor({-1.0, 2.0}));
  EXPECT_NEAR(observer.range().first, -0.01, 1e-12);
  EXPECT_NEAR(observer.range().second, 1.01, 1e-12);
}

TEST(QuantizeObserver, HistogramPercentileClipsOutliersWhereMinMaxDoesNot) {
  torch::manual_seed(3);
  const auto bulk = torch::rand({100000});
  for (bool outlier_first : {true, false}) {
    ActivationObserver histogram(ObserverKind::Histogram, 99.99);
    ActivationObserver minmax(ObserverKind::MinMax);
    const auto outlier = torch::tensor({100.0f});
    const std::vector<torch::Tensor> batches = outlier_first
                                                   ? std::vector<torch::Tensor>{torch::cat({bulk, outlier}), bulk}
                                                   : std::vector<torch::Tensor>{bulk, torch::cat({bulk, outlier})};
    for (const auto& b : batches) {
      histogram.observe(b);
      minmax.observe(b);
    }
    EXPECT_EQ(minmax.range().second, 100.0);
    // 99.99% of 200,001 values lie below ~1; the histogram's bins are 100 / 2048 wide.
    EXPECT_GT(histogram.range().second, 0.95) << outlier_first;
    EXPECT_LT(histogram.range().second, 1.0 + 2 * 100.0 / 2048) << outlier_first;
    EXPECT_GE(histogram.range().first, 0.0);
    EXPECT_LT(histogram.range().first, 0.01 + 100.0 / 2048);
  }
}

TEST(FakeQuantize, StraightThroughGradientInsideTheRangeAndZeroOutside) {
  // quint8 with scale 0.02 and zero point 10 represents [-0.2, 4.9].
  const QuantParams params{0.02, 10};
  auto x = torch::tensor({-1.0f, -0.1f, 0.0f, 2.5f, 4.85f, 6.0f}, torch::requires_grad());
  const auto y = fake_quantize_activation(x, params);
  y.sum().backward();
  const auto expected = torch::tensor({0.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f});
  EXPECT_TRUE(torch::equal(x.grad(), expected)) << x.grad();
  EXPECT_NEAR(y[0].item<double>(), -0.2, 1e-6);  // clamped to the range
  EXPECT_NEAR(y[5].item<double>(), 4.9, 1e-6);
  EXPECT_NEAR(y[3].item<double>(), 2.5, 0.01 + 1e-6);  // rounded to the grid, within half a step

  // Weights: every value is inside the symmetric range its scale comes from, so the gradient passes everywhere.
  torch::manual_seed(4);
  auto w = torch::randn({4, 3, 3, 3}, torch::requires_grad());
  fake_quantize_weight(w, true).sum().backward();
  EXPECT_TRUE(torch::equal(w.grad(), torch::ones_like(w)));
  const auto quantized = quantize_weight(w, true);
  EXPECT_TRUE(torch::allclose(fake_quantize_weight(w, true).detach(), quantized.dequantize(), 0, 1e-6));
  EXPECT_LE(quantized.int_repr().abs().max().item<int>(), 127);
}

TEST(QuantizeFolding, BatchNormFoldedIntoConvIsExactInEval) {
  const DataSplits data = brightness_levels(16);
  for (const char* arch : {"small-cnn", "resnet8", "mobilenetv2"}) {
    GraphModule model = zoo_model(arch, data, 5);
    randomize_batchnorm(model, 6);
    GraphModule folded = fold_batchnorm(model);
    int batchnorms = 0;
    for (const Node& node : folded->graph().nodes) batchnorms += node.op == OpKind::BatchNorm ? 1 : 0;
    EXPECT_EQ(batchnorms, 0) << arch;
    EXPECT_LT(count_params(folded->graph()), count_params(model->graph()));
    const auto input = test_inputs(data).slice(0, 0, 32);
    const auto expected = eval_output(model, input);
    const auto actual = eval_output(folded, input);
    EXPECT_LE((expected - actual).abs().max().item<double>(), 1e-5) << arch;
  }
}

TEST(QuantizePlan, FusesReluIntoConvAndQuantizesTheInputWhereAConvReadsIt) {
  const DataSplits data = brightness_levels(16);
  GraphModule folded = fold_batchnorm(zoo_model("resnet8", data, 7));
  const Graph& graph = folded->graph();
  const QuantizationPlan plan = plan_quantization(graph);
  EXPECT_TRUE(plan.observed[0]);  // the input, quantized where the stem conv reads it
  const int stem = graph.find("stem_conv");
  const int stem_relu = graph.find("stem_relu");
  EXPECT_EQ(plan.fused_into[stem_relu], stem);
  EXPECT_FALSE(plan.observed[stem]);
  EXPECT_EQ(plan.params_source[stem], stem_relu);
  const int add = graph.find("layer1_0_add");
  EXPECT_EQ(plan.fused_into[graph.find("layer1_0_relu")], add);
  EXPECT_TRUE(plan.quantized[graph.find("flatten")]);
  EXPECT_TRUE(plan.observed[graph.find("fc")]);
}

TEST(QuantizeInt8, ConvAndLinearMatchFp32WithinTheirQuantizationSteps) {
  // One conv and one linear layer, calibrated on the very inputs they are compared on (no saturation). The error
  // bound of each output: half an output step from requantization, plus half an input step times the largest
  // L1 norm of a filter, plus half a weight step times the largest L1 norm of an input window.
  const DataSplits data = brightness_levels(8);
  for (const char* engine : {"onednn", "qnnpack"}) {
    for (bool per_channel : {true, false}) {
      torch::manual_seed(9);
      GraphModule model(graph_from_layers(Json::parse(R"([
        {"op": "conv", "name": "conv", "out": 6, "kernel": 3}, {"op": "flatten", "name": "flat"},
        {"op": "linear", "name": "fc", "out": 4}])"),
                                          data.input_shape, 4));
      const QuantizeOptions options = static_options(engine, per_channel);
      const auto input = normalize_images(data.train.images.slice(0, 0, 64), data.mean, data.std);
      GraphModule folded(nullptr);
      DataSplits calibration = data;
      calibration.train = data.train.select(torch::arange(64));
      ScriptedModel scripted = quantize_post_training(model, calibration, options, &folded);
      const Json& values = scripted.quantization.at("values");
      const double s_in = values.at("input").at("scale").get<double>();
      const double s_conv = values.at("conv").at("scale").get<double>();
      const double s_fc = values.at("fc").at("scale").get<double>();

      // Conv alone: compare the int8 conv of the quantized input with the fp32 conv.
      torch::NoGradGuard no_grad;
      const auto conv_reference = torch::conv2d(input, model->weight(1), model->bias(1), 1, 1);
      QEngineGuard guard(engine_from_name(engine));
      const auto q_input = torch::quantize_per_tensor(input, s_in, values.at("input").at("zero_point").get<int64_t>(),
                                                      torch::kQUInt8);
      const auto packed = scripted.module.attr("conv_packed");
      const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("quantized::conv2d", "new");
      torch::jit::Stack stack{q_input, packed, s_conv, values.at("conv").at("zero_point").get<int64_t>()};
      op.callBoxed(&stack);
      const auto conv_int8 = stack.at(0).toTensor().dequantize();
      const auto w_scales = weight_scales(model->weight(1), per_channel);
      const double filter_l1 = model->weight(1).abs().flatten(1).sum(1).max().item<double>();
      const double window_l1 = 9.0 * input.abs().max().item<double>();
      const double conv_bound =
          0.5 * s_conv + 0.5 * s_in * filter_l1 + 0.5 * w_scales.max().item<double>() * window_l1 + 1e-6;
      EXPECT_LE((conv_int8 - conv_reference).abs().max().item<double>(), conv_bound) << engine << per_channel;

      // The whole model: the linear reads the int8 conv's output, so its error adds the conv's error through the
      // linear weights.
      const auto reference = eval_output(model, input);
      const auto actual = scripted.forward(input);
      const double fc_l1 = model->weight(3).abs().sum(1).max().item<double>();
      const double features_l1 = conv_reference.abs().flatten(1).sum(1).max().item<double>();
      const double fc_bound = 0.5 * s_fc + conv_bound * fc_l1 +
                              0.5 * weight_scales(model->weight(3), per_channel).max().item<double>() * features_l1;
      EXPECT_LE((actual - reference).abs().max().item<double>(), fc_bound) << engine << per_channel;
      EXPECT_GE(agreement(actual, reference), 90.0);
    }
  }
}

TEST(QuantizeInt8, TrainedSmallCnnAndResnet8AgreeWithFp32OnAtLeast97PercentOfPredictions) {
  const DataSplits data = brightness_levels(16);
  for (const char* arch : {"small-cnn", "resnet8"}) {
    GraphModule model = trained_zoo_model(arch, data, 11);
    const auto input = test_inputs(data);
    const auto reference = eval_output(model, input);
    for (const char* engine : {"onednn", "qnnpack"}) {
      for (ObserverKind observer : {ObserverKind::MinMax, ObserverKind::MovingAverage, ObserverKind::Histogram}) {
        QuantizeOptions options = static_options(engine);
        options.observer = observer;
        ScriptedModel scripted = quantize_post_training(model, data, options);
        EXPECT_GE(agreement(scripted.forward(input), reference), 97.0)
            << arch << " " << engine << " observer " << static_cast<int>(observer);
      }
    }
  }
}

/// Saves, loads back with torch::jit::load under the model's engine, and checks outputs and metadata.
void expect_round_trip(ScriptedModel& scripted, const torch::Tensor& input, const std::string& precision) {
  TempFolder folder("quantize");
  const auto path = folder / "model.pt";
  save_scripted_model(scripted, Json{{"format_version", 1}}, path);
  const auto expected = scripted.forward(input);
  std::unique_ptr<QEngineGuard> guard;
  if (scripted.engine != "none") guard = std::make_unique<QEngineGuard>(engine_from_name(scripted.engine));
  torch::jit::ExtraFilesMap extra{{kMetadataFile, ""}, {kGraphFile, ""}, {kQuantizationFile, ""}};
  torch::jit::Module loaded = torch::jit::load(path.string(), c10::nullopt, extra);
  const auto actual = loaded.forward({input}).toTensor();
  EXPECT_TRUE(torch::allclose(actual, expected, 0, 1e-5)) << precision;
  const Json meta = Json::parse(extra[kMetadataFile]);
  EXPECT_EQ(meta.at("precision"), precision);
  EXPECT_EQ(meta.at("quantized_engine"), scripted.engine);
  EXPECT_FALSE(extra[kGraphFile].empty());
  EXPECT_EQ(Json::parse(extra[kQuantizationFile]).at("engine"), scripted.engine);
}

TEST(QuantizeExport, EveryVariantLoadsWithTorchJitLoadAndRuns) {
  const DataSplits data = brightness_levels(16);
  GraphModule model = trained_zoo_model("resnet8", data, 12);
  const auto input = test_inputs(data).slice(0, 0, 8);
  const auto reference = eval_output(model, input);

  ScriptedModel fp16 = export_dynamic_fp16(model);
  EXPECT_LE((fp16.forward(input) - reference).abs().max().item<double>(), 0.05);
  expect_round_trip(fp16, input, "fp16-weights");

  for (const char* engine : {"onednn", "qnnpack"}) {
    QuantizeOptions options = static_options(engine);
    options.mode = "dynamic-int8";
    ScriptedModel dynamic = export_dynamic_int8(model, options);
    EXPECT_GE(agreement(dynamic.forward(input), reference), 87.5);
    expect_round_trip(dynamic, input, "int8-dynamic");
    ScriptedModel statically = quantize_post_training(model, data, static_options(engine));
    expect_round_trip(statically, input, "int8");
  }
  QuantizeOptions qat = static_options("onednn");
  qat.mode = "qat-int8";
  qat.qat_training.epochs = 1;
  qat.qat_training.lr = 0.005;
  qat.qat_training.batch_size = 32;
  ScriptedModel trained = quantization_aware_training(model, data, qat, false, 3);
  expect_round_trip(trained, input, "int8");
}

TEST(QuantizeExport, StaticInt8FilesAreSmallerThanFp32) {
  const DataSplits data = brightness_levels(16);
  TempFolder folder("quantize-size");
  for (const char* arch : {"small-cnn", "resnet8"}) {
    GraphModule model = zoo_model(arch, data, 13);
    save_torchscript(model, Json::object(), folder / "fp32.pt");
    ScriptedModel scripted = quantize_post_training(model, data, static_options());
    save_scripted_model(scripted, Json::object(), folder / "int8.pt");
    ScriptedModel fp16 = export_dynamic_fp16(model);
    save_scripted_model(fp16, Json::object(), folder / "fp16.pt");
    const auto fp32_bytes = static_cast<double>(std::filesystem::file_size(folder / "fp32.pt"));
    const auto int8_bytes = static_cast<double>(std::filesystem::file_size(folder / "int8.pt"));
    const auto fp16_bytes = static_cast<double>(std::filesystem::file_size(folder / "fp16.pt"));
    const double weight_bytes = 4.0 * static_cast<double>(count_params(model->graph()));
    // int8 weights take a quarter of fp32's bytes; code, names and per-channel scales come on top.
    EXPECT_LT(int8_bytes, fp32_bytes - 0.6 * weight_bytes) << arch << " " << int8_bytes << " vs " << fp32_bytes;
    EXPECT_LT(fp16_bytes, fp32_bytes - 0.4 * weight_bytes) << arch << " " << fp16_bytes << " vs " << fp32_bytes;
    // Dynamic int8 keeps convs in fp32 and stores each linear's weights once, as int8.
    QuantizeOptions dynamic_options = static_options();
    dynamic_options.mode = "dynamic-int8";
    ScriptedModel dynamic = export_dynamic_int8(model, dynamic_options);
    save_scripted_model(dynamic, Json::object(), folder / "dynamic.pt");
    double linear_params = 0;
    for (const Node& node : model->graph().nodes) {
      if (node.op == OpKind::Linear) linear_params += static_cast<double>(node_params(model->graph(), node));
    }
    const auto dynamic_bytes = static_cast<double>(std::filesystem::file_size(folder / "dynamic.pt"));
    if (std::string(arch) == "small-cnn") {  // its linear layers hold most of its weights
      EXPECT_LT(dynamic_bytes, fp32_bytes - 0.6 * 4.0 * linear_params) << arch << " " << dynamic_bytes;
    }
  }
}

TEST(QuantizeExport, BlockPrunedResnetQuantizesAndRuns) {
  const DataSplits data = brightness_levels(16);
  GraphModule model = trained_zoo_model("resnet8", data, 14);
  ChannelSelection selection;
  selection.sparsity = 0.5;
  GraphModule pruned = prune_channels(model, ChannelImportance::Block, selection);
  EXPECT_LT(count_macs(pruned->graph()), count_macs(model->graph()));
  const auto input = test_inputs(data);
  const auto reference = eval_output(pruned, input);
  for (const char* engine : {"onednn", "qnnpack"}) {
    ScriptedModel scripted = quantize_post_training(pruned, data, static_options(engine));
    EXPECT_GE(agreement(scripted.forward(input), reference), 95.0) << engine;
    expect_round_trip(scripted, input.slice(0, 0, 4), "int8");
  }
}

TEST(QuantizeExport, DepthwiseConvsRelu6ConcatAndAnUnfoldedBatchNormRunInt8) {
  // MobileNetV2 (depthwise convs, relu6 fused through the observed range) and a custom graph whose batch norm
  // follows a concat (runs in float between dequantize and quantize).
  const DataSplits data = brightness_levels(16);
  torch::manual_seed(18);
  GraphModule custom(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "stem", "out": 8}, {"op": "relu6", "name": "stem_relu6"},
    {"op": "conv", "name": "left", "out": 4, "inputs": ["stem_relu6"]},
    {"op": "conv", "name": "right", "out": 4, "kernel": 1, "inputs": ["stem_relu6"]},
    {"op": "concat", "name": "join", "inputs": ["left", "right"]}, {"op": "batchnorm", "name": "join_bn"},
    {"op": "relu", "name": "join_relu"}, {"op": "conv", "name": "head", "out": 8},
    {"op": "avgpool", "name": "pool"}, {"op": "adaptive_avgpool", "name": "gap", "output_size": 2},
    {"op": "flatten", "name": "flat"}, {"op": "linear", "name": "fc", "out": 4}])"),
                                       data.input_shape, 4));
  randomize_batchnorm(custom, 19);
  const QuantizationPlan plan = plan_quantization(fold_batchnorm(custom)->graph());
  GraphModule mobilenet = zoo_model("mobilenetv2", data, 20);
  randomize_batchnorm(mobilenet, 21);
  const auto input = test_inputs(data);
  for (GraphModule* model : {&custom, &mobilenet}) {
    const auto reference = eval_output(*model, input);
    const double spread = (reference.max() - reference.min()).item<double>();
    for (const char* engine : {"onednn", "qnnpack"}) {
      ScriptedModel scripted = quantize_post_training(*model, data, static_options(engine));
      const auto actual = scripted.forward(input);
      // Untrained networks (MobileNetV2: 17 quantized blocks in a row): an error within a fifth of the logits'
      // spread, most predictions kept.
      EXPECT_LE((actual - reference).abs().max().item<double>(), 0.2 * spread)
          << engine << " " << model->get()->graph().nodes.size();
      EXPECT_GE(agreement(actual, reference), 80.0) << engine;
      expect_round_trip(scripted, input.slice(0, 0, 4), "int8");
    }
  }
  const Graph folded = fold_batchnorm(custom)->graph();
  const int bn = folded.find("join_bn");
  ASSERT_GE(bn, 0);  // not folded: its producer is a concat
  EXPECT_FALSE(plan.quantized[bn]);
  EXPECT_TRUE(plan.observed[folded.find("join_relu")]);  // the relu after it is quantized where the head conv reads it
  EXPECT_EQ(plan.fused_into[folded.find("stem_relu6")], folded.find("stem"));
}

TEST(QuantizeQat, FrozenObserversKeepTheCalibratedRangesAndTheModelLearns) {
  const DataSplits data = brightness_levels(16);
  GraphModule model = trained_zoo_model("small-cnn", data, 15);
  QuantizeOptions options = static_options("onednn");
  options.mode = "qat-int8";
  options.qat_training.epochs = 2;
  options.qat_training.lr = 0.01;
  options.qat_training.batch_size = 32;
  options.freeze_observers_epoch = 1;
  GraphModule folded(nullptr);
  std::vector<EpochRecord> epochs;
  ScriptedModel qat = quantization_aware_training(model, data, options, false, 5, &folded, &epochs);
  ScriptedModel ptq = quantize_post_training(model, data, static_options("onednn"));
  EXPECT_EQ(qat.quantization.at("values"), ptq.quantization.at("values"));
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_FALSE(folded->weight_transform);
  EXPECT_FALSE(folded->output_transform);
  // The weights moved, and the int8 model classifies the easy task.
  EXPECT_FALSE(torch::equal(folded->weight(1), fold_batchnorm(model)->weight(1)));
  EXPECT_GE(evaluate_scripted_accuracy(qat, data.test, data.mean, data.std, 64), 90.0);

  // Observers that keep updating move the ranges.
  options.freeze_observers_epoch = 3;
  options.observer = ObserverKind::MovingAverage;
  ScriptedModel moving = quantization_aware_training(model, data, options, false, 5);
  EXPECT_NE(moving.quantization.at("values"), ptq.quantization.at("values"));
}

TEST(QuantizeStage, NoneStaticAndRecordsThroughTheStageTable) {
  const DataSplits data = brightness_levels(16);
  TrialConfig trial;
  trial.pipeline = {quantize_stage_config({{"mode", "none"}})};
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  GraphModule model = trained_zoo_model("small-cnn", data, 16);
  GraphModule same = find_stage("quantize")(model, trial.pipeline[0], context);
  EXPECT_EQ(same.get(), model.get());
  EXPECT_EQ(context.scripted, nullptr);

  trial.pipeline = {quantize_stage_config({{"mode", "static-int8"}, {"engine", "qnnpack"}, {"batch_size", 32},
                                           {"calibration_batches", 4}})};
  GraphModule folded = find_stage("quantize")(model, trial.pipeline[0], context);
  ASSERT_NE(context.scripted, nullptr);
  EXPECT_EQ(context.scripted->engine, "qnnpack");
  EXPECT_EQ(context.scripted->precision, "int8");
  EXPECT_LT(count_params(folded->graph()), count_params(model->graph()));  // batch norms folded
  bool recorded = false;
  for (const Metric& m : metrics) recorded = recorded || m.name == "quantize/val_accuracy_quantized";
  EXPECT_TRUE(recorded);
}

TEST(QuantizeStage, BadEngineModeOrPositionFailBeforeAnyTraining) {
  const SectionSpec& spec = stage_spec("quantize");
  Json engine = "fbgemm";
  EXPECT_NE(check_value(*spec.find("engine"), engine).find("expected one of: onednn, qnnpack"), std::string::npos);
  expect_error<InputError>([] { read_quantize_options(quantize_stage_config({{"mode", "static-int8"},
                                                                             {"engine", "fbgemm"}}).params); },
                           {"quantize", "'engine'", "fbgemm", "available"});
  expect_error<InputError>([] { read_quantize_options(quantize_stage_config({{"mode", "int4"}}).params); },
                           {"quantize", "'mode'", "int4"});
  TrialConfig trial;
  StageConfig finetune{"finetune", Json{{"stage", "finetune"}}};
  trial.pipeline = {quantize_stage_config({{"mode", "static-int8"}}), finetune};
  expect_error<InputError>([&] { check_quantize_pipeline(trial); }, {"quantize", "must be the last stage", "finetune"});
  trial.pipeline = {finetune, quantize_stage_config({{"mode", "qat-int8"}, {"engine", "fbgemm"}})};
  expect_error<InputError>([&] { check_quantize_pipeline(trial); }, {"'engine'", "fbgemm"});
  trial.pipeline = {finetune, quantize_stage_config({{"mode", "qat-int8"}})};
  check_quantize_pipeline(trial);

  // At stage start, too: no training happens (no metrics are recorded).
  const DataSplits data = brightness_levels(16);
  std::vector<Metric> metrics;
  trial.pipeline = {quantize_stage_config({{"mode", "qat-int8"}}), finetune};
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  GraphModule model = zoo_model("small-cnn", data, 17);
  expect_error<InputError>([&] { find_stage("quantize")(model, trial.pipeline[0], context); },
                           {"quantize", "must be the last stage"});
  EXPECT_TRUE(metrics.empty());
}

}  // namespace
}  // namespace edgesweep
