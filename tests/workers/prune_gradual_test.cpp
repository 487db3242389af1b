// Tests of gradual pruning: the AGP schedule's values at chosen steps, masks that follow it step by step and reach
// the final sparsity, movement scores equal to -sum(grad * weight) on a hand-computed case, and the prune stage's
// agp and movement settings with their errors before training.
#include "edgesweep/workers/compress/prune_gradual.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/trainer.h"
#include "expect_error.h"
#include "stage_configs.h"
#include "synthetic_data.h"

namespace edgesweep {
namespace {

TEST(AgpSchedule, FollowsTheCubicAtChosenSteps) {
  // s_f = 0.8, s_i = 0, dt = 10, n = 5: s_t = 0.8 - 0.8 (1 - t / 50)^3.
  EXPECT_DOUBLE_EQ(agp_sparsity(0, 0.8, 0, 0, 10, 5), 0.0);
  EXPECT_DOUBLE_EQ(agp_sparsity(0, 0.8, 10, 0, 10, 5), 0.8 - 0.8 * 0.512);  // 0.3904
  EXPECT_DOUBLE_EQ(agp_sparsity(0, 0.8, 20, 0, 10, 5), 0.8 - 0.8 * 0.216);  // 0.6272
  EXPECT_DOUBLE_EQ(agp_sparsity(0, 0.8, 25, 0, 10, 5), 0.7);                // (1/2)^3 = 1/8
  EXPECT_DOUBLE_EQ(agp_sparsity(0, 0.8, 50, 0, 10, 5), 0.8);
  EXPECT_DOUBLE_EQ(agp_sparsity(0, 0.8, 70, 0, 10, 5), 0.8);  // held after the ramp
  // s_i = 0.2: 0.8 - 0.6 / 8 at the midpoint; a start t0 = 5 shifts the curve.
  EXPECT_DOUBLE_EQ(agp_sparsity(0.2, 0.8, 25, 0, 10, 5), 0.725);
  EXPECT_DOUBLE_EQ(agp_sparsity(0.2, 0.8, 3, 5, 10, 5), 0.2);
  EXPECT_DOUBLE_EQ(agp_sparsity(0, 0.8, 30, 5, 10, 5), 0.7);
  // It only grows, fastest at the start.
  double previous = 0, previous_gain = 1;
  for (int64_t t = 1; t <= 50; ++t) {
    const double s = agp_sparsity(0, 0.8, t, 0, 1, 50);
    EXPECT_GT(s, previous);
    EXPECT_LT(s - previous, previous_gain);
    previous_gain = s - previous;
    previous = s;
  }
}

GraphModule small_net(uint64_t seed) {
  torch::manual_seed(seed);
  return GraphModule(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 8}, {"op": "relu"}, {"op": "maxpool"}, {"op": "flatten"},
    {"op": "linear", "name": "fc1", "out": 16}, {"op": "relu"}, {"op": "linear", "name": "fc2", "out": 2}
  ])"),
                                       Shape{1, 8, 8, false}, 2));
}

int64_t zero_weights(const GraphModule& model) {
  int64_t zeros = 0;
  for (const LayerSparsity& layer : measure_sparsity(model)) zeros += layer.zeros;
  return zeros;
}

int64_t prunable_weights(const GraphModule& model) {
  int64_t total = 0;
  for (const LayerSparsity& layer : measure_sparsity(model)) total += layer.total;
  return total;
}

