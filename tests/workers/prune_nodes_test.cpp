// Tests of node pruning: neurons of hidden linear layers whose incoming weights are zero are the ones removed, the
// consumer's input features shrink with them, the outputs stay the same, convs are left alone, and the prune stage
// refuses a model with no hidden linear layer before training.
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/stages.h"
#include "expect_error.h"
#include "stage_configs.h"

namespace edgesweep {
namespace {

GraphModule conv_and_mlp(uint64_t seed) {
  torch::manual_seed(seed);
  return GraphModule(graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "conv1", "out": 4}, {"op": "relu"}, {"op": "maxpool"}, {"op": "flatten"},
    {"op": "linear", "name": "fc1", "out": 16}, {"op": "relu"},
    {"op": "linear", "name": "fc2", "out": 8}, {"op": "relu"},
    {"op": "linear", "name": "fc3", "out": 3}
  ])"),
                                       Shape{1, 8, 8, false}, 3));
}

/// Zeroes the incoming weights and the bias of neurons `neurons` of linear layer `name`.
void zero_neurons(GraphModule& model, const std::string& name, const std::vector<int64_t>& neurons) {
  torch::NoGradGuard no_grad;
  const int node = model->graph().find(name);
  for (int64_t n : neurons) {
    model->weight(node)[n].zero_();
    model->bias(node)[n].zero_();
  }
}

TEST(PruneNodes, RemovesZeroNeuronsShrinksTheConsumersAndKeepsOutputs) {
  GraphModule model = conv_and_mlp(1);
  zero_neurons(model, "fc1", {0, 5, 6, 13});
  zero_neurons(model, "fc2", {2, 7});
  const auto input = torch::randn({5, 1, 8, 8});
  model->eval();
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = model->forward(input);
  }
  ChannelSelection selection;
  selection.sparsity = 0.25;
  GraphModule pruned = prune_nodes(model, selection);
  const Graph& g = pruned->graph();
  EXPECT_EQ(g.nodes[g.find("conv1")].out, 4);  // convs are not neurons
  EXPECT_EQ(g.nodes[g.find("fc1")].out, 12);
  EXPECT_EQ(g.nodes[g.find("fc2")].out, 6);
  EXPECT_EQ(g.nodes[g.find("fc3")].out, 3);  // the outputs are fixed
  EXPECT_EQ(pruned->weight(g.find("fc2")).size(1), 12);
  EXPECT_EQ(pruned->weight(g.find("fc3")).size(1), 6);
  EXPECT_EQ(pruned->weight(g.find("fc1")).size(1), 4 * 4 * 4);
  torch::NoGradGuard no_grad;
  pruned->eval();
  EXPECT_TRUE(torch::allclose(pruned->forward(input), expected, 1e-5, 1e-6));
  // The surviving rows are the non-zero ones, in order.
  const auto kept = model->weight(model->graph().find("fc1")).index_select(
      0, torch::tensor({1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 14, 15}, torch::kInt64));
  EXPECT_TRUE(torch::equal(pruned->weight(g.find("fc1")), kept));
}

TEST(PruneNodes, OnlyGroupsProducedByALinearStayPrunable) {
  GraphModule model = conv_and_mlp(2);
  const ChannelAnalysis analysis = restrict_to_linear_groups(model->graph(), analyze_channel_groups(model->graph()));
  std::vector<std::string> prunable;
  for (const ChannelGroup& group : analysis.groups) {
    if (group.prunable) prunable.push_back(model->graph().nodes[group.producers.front()].name);
    if (model->graph().nodes[group.producers.front()].name == "conv1") {
      EXPECT_NE(group.fixed_reason.find("conv1"), std::string::npos);
    }
  }
  EXPECT_EQ(prunable, (std::vector<std::string>{"fc1", "fc2"}));
}

StageConfig prune_config(const Json& overrides) { return stage_config("prune", overrides); }

TEST(PruneNodes, TheStageShrinksHiddenLinearsAndRefusesModelsWithoutThem) {
  torch::manual_seed(3);
  DataSplits data;
  data.train = Dataset{torch::randint(0, 255, {32, 1, 8, 8}).to(torch::kUInt8),
                       torch::randint(0, 3, {32}, torch::kInt64)};
  data.class_names = {"a", "b", "c"};
  data.input_shape = Shape{1, 8, 8, false};
  data.mean = {0.5};
  data.std = {0.3};
  TrialConfig trial;
  std::vector<Metric> metrics;
  StageContext context{data, trial, GraphModule(nullptr), 0, 0, &metrics};
  GraphModule result = find_stage("prune")(
      conv_and_mlp(4), prune_config({{"method", "node"}, {"sparsity", 0.5}, {"batch_size", 16}}), context);
  EXPECT_EQ(result->graph().nodes[result->graph().find("fc1")].out, 8);
  EXPECT_EQ(result->graph().nodes[result->graph().find("fc2")].out, 4);
  EXPECT_EQ(result->graph().nodes[result->graph().find("conv1")].out, 4);

  metrics.clear();
  torch::manual_seed(5);
  GraphModule no_hidden(graph_from_layers(
      Json::parse(R"([{"op": "conv", "out": 4}, {"op": "flatten"}, {"op": "linear", "out": 3}])"),
      Shape{1, 8, 8, false}, 3));
  expect_error<InputError>(
      [&] { find_stage("prune")(no_hidden, prune_config({{"method", "node"}, {"sparsity", 0.5}}), context); },
      {"prune", "'node'", "hidden linear"});
  EXPECT_TRUE(metrics.empty());
}

}  // namespace
}  // namespace edgesweep
