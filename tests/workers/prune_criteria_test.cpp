// Tests of the channel criteria beyond magnitude, each against its definition computed another way: the group norm
// (every weight tied to a channel, batch-norm scales included), the batch-norm scale, first-order Taylor (the square
// of the loss's derivative by a gate on the channel, taken here through autograd on a gated forward pass), the L1
// penalty of network slimming; and the prune stage with each criterion.
#include <algorithm>
#include <cmath>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/input_pipeline.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "stage_configs.h"
#include "synthetic_data.h"

namespace edgesweep {
namespace {

GraphModule small_net(uint64_t seed) {
  torch::manual_seed(seed);
  GraphModule model(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 6}, {"op": "batchnorm", "name": "bn1"}, {"op": "relu", "name": "relu1"},
    {"op": "conv", "name": "conv2", "out": 4}, {"op": "batchnorm", "name": "bn2"}, {"op": "relu", "name": "relu2"},
    {"op": "adaptive_avgpool", "name": "pool"}, {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc1", "out": 5}, {"op": "relu", "name": "fc1_relu"},
    {"op": "linear", "name": "fc2", "out": 2}
  ])"),
                                       Shape{1, 8, 8, false}, 2));
  torch::NoGradGuard no_grad;
  for (const char* norm : {"bn1", "bn2"}) {  // scales and shifts away from 1 and 0, as after training
    const int n = model->graph().find(norm);
    model->weight(n).uniform_(0.2, 1.5);
    model->bias(n).uniform_(-0.5, 0.5);
  }
  return model;
}

TEST(GroupNormCriterion, IsTheNormOfEveryWeightTiedToTheChannel) {
  GraphModule model = small_net(1);
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  const std::vector<double> scores = channel_importance(model, analysis, ChannelImportance::GroupNorm);
  const int conv1 = model->graph().find("conv1"), bn1 = model->graph().find("bn1"),
            conv2 = model->graph().find("conv2"), fc1 = model->graph().find("fc1"), fc2 = model->graph().find("fc2");
  for (int64_t c = 0; c < 6; ++c) {
    const double expected = std::sqrt(model->weight(conv1)[c].square().sum().item<double>() +
                                      std::pow(model->weight(bn1)[c].item<double>(), 2) +
                                      model->weight(conv2).select(1, c).square().sum().item<double>());
    EXPECT_NEAR(scores[analysis.unit_of(conv1, c)], expected, 1e-6 * expected) << c;  // float32 sums
  }
  for (int64_t c = 0; c < 5; ++c) {  // a hidden linear neuron: its row and the next layer's column
    const double expected = std::sqrt(model->weight(fc1)[c].square().sum().item<double>() +
                                      model->weight(fc2).select(1, c).square().sum().item<double>());
    EXPECT_NEAR(scores[analysis.unit_of(fc1, c)], expected, 1e-6 * expected) << c;
  }
}

TEST(BatchNormScaleCriterion, IsGammaWhereThereIsABatchNormAndMagnitudeElsewhere) {
  GraphModule model = small_net(2);
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  const std::vector<double> scores = channel_importance(model, analysis, ChannelImportance::BatchNormScale);
  const std::vector<double> block = channel_importance(model, analysis, ChannelImportance::Block);
  const int conv2 = model->graph().find("conv2"), bn2 = model->graph().find("bn2"), fc1 = model->graph().find("fc1");
  {
    torch::NoGradGuard no_grad;
    model->weight(bn2)[1] = -0.25;  // the scale's size counts, not its sign
  }
  const std::vector<double> signed_scores = channel_importance(model, analysis, ChannelImportance::BatchNormScale);
  for (int64_t c = 0; c < 4; ++c) {
    EXPECT_DOUBLE_EQ(signed_scores[analysis.unit_of(conv2, c)], std::abs(model->weight(bn2)[c].item<double>())) << c;
  }
  for (int64_t c = 0; c < 5; ++c) EXPECT_EQ(scores[analysis.unit_of(fc1, c)], block[analysis.unit_of(fc1, c)]) << c;
}

/// The loss's derivative by a gate on each output channel of `node` (multiplying its output), on one batch in
/// training mode, through autograd on the gated forward pass.
std::vector<double> gate_derivatives(GraphModule& model, int node, int64_t channels, const PreparedBatch& batch) {
  const auto gate = torch::ones({1, channels, 1, 1}, torch::requires_grad());
  model->output_transform = [&](int n, const torch::Tensor& value) { return n == node ? value * gate : value; };
  model->train();
  torch::nn::functional::cross_entropy(model->forward(batch.inputs), batch.labels).backward();
  model->output_transform = nullptr;
  for (torch::Tensor p : model->parameters()) p.mutable_grad() = torch::Tensor();
  std::vector<double> result;
  for (int64_t c = 0; c < channels; ++c) result.push_back(gate.grad()[0][c][0][0].item<double>());
  return result;
}