TEST(GradualPruner, MasksFollowTheScheduleAndReachTheFinalSparsity) {
  const DataSplits data = brightness_task(31);
  for (bool movement : {false, true}) {
    GraphModule model = small_net(1);
    const double total = static_cast<double>(prunable_weights(model));
    GradualSchedule schedule;
    schedule.initial_sparsity = movement ? 0.0 : 0.1;
    schedule.final_sparsity = 0.6;
    schedule.frequency = 2;
    schedule.ramp = 0.75;  // of 12 steps (3 epochs of 4 batches): 9 -> n = 4 updates, at steps 2, 4, 6, 8
    schedule.global = true;
    schedule.movement = movement;
    GradualPruner pruner(model, schedule, 12);
    EXPECT_EQ(pruner.updates(), 4);
    EXPECT_EQ(zero_weights(model), std::llround(schedule.initial_sparsity * total));
    TrainHooks hooks = pruner.hooks();
    std::vector<int64_t> zeros;
    const auto prune_step = hooks.after_step;
    hooks.after_step = [&] {
      prune_step();
      zeros.push_back(zero_weights(model));
    };
    TrainConfig config;
    config.epochs = 3;
    config.batch_size = 16;
    config.lr = 0.05;
    train_model(model, data, config, false, 4, {}, hooks);
    ASSERT_EQ(zeros.size(), 12u);
    for (int64_t step = 1; step <= 12; ++step) {
      const int64_t update = std::min<int64_t>(step / 2 * 2, 8);  // the last update at or before this step
      const double sparsity = agp_sparsity(schedule.initial_sparsity, 0.6, update, 0, 2, 4);
      EXPECT_EQ(zeros[step - 1], std::llround(sparsity * total)) << "step " << step << (movement ? " movement" : "");
    }
    EXPECT_EQ(zeros.back(), std::llround(0.6 * total));
  }
}

// One linear layer on two features, W = [[0.5, -1], [2, 0.25]], b = 0, input x = [1, 2], label 0.
// Logits z = W x = [-1.5, 2.5]; p = softmax(z) = [s, 1 - s] with s = 1 / (1 + e^4); dL/dz = p - [1, 0] = [-(1 - s),
// 1 - s]; dL/dW = dL/dz x^T = (1 - s) [[-1, -2], [1, 2]]. Score -g * w = (1 - s) [[0.5, -2], [-2, -0.5]].
TEST(MovementScores, AccumulateMinusGradTimesWeight) {
  GraphModule model(graph_from_layers(Json::parse(R"([{"op": "flatten"}, {"op": "linear", "name": "fc", "out": 2}])"),
                                      Shape{2, 1, 1, false}, 2));
  const int fc = model->graph().find("fc");
  {
    torch::NoGradGuard no_grad;
    model->weight(fc).copy_(torch::tensor({0.5, -1.0, 2.0, 0.25}).view({2, 2}));
    model->bias(fc).zero_();
  }
  MovementScores scores(model);
  ASSERT_EQ(scores.nodes, std::vector<int>{fc});
  EXPECT_EQ(scores.scores[0].abs().sum().item<double>(), 0.0);
  const auto input = torch::tensor({1.0f, 2.0f}).view({1, 2, 1, 1});
  const auto label = torch::tensor({0}, torch::kInt64);
  torch::nn::functional::cross_entropy(model->forward(input), label).backward();
  scores.accumulate(model);
  const double s = 1.0 / (1.0 + std::exp(4.0));
  const auto expected = (1.0 - s) * torch::tensor({0.5, -2.0, -2.0, -0.5}, torch::kFloat64).view({2, 2});
  EXPECT_TRUE(torch::allclose(scores.scores[0], expected, 1e-6, 1e-7)) << scores.scores[0];
  scores.accumulate(model);  // the same gradient again: the sum doubles
  EXPECT_TRUE(torch::allclose(scores.scores[0], 2 * expected, 1e-6, 1e-7));
  // The lowest scores go first: at half sparsity the two -2 (1 - s) entries, whatever their magnitude.
  const WeightMasks masks = lowest_score_masks(model, scores.scores, 0.5, true);
  EXPECT_TRUE(torch::equal(masks.masks[0], torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({2, 2})));
}

