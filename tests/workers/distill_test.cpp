// Tests of knowledge distillation: the loss against hand-computed values of its formula, a student moving toward
// its teacher on a small task, the distill stage's records, and the prune stage fine-tuning with distillation.
#include "edgesweep/workers/compress/distill.h"

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/trainer.h"
#include "expect_error.h"
#include "edgesweep/workers/torchscript.h"
#include "synthetic_data.h"
#include "stage_configs.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

GraphModule small_cnn(uint64_t seed) {
  torch::manual_seed(seed);
  return GraphModule(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 8}, {"op": "batchnorm", "name": "bn1"}, {"op": "relu", "name": "relu1"},
    {"op": "maxpool", "name": "pool"}, {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc1", "out": 16}, {"op": "relu", "name": "fc1_relu"},
    {"op": "linear", "name": "fc2", "out": 2}
  ])"),
                                       Shape{1, 8, 8, false}, 2));
}

double metric(const std::vector<Metric>& metrics, const std::string& name) {
  for (const Metric& m : metrics) {
    if (m.name == name && m.step == -1) return m.value;
  }
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

torch::Tensor row(std::vector<double> values) { return torch::tensor(values, torch::kFloat64).view({1, -1}); }

// Student logits [1, 0], teacher logits [0, 1], label 0. With q = softmax(student / T), p = softmax(teacher / T):
// log(p_i / q_i) = -/+ 1/T, so KL(p || q) = (p_1 - p_0) / T = tanh(1 / (2T)) / T, and CE = log(1 + e^-1).
//   T = 1: KL = tanh(0.5)          = 0.46211715726000974, T^2 KL = 0.46211715726000974
//   T = 4: KL = tanh(0.125) / 4    = 0.031088250442... ,  T^2 KL = 4 tanh(0.125) = 0.49741200708638...
//   CE = 0.31326168751822286
TEST(DistillationLoss, EqualsTheFormulaOnKnownLogits) {
  const auto student = row({1.0, 0.0});
  const auto teacher = row({0.0, 1.0});
  const auto label = torch::tensor({0}, torch::kInt64);
  const double ce = 0.31326168751822286;
  const double soft_t1 = 0.46211715726000974;
  const double soft_t4 = 4.0 * std::tanh(0.125);
  EXPECT_NEAR(soft_t4, 0.49741200708638, 1e-12);
  const auto loss = [&](double t, double a) {
    return distillation_loss(student, teacher, label, t, a).item<double>();
  };
  EXPECT_NEAR(loss(1, 1.0), soft_t1, 1e-12);
  EXPECT_NEAR(loss(1, 0.5), 0.5 * soft_t1 + 0.5 * ce, 1e-12);  // 0.38768942238911630
  EXPECT_NEAR(loss(1, 0.0), ce, 1e-12);
  EXPECT_NEAR(loss(4, 1.0), soft_t4, 1e-12);
  EXPECT_NEAR(loss(4, 0.5), 0.5 * soft_t4 + 0.5 * ce, 1e-12);  // 0.40533684730230...
  EXPECT_NEAR(loss(4, 0.0), ce, 1e-12);
  EXPECT_NEAR(distillation_divergence(student, teacher, 4).item<double>(), std::tanh(0.125) / 4, 1e-12);
  // alpha = 0 is cross-entropy itself, bit for bit, at any temperature.
  const auto logits = torch::randn({5, 3}, torch::kFloat64);
  const auto labels = torch::tensor({0, 2, 1, 1, 0}, torch::kInt64);
  EXPECT_TRUE(torch::equal(distillation_loss(logits, torch::randn({5, 3}, torch::kFloat64), labels, 4, 0),
                           torch::nn::functional::cross_entropy(logits, labels)));
  // The KL term averages over the batch: a second sample on which teacher and student agree halves it.
  const auto two_students = torch::cat({student, row({2.0, 2.0})});
  const auto two_teachers = torch::cat({teacher, row({2.0, 2.0})});
  EXPECT_NEAR(distillation_loss(two_students, two_teachers, torch::tensor({0, 1}, torch::kInt64), 1, 1).item<double>(),
              soft_t1 / 2, 1e-12);
}

TEST(DistillationLoss, GradientsReachTheStudentOnly) {
  auto student = row({1.0, 0.0}).requires_grad_(true);
  auto teacher = row({0.0, 1.0}).requires_grad_(true);
  distillation_loss(student, teacher, torch::tensor({0}, torch::kInt64), 4, 0.7).backward();
  EXPECT_TRUE(student.grad().defined());
  EXPECT_GT(student.grad().abs().sum().item<double>(), 0.0);
  EXPECT_FALSE(teacher.grad().defined());
}

TEST(DistillStage, MovesTheStudentTowardTheTeacherAndRecordsAccuracies) {
  const DataSplits data = brightness_task(21);
  GraphModule teacher = small_cnn(1);
  TrainConfig teacher_training;
  teacher_training.epochs = 3;
  teacher_training.lr = 0.05;
  teacher_training.batch_size = 16;
  train_model(teacher, data, teacher_training, false, 2);
  std::vector<torch::Tensor> teacher_weights;
  for (const auto& p : teacher->parameters()) teacher_weights.push_back(p.detach().clone());

  const auto inputs = normalize_images(data.test.images, data.mean, data.std);
  torch::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    teacher_logits = teacher->forward(inputs);
  }
  const auto divergence = [&](GraphModule& student) {
    torch::NoGradGuard no_grad;
    student->eval();
    return distillation_divergence(student->forward(inputs), teacher_logits, 1).item<double>();
  };
  GraphModule student = small_cnn(7);
  const double before = divergence(student);
  GraphModule initial = clone_graph_module(student);  // the stage trains `student` in place

  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, teacher, 0, 0, &metrics};
  const StageConfig stage = stage_config(
      "distill", {{"temperature", 4.0}, {"alpha", 0.9}, {"epochs", 3}, {"lr", 0.05}, {"batch_size", 16}});
  GraphModule distilled = find_stage("distill")(student, stage, context);
  const double after = divergence(distilled);
  EXPECT_LT(after, 0.5 * before) << "KL before " << before << ", after " << after;
  EXPECT_EQ(context.epoch_offset, 3);
  const auto accuracy = [&](GraphModule m) { return evaluate_accuracy(m, data.val, data.mean, data.std, 256); };
  EXPECT_DOUBLE_EQ(metric(metrics, "teacher_val_accuracy"), accuracy(teacher));
  EXPECT_DOUBLE_EQ(metric(metrics, "val_accuracy_before_distill"), accuracy(initial));
  EXPECT_DOUBLE_EQ(metric(metrics, "val_accuracy_after_distill"), accuracy(distilled));
  // The teacher is left as it was: same weights, eval mode.
  size_t k = 0;
  for (const auto& p : teacher->parameters()) EXPECT_TRUE(torch::equal(p, teacher_weights[k++]));
  EXPECT_FALSE(teacher->is_training());
}

