// Tests of pruning against its definitions: exact counts of zeroed weights (global and local) that stay zero through
// fine-tuning; removal of all-zero channels (filter and block) leaves outputs unchanged; block pruning of ResNet-20
// keeps residual adds consistent, cuts MACs as expected and exports a loadable model; round_to; the prune stage's
// records and its errors before training; zstd sizes of sparse and dense artifacts.
#include "edgesweep/workers/compress/prune.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/compress/compressed_size.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "stage_configs.h"
#include "synthetic_data.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

GraphModule small_net(uint64_t seed) {
  torch::manual_seed(seed);
  return GraphModule(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 8}, {"op": "batchnorm", "name": "bn1"}, {"op": "relu", "name": "relu1"},
    {"op": "conv", "name": "conv2", "out": 8}, {"op": "batchnorm", "name": "bn2"}, {"op": "relu", "name": "relu2"},
    {"op": "maxpool", "name": "pool"}, {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc1", "out": 16}, {"op": "relu", "name": "fc1_relu"},
    {"op": "linear", "name": "fc2", "out": 2}
  ])"),
                                       Shape{1, 8, 8, false}, 2));
}

TrainConfig short_training() {
  TrainConfig config;
  config.epochs = 2;
  config.lr = 0.05;
  config.batch_size = 16;
  return config;
}

/// Batch-norm statistics and affine parameters away from their initial values, as after training.
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

/// Zeroes everything tied to `units`: producer filters and biases, batch-norm entries, consumers' input slices.
void zero_units(GraphModule& model, const ChannelAnalysis& analysis, const std::vector<int>& units) {
  torch::NoGradGuard no_grad;
  std::vector<bool> chosen(analysis.unit_group.size(), false);
  for (int u : units) chosen[u] = true;
  const Graph& graph = model->graph();
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    const int n = static_cast<int>(i);
    const int64_t count = node.shape.channels;
    if (node.op == OpKind::Conv || node.op == OpKind::Linear || node.op == OpKind::BatchNorm) {
      for (int64_t p = 0; p < count; ++p) {
        if (!chosen[analysis.unit_of(n, p)]) continue;
        model->weight(n)[p].zero_();
        if (model->bias(n).defined()) model->bias(n)[p].zero_();
      }
    }
    if ((node.op == OpKind::Conv && node.groups == 1) || node.op == OpKind::Linear) {
      const int in = node.inputs[0];
      for (int64_t q = 0; q < graph.nodes[in].shape.channels; ++q) {
        if (chosen[analysis.unit_of(in, q)]) model->weight(n).select(1, q).zero_();
      }
    }
  }
}

torch::Tensor eval_output(GraphModule& model, const torch::Tensor& input) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(input);
}

TEST(PruneUnstructured, GlobalMagnitudeZeroesExactlyHalfAndTheyStayZeroThroughFineTuning) {
  GraphModule model = small_net(1);
  std::vector<torch::Tensor> before;
  int64_t total = 0;
  for (int n : prunable_layers(model->graph())) {
    before.push_back(model->weight(n).detach().clone());
    total += model->weight(n).numel();
  }
  const WeightMasks masks = magnitude_masks(model, 0.5, /*global=*/true);
  apply_masks(model, masks);
  int64_t zeros = 0;
  for (const LayerSparsity& layer : measure_sparsity(model)) zeros += layer.zeros;
  EXPECT_EQ(zeros, std::llround(0.5 * static_cast<double>(total)));
  // One threshold: every pruned |w| is at most every kept |w|, across layers.
  double largest_pruned = 0, smallest_kept = 1e9;
  for (size_t k = 0; k < masks.nodes.size(); ++k) {
    const auto magnitude = before[k].abs();
    const auto pruned = masks.masks[k].eq(0);
    if (pruned.any().item<bool>()) {
      largest_pruned = std::max(largest_pruned, magnitude.masked_select(pruned).max().item<double>());
    }
    if ((~pruned).any().item<bool>()) {
      smallest_kept = std::min(smallest_kept, magnitude.masked_select(~pruned).min().item<double>());
    }
  }
  EXPECT_LE(largest_pruned, smallest_kept);
  // Layers get different ratios under one threshold (the 2-output classifier is not the 8x1x3x3 conv).
  const auto layers = measure_sparsity(model);
  EXPECT_NE(layers.front().percent(), layers.back().percent());

  TrainHooks hooks;
  hooks.after_step = [&] { apply_masks(model, masks); };
  train_model(model, brightness_task(5), short_training(), false, 3, {}, hooks);
  for (size_t k = 0; k < masks.nodes.size(); ++k) {
    const auto& weight = model->weight(masks.nodes[k]);
    const auto pruned = masks.masks[k].eq(0);
    EXPECT_EQ(weight.masked_select(pruned).abs().max().item<double>(), 0.0)
        << model->graph().nodes[masks.nodes[k]].name;
    EXPECT_FALSE(torch::equal(weight.masked_select(~pruned), before[k].masked_select(~pruned)));  // it trained
  }
}