// Regrowth (Sanh et al. 2020) on the layer above. The first update prunes the two -2 (1 - s) scores, W01 and W10, by
// masking them in the forward pass; their dense values stay. With the masked W' = [[0.5, 0], [0, 0.25]], input [1, 2]
// and label 1: z = [0.5, 0.5], dL/dz = [0.5, -0.5], dL/dW' = [[0.5, 1], [-0.5, -1]], and each pass adds
// -dL/dW' * W = [[-0.25, 1], [1, 0.25]] to the scores, the pruned weights included (straight-through). After three
// passes the scores are [[0.5 (1 - s) - 0.75, 1.04], [1.04, 0.75 - 0.5 (1 - s)]]: the second update prunes W00 and
// W11 and the first two come back with their old values.
TEST(MovementScores, RegrowthLetsPrunedWeightsReturnWhenTheirScoresRise) {
  for (bool regrow : {true, false}) {
    SCOPED_TRACE(regrow ? "regrow" : "masks only grow");
    GraphModule model(graph_from_layers(
        Json::parse(R"([{"op": "flatten"}, {"op": "linear", "name": "fc", "out": 2}])"), Shape{2, 1, 1, false}, 2));
    const int fc = model->graph().find("fc");
    const auto dense = torch::tensor({0.5, -1.0, 2.0, 0.25}).view({2, 2});
    {
      torch::NoGradGuard no_grad;
      model->weight(fc).copy_(dense);
      model->bias(fc).zero_();
    }
    GradualSchedule schedule;
    schedule.final_sparsity = 0.5;
    schedule.frequency = 1;
    schedule.ramp = 1.0;
    schedule.global = true;
    schedule.movement = true;
    schedule.regrow = regrow;
    GradualPruner pruner(model, schedule, 2);  // updates at steps 1 (2 of 4 pruned) and 2 (2 of 4)
    TrainHooks hooks = pruner.hooks();
    const auto input = torch::tensor({1.0f, 2.0f}).view({1, 2, 1, 1});
    const auto pass = [&](int64_t label) {
      model->zero_grad();
      torch::nn::functional::cross_entropy(model->forward(input), torch::tensor({label}, torch::kInt64)).backward();
      hooks.after_backward();
    };
    pass(0);
    hooks.after_step();
    EXPECT_TRUE(torch::equal(pruner.masks().masks[0], torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({2, 2})));
    for (int i = 0; i < 3; ++i) pass(1);
    if (regrow) {
      // Pruned weights keep their values and get no gradient of their own.
      EXPECT_TRUE(torch::equal(model->weight(fc).detach(), dense));
      EXPECT_EQ(model->weight(fc).grad()[0][1].item<float>(), 0.0f);
      EXPECT_EQ(model->weight(fc).grad()[1][0].item<float>(), 0.0f);
    }
    hooks.after_step();
    pruner.finish();
    EXPECT_FALSE(model->weight_transform);
    if (regrow) {
      EXPECT_TRUE(torch::equal(pruner.masks().masks[0], torch::tensor({0.0f, 1.0f, 1.0f, 0.0f}).view({2, 2})));
      EXPECT_TRUE(torch::equal(model->weight(fc).detach(), torch::tensor({0.0f, -1.0f, 2.0f, 0.0f}).view({2, 2})));
    } else {
      EXPECT_TRUE(torch::equal(pruner.masks().masks[0], torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}).view({2, 2})));
      EXPECT_TRUE(torch::equal(model->weight(fc).detach(), torch::tensor({0.5f, 0.0f, 0.0f, 0.25f}).view({2, 2})));
    }
  }
}

TEST(MovementScores, MatchTheSumOverATrainingRun) {
  const DataSplits data = brightness_task(31);
  GraphModule model = small_net(2);
  MovementScores scores(model);
  std::vector<torch::Tensor> expected;
  for (int node : scores.nodes) expected.push_back(torch::zeros(model->weight(node).sizes(), torch::kFloat64));
  TrainHooks hooks;
  hooks.after_backward = [&] {
    scores.accumulate(model);
    for (size_t k = 0; k < scores.nodes.size(); ++k) {
      const auto& w = model->weight(scores.nodes[k]);
      expected[k] -= (w.grad() * w.detach()).to(torch::kFloat64);
    }
  };
  TrainConfig config;
  config.epochs = 1;
  config.batch_size = 16;
  train_model(model, data, config, false, 5, {}, hooks);
  for (size_t k = 0; k < scores.nodes.size(); ++k) {
    EXPECT_TRUE(torch::allclose(scores.scores[k], expected[k], 1e-6, 1e-9));
    EXPECT_GT(scores.scores[k].abs().sum().item<double>(), 0.0);
  }
}

