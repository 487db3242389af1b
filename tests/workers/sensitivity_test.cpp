// Tests of sensitivity analysis: one record per layer (or group) and ratio equal to the accuracy drop of pruning
// that layer alone, the model handed on unchanged, per-layer ratios chosen from the records, and a prune stage that
// applies them.
#include "edgesweep/workers/compress/sensitivity.h"

#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/compress/channel_groups.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/trainer.h"
#include "expect_error.h"
#include "stage_configs.h"
#include "synthetic_data.h"

namespace edgesweep {
namespace {

GraphModule trained_net(const DataSplits& data) {
  torch::manual_seed(1);
  GraphModule model(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 8}, {"op": "batchnorm"}, {"op": "relu"}, {"op": "maxpool"},
    {"op": "flatten"}, {"op": "linear", "name": "fc1", "out": 16}, {"op": "relu"},
    {"op": "linear", "name": "fc2", "out": 2}
  ])"),
                                      Shape{1, 8, 8, false}, 2));
  TrainConfig config;
  config.epochs = 2;
  config.batch_size = 16;
  train_model(model, data, config, false, 2);
  return model;
}

double metric(const std::vector<Metric>& metrics, const std::string& name) {
  for (const Metric& m : metrics) {
    if (m.name == name && m.step == -1) return m.value;
  }
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

TEST(Sensitivity, RecordsTheDropOfEachLayerAloneAndLeavesTheModel) {
  const DataSplits data = brightness_task(41, 8, 48);
  GraphModule model = trained_net(data);
  std::vector<torch::Tensor> before;
  for (const auto& p : model->parameters()) before.push_back(p.detach().clone());
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  GraphModule same = find_stage("sensitivity")(model, stage_config("sensitivity", {{"ratios", {0.5, 0.9}}}), context);
  EXPECT_EQ(metrics.size(), 1u + 3 * 2);  // the reference, then 3 layers x 2 ratios
  size_t k = 0;
  for (const auto& p : same->parameters()) EXPECT_TRUE(torch::equal(p, before[k++]));
  const double reference = evaluate_accuracy(model, data.val, data.mean, data.std, 256);
  EXPECT_EQ(metric(metrics, "sensitivity_val_accuracy"), reference);
  // Every record, by hand: zero the layer's smallest weights in a copy (the other layers untouched) and measure.
  for (const char* layer : {"conv1", "fc1", "fc2"}) {
    for (double ratio : {0.5, 0.9}) {
      GraphModule copy = clone_graph_module(model);
      {
        torch::NoGradGuard no_grad;
        const WeightMasks all = magnitude_masks(copy, ratio, false);
        for (size_t i = 0; i < all.nodes.size(); ++i) {
          if (copy->graph().nodes[all.nodes[i]].name == layer) copy->weight(all.nodes[i]).mul_(all.masks[i]);
        }
      }
      EXPECT_DOUBLE_EQ(metric(metrics, fmt::format("sensitivity/{}/{:g}", layer, ratio)),
                       reference - evaluate_accuracy(copy, data.val, data.mean, data.std, 256))
          << layer << " at " << ratio;
    }
  }

  metrics.clear();
  find_stage("sensitivity")(model, stage_config("sensitivity", {{"method", "block"}, {"ratios", {0.5}}}), context);
  EXPECT_EQ(metrics.size(), 1u + 2);  // conv1's and fc1's groups; fc2 holds the outputs
  // Each group alone rebuilt without half its channels (conv1 8 -> 4, fc1 16 -> 8) and measured.
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  for (const auto& [group, width] : {std::pair{"conv1", 4}, std::pair{"fc1", 8}}) {
    GraphModule pruned = rebuild_without(model, analysis, select_units_per_group(model, analysis, {{group, 0.5}}));
    EXPECT_EQ(pruned->graph().nodes[pruned->graph().find(group)].out, width) << group;
    EXPECT_DOUBLE_EQ(metric(metrics, fmt::format("sensitivity/{}/0.5", group)),
                     reference - evaluate_accuracy(pruned, data.val, data.mean, data.std, 256))
        << group;
  }
}

TEST(Sensitivity, RatiosAreTheLargestWithinTheDropCappedBySparsity) {
  const std::vector<Metric> metrics = {
      {-1, "sensitivity/a/0.25", 0.0}, {-1, "sensitivity/a/0.5", 0.5}, {-1, "sensitivity/a/0.75", 3.0},
      {-1, "sensitivity/b/0.25", 2.0}, {-1, "sensitivity/b/0.5", 4.0}, {-1, "sensitivity/c/0.25", -1.0},
      {-1, "sensitivity/c/0.5", 0.0},  {-1, "sensitivity/c/0.75", 0.2}, {-1, "other", 5.0}};
  const auto ratios = ratios_from_sensitivity(metrics, 1.0, 0.6);
  EXPECT_EQ(ratios.at("a"), 0.5);
  EXPECT_EQ(ratios.at("b"), 0.0);  // every ratio costs more than 1 point
  EXPECT_EQ(ratios.at("c"), 0.6);  // 0.75 is allowed, the cap is 0.6
  EXPECT_EQ(ratios.size(), 3u);
  expect_error<InputError>([] { ratios_from_sensitivity({{-1, "test_accuracy", 90}}, 1.0, 0.5); },
                           {"from_sensitivity", "sensitivity stage"});
}

TEST(Sensitivity, APruneStageTakesPerLayerRatiosFromIt) {
  const DataSplits data = brightness_task(41, 8, 48);
  GraphModule model = trained_net(data);
  TrialConfig trial;
  std::vector<Metric> metrics = {{-1, "sensitivity/conv1/0.5", 0.0}, {-1, "sensitivity/conv1/0.75", 5.0},
                                 {-1, "sensitivity/fc1/0.5", 0.0},   {-1, "sensitivity/fc1/0.75", 0.5},
                                 {-1, "sensitivity/fc2/0.5", 9.0},   {-1, "sensitivity/fc2/0.75", 9.0}};
  StageContext context{data, trial, GraphModule(nullptr), 1, 0, &metrics};
  GraphModule pruned = find_stage("prune")(
      model,
      stage_config("prune", {{"method", "magnitude-local"}, {"sparsity", 0.9}, {"from_sensitivity", 1.0},
                             {"finetune_epochs", 0}}),
      context);
  EXPECT_DOUBLE_EQ(metric(metrics, "sparsity/conv1"), 50.0);
  EXPECT_DOUBLE_EQ(metric(metrics, "sparsity/fc1"), 75.0);
  EXPECT_DOUBLE_EQ(metric(metrics, "sparsity/fc2"), 0.0);

  GraphModule smaller = find_stage("prune")(
      model,
      stage_config("prune", {{"method", "block"}, {"sparsity", 0.9}, {"from_sensitivity", 1.0},
                             {"finetune_epochs", 0}}),
      context);
  EXPECT_EQ(smaller->graph().nodes[smaller->graph().find("conv1")].out, 4);
  EXPECT_EQ(smaller->graph().nodes[smaller->graph().find("fc1")].out, 4);

  std::vector<Metric> none;
  StageContext without{data, trial, GraphModule(nullptr), 0, 0, &none};
  expect_error<InputError>(
      [&] {
        find_stage("prune")(model, stage_config("prune", {{"method", "magnitude-local"}, {"sparsity", 0.5},
                                                          {"from_sensitivity", 1.0}}),
                            without);
      },
      {"from_sensitivity", "sensitivity stage"});
  expect_error<InputError>(
      [&] {
        find_stage("prune")(model, stage_config("prune", {{"method", "l1-filter"}, {"sparsity", 0.5},
                                                          {"from_sensitivity", 1.0}}),
                            context);
      },
      {"prune", "from_sensitivity", "l1-filter"});
  EXPECT_TRUE(none.empty());
}

}  // namespace
}  // namespace edgesweep