TEST(TaylorCriterion, IsTheSquaredDerivativeByAGateOnTheChannelAveragedOverBatches) {
  const DataSplits data = brightness_task(3);
  GraphModule model = small_net(3);
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  const int bn1 = model->graph().find("bn1"), bn2 = model->graph().find("bn2"), conv1 = model->graph().find("conv1");
  std::vector<torch::Tensor> before;
  for (const torch::Tensor& b : model->buffers()) before.push_back(b.clone());
  const std::vector<double> scores = taylor_importance(model, analysis, data, 2, 16, 7);
  // The passes leave the statistics (they ran in training mode) and the gradients as they were.
  const std::vector<torch::Tensor> after = model->buffers();
  for (size_t b = 0; b < after.size(); ++b) EXPECT_TRUE(torch::equal(before[b], after[b])) << b;
  for (const torch::Tensor& p : model->parameters()) EXPECT_FALSE(p.grad().defined());
  // The same two batches: drawn from a generator seeded alike, as make_batches draws them.
  torch::Generator generator = at::detail::createCPUGenerator(7);
  const auto order = make_batches(data.train.size(), 16, true, &generator);
  BatchRecipe recipe;
  recipe.mean = data.mean;
  recipe.std = data.std;
  std::vector<double> expected1(6, 0.0), expected2(4, 0.0);
  for (int k = 0; k < 2; ++k) {
    const PreparedBatch batch = prepare_batch(data.train, order[k], 0, order[k].size(0), recipe, nullptr);
    torch::manual_seed(7);
    const std::vector<double> d1 = gate_derivatives(model, bn1, 6, batch);
    const std::vector<double> d2 = gate_derivatives(model, bn2, 4, batch);
    for (int64_t c = 0; c < 6; ++c) expected1[c] += d1[c] * d1[c] / 2;
    for (int64_t c = 0; c < 4; ++c) expected2[c] += d2[c] * d2[c] / 2;
  }
  // The conv's own filter adds almost nothing: batch norm in training mode undoes a filter's scale (but for its
  // epsilon), so weight x gradient sums to about zero over a filter. Hence a tolerance of 0.2 %.
  const int conv2 = model->graph().find("conv2");
  const double largest = std::max(*std::max_element(expected1.begin(), expected1.end()),
                                  *std::max_element(expected2.begin(), expected2.end()));
  ASSERT_GT(largest, 0.0);
  for (int64_t c = 0; c < 6; ++c) {
    EXPECT_NEAR(scores[analysis.unit_of(conv1, c)], expected1[c], 2e-3 * expected1[c] + 1e-6 * largest) << c;
  }
  for (int64_t c = 0; c < 4; ++c) {
    EXPECT_NEAR(scores[analysis.unit_of(conv2, c)], expected2[c], 2e-3 * expected2[c] + 1e-6 * largest) << c;
  }
  expect_error<InputError>([&] { taylor_importance(model, analysis, data, 0, 16, 7); }, {"at least one batch"});
}

TEST(TaylorCriterion, AChannelThatContributesNothingScoresZero) {
  const DataSplits data = brightness_task(4);
  GraphModule model = small_net(4);
  const int conv1 = model->graph().find("conv1"), bn1 = model->graph().find("bn1");
  {
    torch::NoGradGuard no_grad;
    model->weight(bn1)[2] = 0;
    model->bias(bn1)[2] = 0;
  }
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  const std::vector<double> scores = taylor_importance(model, analysis, data, 3, 16, 1);
  EXPECT_LT(scores[analysis.unit_of(conv1, 2)], 1e-12);
  for (int64_t c : {0, 1, 3, 4, 5}) EXPECT_GT(scores[analysis.unit_of(conv1, c)], 1e-10) << c;
}

TEST(BatchNormSparsity, AddsPenaltyTimesTheSignOfGammaToItsGradient) {
  GraphModule model = small_net(5);
  const int bn1 = model->graph().find("bn1");
  {
    torch::NoGradGuard no_grad;
    model->weight(bn1)[0] = -0.5;
  }
  TrainHooks hooks;
  int earlier = 0;
  hooks.after_backward = [&] { ++earlier; };
  add_batch_norm_sparsity(model, 0.01, hooks);
  model->weight(bn1).mutable_grad() = torch::zeros_like(model->weight(bn1));
  hooks.after_backward();
  EXPECT_EQ(earlier, 1);  // the hook already there still runs
  const torch::Tensor grad = model->weight(bn1).grad();
  EXPECT_FLOAT_EQ(grad[0].item<float>(), -0.01f);
  for (int64_t c = 1; c < 6; ++c) EXPECT_FLOAT_EQ(grad[c].item<float>(), 0.01f) << c;
  expect_error<InputError>([&] { add_batch_norm_sparsity(model, -1, hooks); }, {"penalty", ">= 0"});
}