StageConfig prune_config(const Json& overrides) { return stage_config("prune", overrides); }

double metric(const std::vector<Metric>& metrics, const std::string& name) {
  for (const Metric& m : metrics) {
    if (m.name == name && m.step == -1) return m.value;
  }
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

TEST(PruneStage, AgpAndMovementReachTheirSparsityAndBadSettingsFailBeforeTraining) {
  const DataSplits data = brightness_task(31);
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  for (const std::string method : {"magnitude-local", "magnitude-global", "movement", "movement-regrow"}) {
    metrics.clear();
    GraphModule model = small_net(3);
    const double total = static_cast<double>(prunable_weights(model));
    const bool regrow = method == "movement-regrow";
    GraphModule result = find_stage("prune")(
        model,
        prune_config({{"method", regrow ? "movement" : method}, {"sparsity", 0.5}, {"schedule", "agp"},
                      {"agp_frequency", 2}, {"finetune_epochs", 2}, {"batch_size", 16}, {"allocation", "global"},
                      {"regrow", regrow}}),
        context);
    EXPECT_FALSE(result->weight_transform) << method;  // regrow: the masks are zeros now, not a forward transform
    EXPECT_EQ(zero_weights(result), std::llround(0.5 * total)) << method;  // global: one count across layers
    EXPECT_NEAR(metric(metrics, "sparsity"), 50.0, 0.1) << method;
    EXPECT_DOUBLE_EQ(metric(metrics, "val_accuracy_after_finetune"),
                     evaluate_accuracy(result, data.val, data.mean, data.std, 256))
        << method;
  }
  metrics.clear();
  GraphModule model = small_net(4);
  const auto run = [&](const Json& overrides) { find_stage("prune")(model, prune_config(overrides), context); };
  expect_error<InputError>([&] { run({{"method", "movement"}, {"sparsity", 0.5}}); },
                           {"prune", "movement", "agp", "one-shot"});
  expect_error<InputError>(
      [&] { run({{"method", "magnitude-local"}, {"sparsity", 0.5}, {"schedule", "agp"}, {"regrow", true}}); },
      {"prune", "'regrow' = true", "'movement'", "magnitude-local"});
  expect_error<InputError>([&] { run({{"method", "block"}, {"sparsity", 0.5}, {"schedule", "agp"}}); },
                           {"prune", "agp", "block"});
  expect_error<InputError>(
      [&] { run({{"method", "magnitude-local"}, {"sparsity", 0.5}, {"schedule", "agp"}, {"agp_frequency", 9}}); },
      {"prune", "'agp_frequency' = 9", "1 epochs of 1 batches"});
  expect_error<InputError>(
      [&] {
        run({{"method", "magnitude-local"}, {"sparsity", 0.5}, {"schedule", "agp"}, {"finetune_epochs", 0}});
      },
      {"prune", "agp", "'finetune_epochs' >= 1"});
  expect_error<InputError>(
      [&] {
        run({{"method", "movement"}, {"sparsity", 0.5}, {"schedule", "agp"}, {"agp_initial_sparsity", 0.1}});
      },
      {"prune", "'agp_initial_sparsity' = 0.1", "movement"});
  expect_error<InputError>(
      [&] {
        run({{"method", "magnitude-local"}, {"sparsity", 0.3}, {"schedule", "agp"}, {"agp_initial_sparsity", 0.4}});
      },
      {"prune", "'agp_initial_sparsity' = 0.4", "'sparsity' = 0.3"});
  EXPECT_TRUE(metrics.empty());
}

}  // namespace
}  // namespace edgesweep
