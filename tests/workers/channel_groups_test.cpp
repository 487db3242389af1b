// Tests of the channel-group analysis on the zoo and hand-built graphs: residual streams as coupled groups,
// depthwise ties, concat offsets, flatten spans, fixed groups, and the shrunk graph's widths.
#include "edgesweep/workers/compress/channel_groups.h"

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/zoo.h"

namespace edgesweep {
namespace {

std::vector<std::string> names(const Graph& graph, const std::vector<int>& nodes) {
  std::vector<std::string> result;
  for (int n : nodes) result.push_back(graph.nodes[n].name);
  return result;
}

/// The group whose producers include the node called `name`.
const ChannelGroup& group_of(const Graph& graph, const ChannelAnalysis& analysis, const std::string& name) {
  const int node = graph.find(name);
  for (const ChannelGroup& g : analysis.groups) {
    if (std::find(g.producers.begin(), g.producers.end(), node) != g.producers.end()) return g;
  }
  throw Error("no group produced by " + name);
}

TEST(ChannelGroups, ResNet8HasOneCoupledGroupPerResidualStream) {
  const Graph graph = build_zoo_model("resnet8", Shape{1, 28, 28, false}, 10, 1.0);
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  // input, stem stream, layer1_0_a, layer2_0_a, layer2 stream, layer3_0_a, layer3 stream, fc.
  ASSERT_EQ(analysis.groups.size(), 8u);
  const ChannelGroup& stream1 = group_of(graph, analysis, "stem_conv");
  EXPECT_EQ(names(graph, stream1.producers), (std::vector<std::string>{"stem_conv", "layer1_0_b_conv"}));
  EXPECT_EQ(stream1.size(), 16);
  EXPECT_TRUE(stream1.prunable);
  EXPECT_FALSE(stream1.single_producer());
  for (const auto& unit : stream1.units) EXPECT_EQ(unit.size(), 2u);  // channel c of both producers
  const ChannelGroup& stream2 = group_of(graph, analysis, "layer2_0_down_conv");
  EXPECT_EQ(names(graph, stream2.producers), (std::vector<std::string>{"layer2_0_b_conv", "layer2_0_down_conv"}));
  EXPECT_EQ(stream2.size(), 32);
  EXPECT_EQ(group_of(graph, analysis, "layer3_0_b_conv").size(), 64);
  for (const char* inner : {"layer1_0_a_conv", "layer2_0_a_conv", "layer3_0_a_conv"}) {
    const ChannelGroup& g = group_of(graph, analysis, inner);
    EXPECT_TRUE(g.single_producer()) << inner;
  }
  const ChannelGroup& input = group_of(graph, analysis, "input");
  EXPECT_FALSE(input.prunable);
  EXPECT_NE(input.fixed_reason.find("input"), std::string::npos);
  const ChannelGroup& fc = group_of(graph, analysis, "fc");
  EXPECT_FALSE(fc.prunable);
  EXPECT_NE(fc.fixed_reason.find("output"), std::string::npos);
  // The add and the relu after it carry the stream's units.
  const int add = graph.find("layer1_0_add");
  EXPECT_EQ(analysis.node_units[add], analysis.node_units[graph.find("stem_conv")]);
  EXPECT_EQ(analysis.node_units[graph.find("layer1_0_relu")], analysis.node_units[add]);
}

TEST(ChannelGroups, ResNet20StreamTiesTheStemAndEveryBlockOfTheStage) {
  const Graph graph = build_zoo_model("resnet20", Shape{3, 32, 32, false}, 10, 1.0);
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  const ChannelGroup& stream1 = group_of(graph, analysis, "stem_conv");
  EXPECT_EQ(names(graph, stream1.producers),
            (std::vector<std::string>{"stem_conv", "layer1_0_b_conv", "layer1_1_b_conv", "layer1_2_b_conv"}));
  EXPECT_EQ(names(graph, group_of(graph, analysis, "layer2_2_b_conv").producers),
            (std::vector<std::string>{"layer2_0_b_conv", "layer2_0_down_conv", "layer2_1_b_conv", "layer2_2_b_conv"}));
  EXPECT_EQ(names(graph, group_of(graph, analysis, "layer3_1_b_conv").producers),
            (std::vector<std::string>{"layer3_0_b_conv", "layer3_0_down_conv", "layer3_1_b_conv", "layer3_2_b_conv"}));
  // 3 streams + 9 inner convs + input + fc.
  EXPECT_EQ(analysis.groups.size(), 14u);
  int single = 0;
  for (const ChannelGroup& g : analysis.groups) single += g.single_producer() ? 1 : 0;
  EXPECT_EQ(single, 9);
}

TEST(ChannelGroups, MobileNetV2DepthwiseConvsShareTheirInputsUnits) {
  const Graph graph = build_zoo_model("mobilenetv2", Shape{1, 28, 28, false}, 10, 1.0);
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  const int expand = graph.find("block2_expand_conv");
  const int dw = graph.find("block2_dw_conv");
  ASSERT_TRUE(is_depthwise(graph, graph.nodes[dw]));
  EXPECT_EQ(analysis.node_units[dw], analysis.node_units[expand]);
  EXPECT_EQ(analysis.node_units[graph.find("block2_dw_bn")], analysis.node_units[expand]);
  const ChannelGroup& hidden = group_of(graph, analysis, "block2_expand_conv");
  EXPECT_TRUE(hidden.single_producer());  // the depthwise conv ties, it does not produce
  EXPECT_EQ(hidden.size(), graph.nodes[expand].out);
  // block1 has no expansion: its depthwise conv carries the stem's channels.
  EXPECT_EQ(analysis.node_units[graph.find("block1_dw_conv")], analysis.node_units[graph.find("stem_conv")]);
  // block3 (24 -> 24, stride 1) adds its projection to block2's: one coupled group.
  EXPECT_EQ(names(graph, group_of(graph, analysis, "block3_project_conv").producers),
            (std::vector<std::string>{"block2_project_conv", "block3_project_conv"}));
}

Graph concat_graph() {
  return graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "a", "out": 4, "inputs": ["input"]},
    {"op": "relu", "name": "a_relu"},
    {"op": "conv", "name": "b", "out": 6, "inputs": ["input"]},
    {"op": "concat", "name": "cat", "inputs": ["a_relu", "b"]},
    {"op": "conv", "name": "c", "out": 5},
    {"op": "maxpool", "name": "pool"},
    {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc", "out": 3}
  ])"),
                           Shape{2, 8, 8, false}, 3);
}