TEST(DistillStage, BadSettingsFailBeforeTraining) {
  const SectionSpec& spec = stage_spec("distill");
  Json zero = 0.0;
  EXPECT_EQ(check_value(*spec.find("temperature"), zero), "'temperature' = 0.0 is out of range: must be > 0");
  Json big = 1.5;
  EXPECT_EQ(check_value(*spec.find("alpha"), big), "'alpha' = 1.5 is out of range: must be <= 1");

  const DataSplits data = brightness_task(21);
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext no_teacher{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  expect_error<InputError>([&] { find_stage("distill")(small_cnn(3), stage_config("distill", Json::object()), no_teacher); },
                           {"distill", "teacher"});
  StageContext context{data, trial, small_cnn(4), 0, 0, &metrics};
  expect_error<InputError>(
      [&] { find_stage("distill")(small_cnn(3), stage_config("distill", {{"alpha", -0.1}}), context); },
      {"distill", "'alpha' = -0.1"});
  expect_error<InputError>(
      [&] { find_stage("distill")(small_cnn(3), stage_config("distill", {{"teacher", "no-such-model.pt"}}), context); },
      {"distill", "'teacher' = \"no-such-model.pt\"", "neither baseline nor an existing file"});
  const TempFolder folder("distill-teacher");
  const auto not_a_model = folder / "notes.pt";
  std::ofstream(not_a_model) << "not an archive";
  expect_error<InputError>(
      [&] { find_stage("distill")(small_cnn(3), stage_config("distill", {{"teacher", not_a_model.string()}}), context); },
      {"distill", "cannot be used as a teacher"});
  expect_error<InputError>(
      [&] { find_stage("distill")(small_cnn(3), stage_config("distill", {{"hint_layer", "conv9"}}), context); },
      {"distill", "'hint_layer' = \"conv9\"", "not a layer of the student"});
  torch::manual_seed(5);
  GraphModule three_classes(graph_from_layers(Json::parse(R"([{"op": "flatten"}, {"op": "linear", "out": 3}])"),
                                              Shape{1, 8, 8, false}, 3));
  StageContext mismatched{data, trial, three_classes, 0, 0, &metrics};
  expect_error<InputError>([&] { find_stage("distill")(small_cnn(3), stage_config("distill", Json::object()), mismatched); },
                           {"distill", "3 outputs", "student 2"});
  EXPECT_TRUE(metrics.empty());
}

/// A small CNN like small_cnn with `channels` filters in conv1 (a pruned student has fewer).
GraphModule narrow_cnn(uint64_t seed, int64_t channels) {
  torch::manual_seed(seed);
  Json layers = Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 8}, {"op": "batchnorm", "name": "bn1"}, {"op": "relu", "name": "relu1"},
    {"op": "maxpool", "name": "pool"}, {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc1", "out": 16}, {"op": "relu", "name": "fc1_relu"},
    {"op": "linear", "name": "fc2", "out": 2}
  ])");
  layers[0]["out"] = channels;
  return GraphModule(graph_from_layers(layers, Shape{1, 8, 8, false}, 2));
}