TEST(PruneUnstructured, LocalGivesEveryLayerTheSameRatio) {
  GraphModule model = small_net(2);
  apply_masks(model, magnitude_masks(model, 0.3, /*global=*/false));
  for (const LayerSparsity& layer : measure_sparsity(model)) {
    EXPECT_EQ(layer.zeros, std::llround(0.3 * static_cast<double>(layer.total))) << layer.name;
  }
}

TEST(PruneUnstructured, AGrowingScheduleKeepsEarlierZeros) {
  GraphModule model = small_net(3);
  const WeightMasks first = magnitude_masks(model, 0.2, true);
  apply_masks(model, first);
  {
    torch::NoGradGuard no_grad;  // kept weights shrink below some pruned ones' old magnitude
    for (int n : prunable_layers(model->graph())) model->weight(n).mul_(0.01);
  }
  const WeightMasks second = magnitude_masks(model, 0.5, true, &first);
  for (size_t k = 0; k < first.nodes.size(); ++k) {
    EXPECT_TRUE(second.masks[k].masked_select(first.masks[k].eq(0)).eq(0).all().item<bool>());
  }
}

TEST(PruneStructured, FilterPruningOfZeroChannelsLeavesOutputsUnchanged) {
  GraphModule model = small_net(4);
  randomize_batchnorm(model, 5);
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  const Graph& graph = model->graph();
  // 2 of conv1's 8, 2 of conv2's 8, 4 of fc1's 16 channels: a quarter of each group.
  const auto unit = [&](const char* name, int64_t c) { return analysis.node_units[graph.find(name)][c]; };
  zero_units(model, analysis, {unit("conv1", 1), unit("conv1", 6), unit("conv2", 0), unit("conv2", 5),
                               unit("fc1", 2), unit("fc1", 3), unit("fc1", 9), unit("fc1", 15)});
  const auto input = torch::randn({4, 1, 8, 8});
  const auto expected = eval_output(model, input);
  for (ChannelImportance importance : {ChannelImportance::L1, ChannelImportance::L2}) {
    ChannelSelection selection;
    selection.sparsity = 0.25;
    selection.coupled = false;
    GraphModule pruned = prune_channels(model, importance, selection);
    const Graph& smaller = pruned->graph();
    EXPECT_EQ(smaller.nodes[graph.find("conv1")].out, 6);
    EXPECT_EQ(smaller.nodes[graph.find("conv2")].out, 6);
    EXPECT_EQ(smaller.nodes[graph.find("fc1")].out, 12);
    EXPECT_EQ(pruned->weight(graph.find("fc1")).size(1), 6 * 4 * 4);
    EXPECT_EQ(smaller.nodes[graph.find("fc2")].out, 2);
    EXPECT_TRUE(torch::allclose(eval_output(pruned, input), expected, 1e-5, 1e-5));
  }
}