TEST(ChannelGroups, ConcatPlacesEachInputAtItsOffset) {
  const Graph graph = concat_graph();
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  const auto& a = analysis.node_units[graph.find("a")];
  const auto& b = analysis.node_units[graph.find("b")];
  std::vector<int> expected = a;
  expected.insert(expected.end(), b.begin(), b.end());
  EXPECT_EQ(analysis.node_units[graph.find("cat")], expected);
  EXPECT_TRUE(group_of(graph, analysis, "a").single_producer());
  EXPECT_TRUE(group_of(graph, analysis, "b").single_producer());
  EXPECT_EQ(group_of(graph, analysis, "b").size(), 6);

  // Flatten spreads each of c's 5 channels over 4 x 4 features.
  const int flat = graph.find("flat");
  EXPECT_EQ(analysis.span[flat], 16);
  EXPECT_EQ(analysis.unit_of(flat, 3 * 16 + 7), analysis.node_units[graph.find("c")][3]);

  // Remove a's channel 1, b's channels 0 and 5, and c's channel 2.
  std::vector<bool> removed(analysis.unit_group.size(), false);
  removed[a[1]] = removed[b[0]] = removed[b[5]] = true;
  removed[analysis.node_units[graph.find("c")][2]] = true;
  const auto positions = surviving_positions(graph, analysis, removed);
  EXPECT_EQ(positions[graph.find("cat")], (std::vector<int64_t>{0, 2, 3, 5, 6, 7, 8}));
  EXPECT_EQ(positions[flat].size(), 4u * 16u);
  EXPECT_EQ(positions[flat][2 * 16], 3 * 16);  // features of channel 2 are gone
  const Graph smaller = shrink_graph(graph, analysis, removed);
  EXPECT_EQ(smaller.nodes[graph.find("a")].out, 3);
  EXPECT_EQ(smaller.nodes[graph.find("b")].out, 4);
  EXPECT_EQ(smaller.nodes[graph.find("cat")].shape.channels, 7);
  EXPECT_EQ(smaller.nodes[graph.find("c")].out, 4);
  EXPECT_EQ(smaller.nodes[graph.find("fc")].out, 3);
  // a: 3 x 2 x 3x3 on 8x8, b: 4 x 2 x 3x3, c: 4 x 7 x 3x3, fc: 3 x 64 features.
  EXPECT_EQ(count_macs(smaller), 3 * 2 * 9 * 64 + 4 * 2 * 9 * 64 + 4 * 7 * 9 * 64 + 3 * 64);
}