TEST(DistillStage, TakesItsTeacherFromAnArchive) {
  const DataSplits data = brightness_task(23);
  GraphModule teacher = small_cnn(12);
  TrainConfig teacher_training;
  teacher_training.epochs = 3;
  teacher_training.lr = 0.05;
  teacher_training.batch_size = 16;
  train_model(teacher, data, teacher_training, false, 4);
  const TempFolder folder("distill-archive");
  save_torchscript(teacher, Json{{"precision", "fp32"}}, folder / "teacher.pt");

  const auto inputs = normalize_images(data.test.images, data.mean, data.std);
  torch::Tensor teacher_logits;
  {
    torch::NoGradGuard no_grad;
    teacher->eval();
    teacher_logits = teacher->forward(inputs);
  }
  const auto divergence = [&](GraphModule& student) {
    torch::NoGradGuard no_grad;
    student->eval();
    return distillation_divergence(student->forward(inputs), teacher_logits, 1).item<double>();
  };
  GraphModule student = small_cnn(13);
  const double before = divergence(student);
  TrialConfig trial;
  std::vector<Metric> metrics;
  // No baseline at all: the archive is the only teacher there is.
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  const StageConfig stage =
      stage_config("distill", {{"teacher", (folder / "teacher.pt").string()}, {"alpha", 0.9}, {"epochs", 3},
                               {"lr", 0.05}, {"batch_size", 16}});
  GraphModule distilled = find_stage("distill")(student, stage, context);
  EXPECT_LT(divergence(distilled), 0.5 * before);
  EXPECT_DOUBLE_EQ(metric(metrics, "teacher_val_accuracy"),
                   evaluate_accuracy(teacher, data.val, data.mean, data.std, 256));

  // A quantized archive is no teacher.
  save_torchscript(teacher, Json{{"precision", "int8"}}, folder / "int8.pt");
  expect_error<InputError>(
      [&] {
        find_stage("distill")(small_cnn(13), stage_config("distill", {{"teacher", (folder / "int8.pt").string()}}),
                              context);
      },
      {"distill", "int8 model", "float model"});
}

TEST(HintLoss, IsTheWeightedMeanSquaredErrorOfTheLayerOutputs) {
  GraphModule student = small_cnn(14);
  GraphModule teacher = small_cnn(15);
  const auto inputs = torch::randn({4, 1, 8, 8});
  // The last layer's output is the logits, which the forward pass returns: the hint there can be checked by hand.
  {
    HintLoss hint(student, teacher, "fc2", 2.5, "distill");
    EXPECT_TRUE(hint.parameters().empty());  // same width: no regressor
    const auto student_logits = student->forward(inputs);
    const auto teacher_logits = teacher->forward(inputs);
    const double expected = 2.5 * (student_logits - teacher_logits).pow(2).mean().item<double>();
    EXPECT_NEAR(hint.loss().item<double>(), expected, 1e-6 * std::max(1.0, expected));
  }
  // The captures are gone with the loss.
  EXPECT_FALSE(student->output_transform);
  EXPECT_FALSE(teacher->output_transform);
}