TEST(PruneStructured, GeometricMedianRanksFiltersByTheirSummedDistanceToTheOthers) {
  GraphModule model = small_net(11);
  const Graph& graph = model->graph();
  const int conv2 = graph.find("conv2");
  {
    // Filter 3 a copy of filter 4: both sit closer to the rest than before, and exactly as close as each other.
    torch::NoGradGuard no_grad;
    model->weight(conv2)[3].copy_(model->weight(conv2)[4]);
  }
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  const std::vector<double> scores = channel_importance(model, analysis, ChannelImportance::GeometricMedian);
  const auto filters = model->weight(conv2).detach().flatten(1).to(torch::kFloat64);
  for (int64_t i = 0; i < 8; ++i) {
    double distance = 0;
    for (int64_t j = 0; j < 8; ++j) distance += (filters[i] - filters[j]).pow(2).sum().sqrt().item<double>();
    EXPECT_NEAR(scores[analysis.node_units[conv2][i]], distance, 1e-9 * distance) << "filter " << i;
  }
  EXPECT_DOUBLE_EQ(scores[analysis.node_units[conv2][3]], scores[analysis.node_units[conv2][4]]);

  // Filters along one direction u, at v_k * u: the summed distances are those of the values, least at their median
  // (-5, filters 2 and 6), whereas the smallest norms are 0.1 and 0.2 (filters 4 and 5).
  GraphModule line = small_net(12);
  {
    torch::NoGradGuard no_grad;
    auto w = line->weight(conv2);
    const auto u = w[0].clone() / w[0].norm();
    const double values[8] = {-10, -9, -5, -8, 0.1, 0.2, -5.01, 0.3};
    for (int64_t k = 0; k < 8; ++k) w[k].copy_(u * values[k]);
  }
  ChannelSelection selection;
  selection.sparsity = 0.25;
  selection.coupled = false;
  const ChannelAnalysis line_analysis = analyze_channel_groups(line->graph());
  const auto removed_by = [&](ChannelImportance importance) {
    const std::vector<bool> removed =
        select_units(line_analysis, channel_importance(line, line_analysis, importance), selection);
    std::vector<int64_t> filters;
    for (int64_t k = 0; k < 8; ++k) {
      if (removed[line_analysis.node_units[conv2][k]]) filters.push_back(k);
    }
    return filters;
  };
  EXPECT_EQ(removed_by(ChannelImportance::GeometricMedian), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(removed_by(ChannelImportance::L2), (std::vector<int64_t>{4, 5}));
}

TEST(PruneStructured, BlockPruningOfZeroChannelsLeavesResNetOutputsUnchanged) {
  torch::manual_seed(6);
  GraphModule model(build_zoo_model("resnet8", Shape{1, 8, 8, false}, 3, 0.5));  // streams of 8, 16 and 32
  randomize_batchnorm(model, 7);
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  std::vector<int> chosen;
  std::mt19937 random(8);
  for (const ChannelGroup& group : analysis.groups) {
    if (!group.prunable) continue;
    std::vector<int> ids = group.unit_ids;
    std::shuffle(ids.begin(), ids.end(), random);
    chosen.insert(chosen.end(), ids.begin(), ids.begin() + group.size() / 4);
  }
  zero_units(model, analysis, chosen);
  const auto input = torch::randn({4, 1, 8, 8});
  const auto expected = eval_output(model, input);
  ChannelSelection selection;
  selection.sparsity = 0.25;
  const std::vector<bool> removed =
      select_units(analysis, channel_importance(model, analysis, ChannelImportance::Block), selection);
  for (int u : chosen) EXPECT_TRUE(removed[u]) << "unit " << u;
  EXPECT_EQ(std::count(removed.begin(), removed.end(), true), static_cast<int64_t>(chosen.size()));
  GraphModule pruned = rebuild_without(model, analysis, removed);
  EXPECT_EQ(pruned->graph().nodes[pruned->graph().find("stem_conv")].out, 6);
  EXPECT_EQ(pruned->graph().nodes[pruned->graph().find("layer3_0_down_conv")].out, 24);
  EXPECT_TRUE(torch::allclose(eval_output(pruned, input), expected, 1e-5, 1e-5));
}

TEST(PruneStructured, BlockPruningResNet20AtHalfKeepsAddsConsistentAndExportsALoadableModel) {
  torch::manual_seed(9);
  GraphModule model(build_zoo_model("resnet20", Shape{1, 16, 16, false}, 10, 1.0));
  randomize_batchnorm(model, 10);
  ChannelSelection selection;
  selection.sparsity = 0.5;
  GraphModule pruned = prune_channels(model, ChannelImportance::Block, selection);
  Graph checked = pruned->graph();
  infer_shapes(checked);  // every add sees equal shapes
  for (const Node& node : checked.nodes) {
    if (node.op == OpKind::Conv && node.name != "stem_conv") {
      const Node& original = model->graph().nodes[model->graph().find(node.name)];
      EXPECT_EQ(node.out, original.out / 2) << node.name;
    }
  }
  EXPECT_EQ(checked.nodes[checked.find("stem_conv")].out, 8);
  // Hidden convs lose half their inputs and outputs: about a quarter of the MACs remain (the stem keeps its input).
  const double ratio = static_cast<double>(count_macs(checked)) / static_cast<double>(count_macs(model->graph()));
  EXPECT_GT(ratio, 0.24);
  EXPECT_LT(ratio, 0.27);

  train_model(pruned, brightness_task(5, 16), short_training(), false, 1);  // (10 classes, 2 used) it still trains
  TempFolder folder("prune-export");
  save_torchscript(pruned, Json::object(), folder / "pruned.pt");
  torch::jit::Module loaded = torch::jit::load((folder / "pruned.pt").string());
  const auto input = torch::randn({3, 1, 16, 16});
  const auto output = loaded.forward({input}).toTensor();
  EXPECT_EQ(output.sizes().vec(), (std::vector<int64_t>{3, 10}));
  EXPECT_TRUE(torch::allclose(output, eval_output(pruned, input), 1e-4, 1e-5));
}

TEST(PruneStructured, RoundToEightGivesMultiplesOfEight) {
  torch::manual_seed(11);
  GraphModule model(build_zoo_model("resnet20", Shape{1, 16, 16, false}, 10, 1.0));
  for (bool global : {false, true}) {
    ChannelSelection selection;
    selection.sparsity = 0.3;
    selection.global = global;
    selection.round_to = 8;
    GraphModule pruned = prune_channels(model, ChannelImportance::Block, selection);
    int64_t narrower = 0;
    for (const Node& node : pruned->graph().nodes) {
      if (node.op != OpKind::Conv) continue;
      EXPECT_EQ(node.out % 8, 0) << node.name << (global ? " (global)" : " (local)");
      narrower += node.out < model->graph().nodes[model->graph().find(node.name)].out ? 1 : 0;
    }
    EXPECT_GT(narrower, 0);
  }
  // Local, to the nearest multiple: 16 - round(4.8) = 11 -> 8, 32 - 10 = 22 -> 24, 64 - 19 = 45 -> 48.
  ChannelSelection local;
  local.sparsity = 0.3;
  local.round_to = 8;
  GraphModule pruned = prune_channels(model, ChannelImportance::Block, local);
  const Graph& g = pruned->graph();
  EXPECT_EQ(g.nodes[g.find("layer1_1_a_conv")].out, 8);
  EXPECT_EQ(g.nodes[g.find("layer2_1_a_conv")].out, 24);
  EXPECT_EQ(g.nodes[g.find("layer3_1_b_conv")].out, 48);
  // Never below one multiple: 16 - round(14.4) = 2 -> 8.
  local.sparsity = 0.9;
  const Graph& tiny = prune_channels(model, ChannelImportance::Block, local)->graph();
  EXPECT_EQ(tiny.nodes[tiny.find("layer1_1_a_conv")].out, 8);
}

TEST(PruneStructured, RoundsAgainstTheUnprunedSizesReachTheOneShotWidths) {
  torch::manual_seed(12);
  GraphModule model(build_zoo_model("resnet20", Shape{1, 16, 16, false}, 10, 1.0));
  const ChannelAnalysis original = analyze_channel_groups(model->graph());
  ChannelSelection selection;
  selection.round_to = 8;
  selection.sparsity = 0.3;
  const Graph one_shot = prune_channels(model, ChannelImportance::Block, selection)->graph();
  // Two rounds taking 15% and then 17.6% of what is left would compound the rounding (16 -> 16 -> 16, where one
  // shot gives 8); two rounds
  // reaching 15% and then 30% of the unpruned sizes end where one shot does.
  GraphModule current = model;
  for (double target : {0.15, 0.3}) {
    const ChannelAnalysis analysis = analyze_channel_groups(current->graph());
    ASSERT_EQ(analysis.groups.size(), original.groups.size());
    ChannelSelection round = selection;
    round.sparsity = target;
    for (const ChannelGroup& group : original.groups) round.base_sizes.push_back(group.size());
    current = rebuild_without(
        current, analysis,
        select_units(analysis, channel_importance(current, analysis, ChannelImportance::Block), round));
  }
  for (const Node& node : one_shot.nodes) {
    EXPECT_EQ(current->graph().nodes[current->graph().find(node.name)].out, node.out) << node.name;
  }
  ChannelSelection wrong = selection;
  wrong.base_sizes = {16};
  EXPECT_THROW(select_units(original, std::vector<double>(original.unit_group.size(), 1.0), wrong), InputError);
}

TEST(PruneStructured, GlobalAllocationRemovesTheTargetAndKeepsOneChannelPerGroup) {
  const Graph graph = build_zoo_model("resnet8", Shape{1, 8, 8, false}, 3, 0.5);
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  std::vector<double> importance(analysis.unit_group.size(), 1.0);
  int64_t eligible = 0;
  const ChannelGroup* weak = nullptr;
  for (const ChannelGroup& group : analysis.groups) {
    if (!group.prunable) continue;
    eligible += group.size();
    if (weak == nullptr) weak = &group;
  }
  for (int u : weak->unit_ids) importance[u] = 1e-6;  // uniform within its group: normalised, it is like the rest
  importance[weak->unit_ids[3]] = 0;                  // the weakest unit overall
  ChannelSelection selection;
  selection.sparsity = 0.9;
  selection.global = true;
  const auto removed = select_units(analysis, importance, selection);
  EXPECT_TRUE(removed[weak->unit_ids[3]]);
  int64_t count = 0;
  for (const ChannelGroup& group : analysis.groups) {
    int64_t kept = 0;
    for (int u : group.unit_ids) kept += removed[u] ? 0 : 1;
    EXPECT_GE(kept, 1);
    count += group.size() - kept;
  }
  EXPECT_EQ(count, std::llround(0.9 * static_cast<double>(eligible)));
}

/// The prune stage's parameters: schema defaults with `overrides`.
StageConfig prune_stage_config(const Json& overrides) { return stage_config("prune", overrides); }

double metric(const std::vector<Metric>& metrics, const std::string& name) {
  for (const Metric& m : metrics) {
    if (m.name == name && m.step == -1) return m.value;
  }
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

TEST(PruneStage, MagnitudeGlobalRecordsAccuraciesSparsityAndFineTunes) {
  const DataSplits data = brightness_task(5);
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  for (const char* schedule : {"one-shot", "iterative"}) {
    metrics.clear();
    context.epoch_offset = 0;
    GraphModule model = small_net(12);
    GraphModule original = clone_graph_module(model);  // the stage masks `model` in place
    const StageConfig stage = prune_stage_config(
        {{"method", "magnitude-global"}, {"sparsity", 0.5}, {"schedule", schedule}, {"steps", 3},
         {"finetune_epochs", 1}, {"batch_size", 16}, {"lr", 0.05}});
    GraphModule result = find_stage("prune")(model, stage, context);
    int64_t total = 0;
    for (int n : prunable_layers(result->graph())) total += result->weight(n).numel();
    const double zeroed = static_cast<double>(std::llround(0.5 * static_cast<double>(total)));
    EXPECT_DOUBLE_EQ(metric(metrics, "sparsity"), 100.0 * zeroed / static_cast<double>(total)) << schedule;
    // Each record against the same figure computed here.
    const auto accuracy = [&](GraphModule m) { return evaluate_accuracy(m, data.val, data.mean, data.std, 256); };
    EXPECT_DOUBLE_EQ(metric(metrics, "val_accuracy_before_prune"), accuracy(original)) << schedule;
    EXPECT_DOUBLE_EQ(metric(metrics, "val_accuracy_after_finetune"), accuracy(result)) << schedule;
    if (std::string(schedule) == "one-shot") {
      // Before fine-tuning: the original with its 50 % smallest weights (over all layers) zeroed.
      GraphModule masked = clone_graph_module(original);
      apply_masks(masked, magnitude_masks(masked, 0.5, true));
      EXPECT_DOUBLE_EQ(metric(metrics, "val_accuracy_after_prune"), accuracy(masked));
    } else {
      const double after_prune = metric(metrics, "val_accuracy_after_prune");
      EXPECT_TRUE(after_prune >= 0 && after_prune <= 100) << after_prune;
    }
    for (const char* layer : {"conv1", "fc2"}) {
      const torch::Tensor w = result->weight(result->graph().find(layer));
      EXPECT_DOUBLE_EQ(metric(metrics, std::string("sparsity/") + layer),
                       100.0 * (w == 0).sum().item<double>() / static_cast<double>(w.numel()))
          << layer;
    }
    EXPECT_EQ(metric(metrics, "params_before"), static_cast<double>(count_params(original->graph())));
    EXPECT_EQ(metric(metrics, "macs_before"), static_cast<double>(count_macs(original->graph())));
    EXPECT_EQ(context.epoch_offset, std::string(schedule) == "iterative" ? 3 : 1);
  }
}

TEST(PruneStage, BlockShrinksTheModelAndNamesMetricsPerStageWhenThereAreSeveral) {
  const DataSplits data = brightness_task(5);
  TrialConfig trial;
  trial.pipeline = {prune_stage_config({{"method", "block"}, {"sparsity", 0.5}}),
                    prune_stage_config({{"method", "l1-filter"}, {"sparsity", 0.5}})};
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 1, 0, &metrics};
  GraphModule model = small_net(13);
  const StageConfig stage = prune_stage_config(
      {{"method", "l2-filter"}, {"sparsity", 0.5}, {"schedule", "iterative"}, {"steps", 2}, {"finetune_epochs", 1},
       {"batch_size", 16}});
  GraphModule result = find_stage("prune")(model, stage, context);
  EXPECT_EQ(result->graph().nodes[result->graph().find("conv1")].out, 4);
  EXPECT_EQ(result->graph().nodes[result->graph().find("fc1")].out, 8);
  EXPECT_LT(metric(metrics, "stage1/macs_after"), metric(metrics, "stage1/macs_before"));
  EXPECT_EQ(metric(metrics, "stage1/macs_after"), static_cast<double>(count_macs(result->graph())));
  EXPECT_DOUBLE_EQ(metric(metrics, "stage1/val_accuracy_after_finetune"),
                   evaluate_accuracy(result, data.val, data.mean, data.std, 256));

  // The geometric-median filter method through the stage: the same shapes as the norm methods.
  GraphModule fpgm = find_stage("prune")(small_net(14), prune_stage_config({{"method", "fpgm-filter"}, {"sparsity", 0.5},
                                                                           {"finetune_epochs", 0}}),
                                         context);
  EXPECT_EQ(fpgm->graph().nodes[fpgm->graph().find("conv2")].out, 4);
  EXPECT_EQ(fpgm->graph().nodes[fpgm->graph().find("fc1")].out, 8);
}

TEST(PruneStage, BadParametersFailBeforeAnyTraining) {
  const SectionSpec& spec = stage_spec("prune");
  Json one = 1.0;
  EXPECT_EQ(check_value(*spec.find("sparsity"), one), "'sparsity' = 1.0 is out of range: must be < 1");
  Json method = "random";
  EXPECT_NE(check_value(*spec.find("method"), method).find("expected one of: magnitude-local"), std::string::npos);

  const DataSplits data = brightness_task(5);
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  GraphModule model = small_net(14);
  const auto run = [&](const Json& overrides) { find_stage("prune")(model, prune_stage_config(overrides), context); };
  expect_error<InputError>([&] { run({{"method", "random"}, {"sparsity", 0.5}}); }, {"prune", "'method'", "random"});
  expect_error<InputError>([&] { run({{"method", "block"}, {"sparsity", 1.0}}); }, {"prune", "'sparsity' = 1"});
  EXPECT_TRUE(metrics.empty());
  // Every channel group of this model is coupled by the add: filter pruning has nothing it may remove.
  torch::manual_seed(15);
  model = GraphModule(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "a", "out": 4, "inputs": ["input"]},
    {"op": "conv", "name": "b", "out": 4, "inputs": ["input"]},
    {"op": "add", "name": "sum", "inputs": ["a", "b"]},
    {"op": "flatten"}, {"op": "linear", "out": 2}
  ])"),
                                        Shape{1, 8, 8, false}, 2));
  expect_error<InputError>([&] { run({{"method", "l1-filter"}, {"sparsity", 0.5}}); },
                           {"prune", "l1-filter", "hint", "block"});
  EXPECT_TRUE(metrics.empty());
}