TEST(ChannelGroups, GroupedConvAndResidualOnTheInputAreFixed) {
  const Graph graph = graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "a", "out": 4},
    {"op": "conv", "name": "grouped", "out": 8, "groups": 2},
    {"op": "conv", "name": "b", "out": 3, "inputs": ["input"]},
    {"op": "add", "name": "sum", "inputs": ["b", "input"]},
    {"op": "adaptive_avgpool", "name": "pool", "inputs": ["grouped"]},
    {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc", "out": 2}
  ])"),
                                        Shape{3, 8, 8, false}, 2);
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  const ChannelGroup& a = group_of(graph, analysis, "a");
  EXPECT_FALSE(a.prunable);
  EXPECT_NE(a.fixed_reason.find("grouped conv 'grouped'"), std::string::npos) << a.fixed_reason;
  EXPECT_FALSE(group_of(graph, analysis, "grouped").prunable);
  const ChannelGroup& b = group_of(graph, analysis, "b");  // joined to the input by the add
  EXPECT_FALSE(b.prunable);
  EXPECT_NE(b.fixed_reason.find("input"), std::string::npos);
}

TEST(ChannelGroups, ShrinkingADepthwiseChainAdjustsGroups) {
  const Graph graph = graph_from_layers(Json::parse(R"([
    {"op": "conv", "name": "expand", "out": 8, "kernel": 1},
    {"op": "batchnorm", "name": "bn"},
    {"op": "conv", "name": "dw", "out": 8, "groups": 8},
    {"op": "conv", "name": "project", "out": 4, "kernel": 1},
    {"op": "adaptive_avgpool", "name": "pool"},
    {"op": "flatten", "name": "flat"},
    {"op": "linear", "name": "fc", "out": 2}
  ])"),
                                        Shape{1, 8, 8, false}, 2);
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  std::vector<bool> removed(analysis.unit_group.size(), false);
  for (int c : {0, 3, 4}) removed[analysis.node_units[graph.find("expand")][c]] = true;
  const Graph smaller = shrink_graph(graph, analysis, removed);
  const Node& dw = smaller.nodes[graph.find("dw")];
  EXPECT_EQ(dw.out, 5);
  EXPECT_EQ(dw.groups, 5);
  EXPECT_EQ(smaller.nodes[graph.find("bn")].shape.channels, 5);
  EXPECT_EQ(smaller.nodes[graph.find("project")].out, 4);
  EXPECT_EQ(node_params(smaller, smaller.nodes[graph.find("project")]), 4 * 5 + 4);
}

}  // namespace
}  // namespace edgesweep