TEST(HintLoss, MapsFewerStudentChannelsThroughATrainedRegressor) {
  GraphModule student = narrow_cnn(16, 4);
  GraphModule teacher = small_cnn(17);
  HintLoss hint(student, teacher, "relu1", 1.0, "distill");
  ASSERT_EQ(hint.parameters().size(), 1u);
  EXPECT_EQ(hint.parameters()[0].sizes(), torch::IntArrayRef({8, 4, 1, 1}));
  student->forward(torch::randn({4, 1, 8, 8}));
  teacher->forward(torch::randn({4, 1, 8, 8}));
  hint.loss().backward();
  EXPECT_GT(hint.parameters()[0].grad().abs().sum().item<double>(), 0.0);
  EXPECT_GT(student->weight(1).grad().abs().sum().item<double>(), 0.0);  // conv1 of the student learns
  for (const auto& p : teacher->parameters()) EXPECT_FALSE(p.grad().defined());

  // Layers whose outputs cannot be compared are refused.
  GraphModule wide_fc(nullptr);
  {
    torch::manual_seed(18);
    wide_fc = GraphModule(graph_from_layers(Json::parse(R"([
      {"op": "conv", "name": "conv1", "out": 8, "stride": 2}, {"op": "relu", "name": "relu1"},
      {"op": "flatten", "name": "flat"}, {"op": "linear", "name": "fc1", "out": 32},
      {"op": "linear", "name": "fc2", "out": 2}])"), Shape{1, 8, 8, false}, 2));
  }
  expect_error<InputError>([&] { HintLoss(wide_fc, teacher, "relu1", 1.0, "distill"); },
                           {"distill", "'hint_layer' = \"relu1\"", "same spatial size"});
  expect_error<InputError>([&] { HintLoss(wide_fc, teacher, "fc1", 1.0, "distill"); },
                           {"distill", "32 features in the student and 16 in the teacher"});
  expect_error<InputError>([&] { HintLoss(wide_fc, teacher, "bn1", 1.0, "distill"); },
                           {"not a layer of the student"});
}

TEST(DistillStage, AddsTheHintLossAndExportsNoRegressor) {
  const DataSplits data = brightness_task(24);
  GraphModule teacher = small_cnn(19);
  TrainConfig teacher_training;
  teacher_training.epochs = 2;
  teacher_training.batch_size = 16;
  train_model(teacher, data, teacher_training, false, 5);
  TrialConfig trial;
  const auto run = [&](const std::string& hint_layer, std::vector<Metric>& metrics) {
    StageContext context{data, trial, teacher, 0, 0, &metrics};
    const StageConfig stage = stage_config(
        "distill", {{"hint_layer", hint_layer}, {"hint_weight", 0.5}, {"epochs", 1}, {"batch_size", 16}});
    return find_stage("distill")(narrow_cnn(20, 4), stage, context);
  };
  std::vector<Metric> plain, hinted;
  run("", plain);
  GraphModule student = run("relu1", hinted);
  double plain_loss = -1, hinted_loss = -1;
  for (const Metric& m : plain) plain_loss = m.name == "train_loss" && m.step == 1 ? m.value : plain_loss;
  for (const Metric& m : hinted) hinted_loss = m.name == "train_loss" && m.step == 1 ? m.value : hinted_loss;
  EXPECT_GT(hinted_loss, plain_loss);  // the same run plus a non-negative term that is not zero
  EXPECT_DOUBLE_EQ(metric(hinted, "val_accuracy_after_distill"),
                   evaluate_accuracy(student, data.val, data.mean, data.std, 256));
  EXPECT_EQ(count_params(student->graph()), count_params(narrow_cnn(20, 4)->graph()));
  EXPECT_FALSE(student->output_transform);
  EXPECT_FALSE(teacher->output_transform);
}

TEST(PruneStage, FineTunesWithDistillationAndRecordsItsMetrics) {
  const DataSplits data = brightness_task(21);
  GraphModule teacher = small_cnn(8);
  TrainConfig teacher_training;
  teacher_training.epochs = 2;
  teacher_training.batch_size = 16;
  train_model(teacher, data, teacher_training, false, 3);
  TrialConfig trial;
  const auto run = [&](bool distill, std::vector<Metric>& metrics) {
    StageContext context{data, trial, teacher, 0, 0, &metrics};
    const StageConfig stage = stage_config(
        "prune", {{"method", "magnitude-global"}, {"sparsity", 0.5}, {"finetune_epochs", 2}, {"batch_size", 16},
                  {"distill", distill}, {"temperature", 2.0}, {"alpha", 0.8}});
    return find_stage("prune")(small_cnn(9), stage, context);
  };
  std::vector<Metric> plain, distilled;
  run(false, plain);
  GraphModule model = run(true, distilled);
  EXPECT_NEAR(metric(distilled, "sparsity"), 50.0, 0.1);
  const auto accuracy = [&](GraphModule m) { return evaluate_accuracy(m, data.val, data.mean, data.std, 256); };
  GraphModule masked = small_cnn(9);  // the stage's input, made again from its seed
  EXPECT_DOUBLE_EQ(metric(distilled, "val_accuracy_before_prune"), accuracy(masked));
  apply_masks(masked, magnitude_masks(masked, 0.5, true));  // one shot, before fine-tuning
  EXPECT_DOUBLE_EQ(metric(distilled, "val_accuracy_after_prune"), accuracy(masked));
  EXPECT_DOUBLE_EQ(metric(distilled, "val_accuracy_after_finetune"), accuracy(model));
  EXPECT_EQ(metric(distilled, "params_after"), static_cast<double>(count_params(model->graph())));
  EXPECT_EQ(metric(distilled, "macs_after"), static_cast<double>(count_macs(model->graph())));
  // The pruned weights stayed zero under the distillation loss, and the loss was not cross-entropy's.
  int64_t zeros = 0, total = 0;
  for (const LayerSparsity& layer : measure_sparsity(model)) {
    zeros += layer.zeros;
    total += layer.total;
  }
  EXPECT_EQ(zeros, std::llround(0.5 * static_cast<double>(total)));
  double plain_loss = -1, distilled_loss = -1;
  for (const Metric& m : plain) plain_loss = m.name == "train_loss" && m.step == 1 ? m.value : plain_loss;
  for (const Metric& m : distilled) distilled_loss = m.name == "train_loss" && m.step == 1 ? m.value : distilled_loss;
  EXPECT_GT(plain_loss, 0.0);
  EXPECT_GT(distilled_loss, 0.0);
  EXPECT_NE(plain_loss, distilled_loss);

  std::vector<Metric> metrics;
  StageContext no_teacher{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  expect_error<InputError>(
      [&] {
        find_stage("prune")(small_cnn(9), stage_config("prune", {{"method", "block"}, {"sparsity", 0.5},
                                                                {"distill", true}}),
                            no_teacher);
      },
      {"prune", "teacher"});
  EXPECT_TRUE(metrics.empty());
}

/// Where each prunable weight of `model` is zero, layer by layer.
std::vector<torch::Tensor> zero_positions(const GraphModule& model) {
  std::vector<torch::Tensor> zeros;
  for (int node : prunable_layers(model->graph())) zeros.push_back(model->weight(node).eq(0));
  return zeros;
}

int64_t count_true(const std::vector<torch::Tensor>& flags) {
  int64_t n = 0;
  for (const torch::Tensor& f : flags) n += f.sum().item<int64_t>();
  return n;
}

// Unstructured pruning's zeros survive the training stages after it (distillation, fine-tuning, quantization-aware
// training); without the prune stage's mark in the context, the same distillation lets them regrow.
TEST(PrunedPipeline, LaterTrainingStagesKeepThePrunedWeightsAtZero) {
  const DataSplits data = brightness_task(21);
  GraphModule teacher = small_cnn(8);
  TrialConfig trial;
  const StageConfig prune = stage_config("prune", {{"method", "magnitude-global"}, {"sparsity", 0.5},
                                                   {"finetune_epochs", 0}});
  const StageConfig distill = stage_config("distill", {{"epochs", 1}, {"lr", 0.1}, {"batch_size", 16}});
  std::vector<Metric> metrics;
  StageContext context{data, trial, teacher, 0, 0, &metrics};
  GraphModule model = find_stage("prune")(small_cnn(9), prune, context);
  EXPECT_TRUE(context.keep_zero_weights);
  const std::vector<torch::Tensor> pruned = zero_positions(model);
  const int64_t pruned_count = count_true(pruned);
  ASSERT_GT(pruned_count, 0);

  context.stage_index = 1;
  model = find_stage("distill")(model, distill, context);
  context.stage_index = 2;
  model = find_stage("finetune")(model, stage_config("finetune", {{"epochs", 1}, {"lr", 0.1}, {"batch_size", 16}}),
                                 context);
  const std::vector<torch::Tensor> trained = zero_positions(model);
  for (size_t k = 0; k < pruned.size(); ++k) {
    EXPECT_TRUE(torch::equal(trained[k].logical_and(pruned[k]), pruned[k])) << "layer " << k;
  }
  context.stage_index = 3;
  GraphModule folded = find_stage("quantize")(
      model, stage_config("quantize", {{"mode", "qat-int8"}, {"qat_epochs", 1}, {"calibration_batches", 2},
                                       {"batch_size", 16}, {"lr", 0.1}}),
      context);
  ASSERT_NE(context.scripted, nullptr);
  EXPECT_GE(count_true(zero_positions(folded)), pruned_count);  // folding scales channels, training held the zeros

  // A channel-pruning stage after it keeps the zeros of the channels it leaves through its own fine-tuning.
  const auto block_after_magnitude = [&](int64_t finetune_epochs) {
    std::vector<Metric> chain_metrics;
    StageContext chain{data, trial, teacher, 0, 0, &chain_metrics};
    GraphModule chained = find_stage("prune")(small_cnn(9), prune, chain);
    chain.stage_index = 1;
    return find_stage("prune")(chained,
                               stage_config("prune", {{"method", "block"}, {"sparsity", 0.25}, {"lr", 0.1},
                                                      {"finetune_epochs", finetune_epochs}, {"batch_size", 16}}),
                               chain);
  };
  const int64_t rebuilt_zeros = count_true(zero_positions(block_after_magnitude(0)));
  ASSERT_GT(rebuilt_zeros, 0);
  EXPECT_EQ(count_true(zero_positions(block_after_magnitude(1))), rebuilt_zeros);

  std::vector<Metric> unmarked_metrics;
  StageContext unmarked{data, trial, teacher, 0, 0, &unmarked_metrics};
  GraphModule regrown = find_stage("prune")(small_cnn(9), prune, unmarked);
  EXPECT_EQ(count_true(zero_positions(regrown)), pruned_count);
  unmarked.keep_zero_weights = false;
  unmarked.stage_index = 1;
  regrown = find_stage("distill")(regrown, distill, unmarked);
  EXPECT_LT(count_true(zero_positions(regrown)), pruned_count / 2);
}

TEST(QuantizeStage, QuantizationAwareTrainingDistilsWhenAsked) {
  const DataSplits data = brightness_task(21);
  GraphModule teacher = small_cnn(10);
  TrainConfig teacher_training;
  teacher_training.epochs = 2;
  teacher_training.batch_size = 16;
  train_model(teacher, data, teacher_training, false, 3);
  TrialConfig trial;
  const auto run = [&](bool distill, std::vector<Metric>& metrics) {
    StageContext context{data, trial, teacher, 0, 0, &metrics};
    const StageConfig stage = stage_config(
        "quantize", {{"mode", "qat-int8"}, {"qat_epochs", 1}, {"calibration_batches", 2}, {"batch_size", 16},
                     {"distill", distill}, {"temperature", 2.0}, {"alpha", 0.8}});
    find_stage("quantize")(small_cnn(11), stage, context);
    ASSERT_NE(context.scripted, nullptr);
    // The recorded accuracy is that of the int8 model the stage hands on.
    EXPECT_DOUBLE_EQ(metric(metrics, "quantize/val_accuracy_quantized"),
                     evaluate_scripted_accuracy(*context.scripted, data.val, data.mean, data.std, 256));
  };
  std::vector<Metric> plain, distilled;
  run(false, plain);
  run(true, distilled);
  double plain_loss = -1, distilled_loss = -1;
  for (const Metric& m : plain) plain_loss = m.name == "train_loss" && m.step == 1 ? m.value : plain_loss;
  for (const Metric& m : distilled) distilled_loss = m.name == "train_loss" && m.step == 1 ? m.value : distilled_loss;
  EXPECT_GT(distilled_loss, 0.0);
  EXPECT_NE(plain_loss, distilled_loss);

  std::vector<Metric> metrics;
  StageContext context{data, trial, teacher, 0, 0, &metrics};
  expect_error<InputError>(
      [&] {
        find_stage("quantize")(small_cnn(11), stage_config("quantize", {{"mode", "static-int8"}, {"distill", true}}),
                               context);
      },
      {"quantize", "'distill'", "static-int8"});
  EXPECT_TRUE(metrics.empty());
}

}  // namespace
}  // namespace edgesweep