TEST(PruneCompressedSize, SparsityShrinksTheCompressedArtifactNotTheDenseOne) {
  TempFolder folder("prune-size");
  torch::manual_seed(16);
  GraphModule model(build_zoo_model("resnet8", Shape{1, 16, 16, false}, 10, 1.0));
  save_torchscript(model, Json::object(), folder / "dense.pt");
  apply_masks(model, magnitude_masks(model, 0.7, true));
  save_torchscript(model, Json::object(), folder / "sparse.pt");
  const auto dense_bytes = std::filesystem::file_size(folder / "dense.pt");
  const auto sparse_bytes = std::filesystem::file_size(folder / "sparse.pt");
  EXPECT_NEAR(static_cast<double>(sparse_bytes), static_cast<double>(dense_bytes), 64.0);
  const int64_t dense = compressed_file_size(folder / "dense.pt");
  const int64_t sparse = compressed_file_size(folder / "sparse.pt");
  EXPECT_LT(dense, static_cast<int64_t>(dense_bytes));
  EXPECT_LT(static_cast<double>(sparse), 0.6 * static_cast<double>(dense));  // 70% zeros, scattered
  expect_error<Error>([&] { compressed_file_size(folder / "missing.pt"); }, {"missing.pt"});
}

}  // namespace
}  // namespace edgesweep