TEST(BatchNormRecalibration, RunningStatisticsBecomeTheAverageOfTheBatchesStatistics) {
  // A batch norm right after the input: its batch statistics are those of the normalised images themselves.
  const DataSplits data = brightness_task(8);
  torch::manual_seed(8);
  GraphModule model(graph_from_layers(
      Json::parse(R"([{"op": "batchnorm", "name": "bn"}, {"op": "flatten"}, {"op": "linear", "out": 2}])"),
      Shape{1, 8, 8, false}, 2));
  const int bn = model->graph().find("bn");
  {
    torch::NoGradGuard no_grad;
    model->running_mean(bn).fill_(5);  // statistics of some other network
    model->running_var(bn).fill_(9);
  }
  model->eval();
  recalibrate_batch_norm(model, data, 3, 16, 21);
  torch::Generator generator = at::detail::createCPUGenerator(21);
  const auto order = make_batches(data.train.size(), 16, true, &generator);
  BatchRecipe recipe;
  recipe.mean = data.mean;
  recipe.std = data.std;
  double mean = 0, variance = 0;
  for (int k = 0; k < 3; ++k) {
    const torch::Tensor x = prepare_batch(data.train, order[k], 0, 16, recipe, nullptr).inputs.to(torch::kFloat64);
    mean += x.mean().item<double>() / 3;
    variance += x.var(/*unbiased=*/true).item<double>() / 3;  // as batch norm's running variance takes it
  }
  EXPECT_NEAR(model->running_mean(bn).item<double>(), mean, 1e-5 * std::abs(mean) + 1e-6);
  EXPECT_NEAR(model->running_var(bn).item<double>(), variance, 1e-5 * variance);
  EXPECT_FALSE(model->is_training());  // the mode it came in
  expect_error<InputError>([&] { recalibrate_batch_norm(model, data, 0, 16, 21); }, {"at least one batch"});
}

TEST(PruneStageCriteria, EachCriterionPrunesResNetBlocksAndSlimmingTrainsFirst) {
  const DataSplits data = brightness_task(6, 16);
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  for (const char* criterion : {"magnitude", "group-norm", "taylor", "bn-scale"}) {
    metrics.clear();
    context.epoch_offset = 0;
    torch::manual_seed(6);
    GraphModule model(build_zoo_model("resnet8", data.input_shape, 2, 1.0));
    const int64_t macs = count_macs(model->graph());
    GraphModule result = find_stage("prune")(
        model,
        stage_config("prune", {{"method", "block"}, {"sparsity", 0.5}, {"criterion", criterion},
                               {"finetune_epochs", 1}, {"batch_size", 16}, {"criterion_batches", 2},
                               {"recalibrate_batches", 2}}),
        context);
    EXPECT_LT(count_macs(result->graph()), macs / 2) << criterion;  // about a quarter: both sides of each conv
    // Slimming's epoch comes before the fine-tuning's.
    EXPECT_EQ(context.epoch_offset, std::string(criterion) == "bn-scale" ? 2 : 1) << criterion;
    bool slimming_recorded = false;
    for (const Metric& m : metrics) slimming_recorded |= m.name == "val_accuracy_after_slimming";
    EXPECT_EQ(slimming_recorded, std::string(criterion) == "bn-scale") << criterion;
  }
}

TEST(PruneStageCriteria, ACriterionIsForBlockAndNotWithSensitivityRatios) {
  const DataSplits data = brightness_task(7);
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  const auto run = [&](const Json& overrides) {
    find_stage("prune")(small_net(8), stage_config("prune", overrides), context);
  };
  expect_error<InputError>([&] { run({{"method", "l1-filter"}, {"sparsity", 0.5}, {"criterion", "taylor"}}); },
                           {"'criterion' = \"taylor\"", "'block'", "l1-filter"});
  expect_error<InputError>(
      [&] { run({{"method", "block"}, {"sparsity", 0.5}, {"criterion", "group-norm"}, {"from_sensitivity", 1.0}}); },
      {"'criterion' = \"group-norm\"", "from_sensitivity"});
  expect_error<InputError>(
      [&] { run({{"method", "magnitude-global"}, {"sparsity", 0.5}, {"recalibrate_batches", 4}}); },
      {"'recalibrate_batches'", "magnitude-global"});
  EXPECT_TRUE(metrics.empty());
}

}  // namespace
}  // namespace edgesweep
