// Tests of the layer-graph IR: shape inference, parameter and MAC counts against hand-computed values, the
// errors for graphs that do not fit, the JSON form and graphs built from inline layers.
#include "edgesweep/workers/graph.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "edgesweep/common/error.h"
#include "expect_error.h"
#include "shape_printer.h"

namespace edgesweep {
namespace {

/// Appends a node reading `inputs` (names of earlier nodes) and returns it for setting attributes.
Node& append(Graph& graph, const std::string& name, OpKind op, const std::vector<std::string>& inputs) {
  Node node;
  node.name = name;
  node.op = op;
  for (const std::string& input : inputs) {
    const int index = graph.find(input);
    EXPECT_GE(index, 0) << "no node called " << input;
    node.inputs.push_back(index);
  }
  graph.nodes.push_back(node);
  return graph.nodes.back();
}

Graph with_input(const Shape& shape, int64_t num_classes) {
  Graph graph;
  graph.num_classes = num_classes;
  Node input;
  input.name = "input";
  input.op = OpKind::Input;
  input.shape = shape;
  graph.nodes.push_back(input);
  return graph;
}

/// A graph touching every op, for an input of 3x16x16 and 10 classes:
///   stem      conv 3->8, k3 s2 p1, bias   -> 8x8x8    ((16 + 2 - 3) / 2 + 1 = 8)
///   stem_bn   batchnorm                   -> 8x8x8
///   stem_relu relu                        -> 8x8x8
///   dw        conv 8->8, k3 s1 p1, g8     -> 8x8x8    (depthwise, no bias)
///   dw_relu6  relu6                       -> 8x8x8
///   pw        conv 8->16, k1, no bias     -> 16x8x8
///   shortcut  conv 8->16, k1, bias        -> 16x8x8   (reads stem_relu)
///   join      add(pw, shortcut)           -> 16x8x8
///   cat       concat(join, stem_relu)     -> 24x8x8
///   maxpool   k3 s2 p1                    -> 24x4x4   ((8 + 2 - 3) / 2 + 1 = 4, floor)
///   avgpool   k2 s1 p0                    -> 24x3x3   ((4 - 2) / 1 + 1 = 3)
///   gap       adaptive_avgpool 2          -> 24x2x2
///   flatten                               -> [96]
///   dropout                               -> [96]
///   fc        linear 96->10, bias         -> [10]
Graph every_op_graph() {
  Graph g = with_input(Shape{3, 16, 16, false}, 10);
  Node& stem = append(g, "stem", OpKind::Conv, {"input"});
  stem.out = 8, stem.kernel = 3, stem.stride = 2, stem.padding = 1, stem.bias = true;
  append(g, "stem_bn", OpKind::BatchNorm, {"stem"});
  append(g, "stem_relu", OpKind::Relu, {"stem_bn"});
  Node& dw = append(g, "dw", OpKind::Conv, {"stem_relu"});
  dw.out = 8, dw.kernel = 3, dw.stride = 1, dw.padding = 1, dw.groups = 8, dw.bias = false;
  append(g, "dw_relu6", OpKind::Relu6, {"dw"});
  Node& pw = append(g, "pw", OpKind::Conv, {"dw_relu6"});
  pw.out = 16, pw.kernel = 1, pw.bias = false;
  Node& shortcut = append(g, "shortcut", OpKind::Conv, {"stem_relu"});
  shortcut.out = 16, shortcut.kernel = 1, shortcut.bias = true;
  append(g, "join", OpKind::Add, {"pw", "shortcut"});
  append(g, "cat", OpKind::Concat, {"join", "stem_relu"});
  Node& maxpool = append(g, "maxpool", OpKind::MaxPool, {"cat"});
  maxpool.kernel = 3, maxpool.stride = 2, maxpool.padding = 1;
  Node& avgpool = append(g, "avgpool", OpKind::AvgPool, {"maxpool"});
  avgpool.kernel = 2, avgpool.stride = 1, avgpool.padding = 0;
  Node& gap = append(g, "gap", OpKind::AdaptiveAvgPool, {"avgpool"});
  gap.output_size = 2;
  append(g, "flatten", OpKind::Flatten, {"gap"});
  Node& dropout = append(g, "dropout", OpKind::Dropout, {"flatten"});
  dropout.p = 0.25;
  Node& fc = append(g, "fc", OpKind::Linear, {"dropout"});
  fc.out = 10, fc.bias = true;
  return g;
}

const Node& node(const Graph& graph, const std::string& name) {
  const int index = graph.find(name);
  EXPECT_GE(index, 0) << "no node called " << name;
  return graph.nodes.at(static_cast<size_t>(index));
}

template <typename Statement>
void expect_input_error(Statement statement, const std::vector<std::string>& fragments) {
  expect_error<InputError>(statement, fragments);
}

TEST(GraphShapes, EveryOpGetsTheHandComputedShape) {
  Graph g = every_op_graph();
  infer_shapes(g);
  EXPECT_EQ(node(g, "stem").shape, (Shape{8, 8, 8, false}));
  EXPECT_EQ(node(g, "stem_bn").shape, (Shape{8, 8, 8, false}));
  EXPECT_EQ(node(g, "dw").shape, (Shape{8, 8, 8, false}));
  EXPECT_EQ(node(g, "pw").shape, (Shape{16, 8, 8, false}));
  EXPECT_EQ(node(g, "shortcut").shape, (Shape{16, 8, 8, false}));
  EXPECT_EQ(node(g, "join").shape, (Shape{16, 8, 8, false}));
  EXPECT_EQ(node(g, "cat").shape, (Shape{24, 8, 8, false}));
  EXPECT_EQ(node(g, "maxpool").shape, (Shape{24, 4, 4, false}));
  EXPECT_EQ(node(g, "avgpool").shape, (Shape{24, 3, 3, false}));
  EXPECT_EQ(node(g, "gap").shape, (Shape{24, 2, 2, false}));
  EXPECT_EQ(node(g, "flatten").shape, (Shape{96, 1, 1, true}));
  EXPECT_EQ(node(g, "dropout").shape, (Shape{96, 1, 1, true}));
  EXPECT_EQ(node(g, "fc").shape, (Shape{10, 1, 1, true}));
  EXPECT_EQ(g.output().shape.to_string(), "[10]");
  EXPECT_EQ(node(g, "cat").shape.to_string(), "[24x8x8]");
  EXPECT_EQ(input_channels(g, node(g, "cat")), 16);
  EXPECT_EQ(g.consumers(g.find("stem_relu")), (std::vector<int>{g.find("dw"), g.find("shortcut"), g.find("cat")}));
}

TEST(GraphShapes, ParamsAndMacsMatchHandCounts) {
  Graph g = every_op_graph();
  infer_shapes(g);
  // Parameters: weights out * in/groups * k * k, plus the bias; batch norm 2 per channel; linear out * in + out.
  EXPECT_EQ(node_params(g, node(g, "stem")), 8 * 3 * 3 * 3 + 8);  // 224
  EXPECT_EQ(node_params(g, node(g, "stem_bn")), 2 * 8);           // 16
  EXPECT_EQ(node_params(g, node(g, "dw")), 8 * 1 * 3 * 3);        // 72
  EXPECT_EQ(node_params(g, node(g, "pw")), 16 * 8);               // 128
  EXPECT_EQ(node_params(g, node(g, "shortcut")), 16 * 8 + 16);    // 144
  EXPECT_EQ(node_params(g, node(g, "fc")), 96 * 10 + 10);         // 970
  for (const char* free : {"stem_relu", "dw_relu6", "join", "cat", "maxpool", "avgpool", "gap", "flatten", "dropout"}) {
    EXPECT_EQ(node_params(g, node(g, free)), 0) << free;
    EXPECT_EQ(node_macs(g, node(g, free)), 0) << free;
  }
  EXPECT_EQ(count_params(g), 224 + 16 + 72 + 128 + 144 + 970);  // 1554

  // MACs per sample: output elements * (in/groups * k * k) for conv, in * out for linear.
  EXPECT_EQ(node_macs(g, node(g, "stem")), 8 * 8 * 8 * 3 * 3 * 3);  // 13824
  EXPECT_EQ(node_macs(g, node(g, "dw")), 8 * 8 * 8 * 1 * 3 * 3);    // 4608
  EXPECT_EQ(node_macs(g, node(g, "pw")), 16 * 8 * 8 * 8);           // 8192
  EXPECT_EQ(node_macs(g, node(g, "shortcut")), 16 * 8 * 8 * 8);     // 8192
  EXPECT_EQ(node_macs(g, node(g, "fc")), 96 * 10);                  // 960
  EXPECT_EQ(count_macs(g), 13824 + 4608 + 8192 + 8192 + 960);       // 35776
}

TEST(GraphShapes, BatchNormAfterFlattenCountsFeatures) {
  Graph g = with_input(Shape{2, 3, 3, false}, 4);
  append(g, "flatten", OpKind::Flatten, {"input"});
  append(g, "bn", OpKind::BatchNorm, {"flatten"});
  append(g, "fc", OpKind::Linear, {"bn"}).out = 4;
  infer_shapes(g);
  EXPECT_EQ(node(g, "bn").shape, (Shape{18, 1, 1, true}));
  EXPECT_EQ(count_params(g), 2 * 18 + 18 * 4 + 4);
}

TEST(GraphErrors, AddOfDifferentShapesNamesTheLayerAndShapes) {
  Graph g = with_input(Shape{3, 8, 8, false}, 10);
  Node& conv = append(g, "conv", OpKind::Conv, {"input"});
  conv.out = 4, conv.kernel = 3, conv.padding = 1;
  append(g, "join", OpKind::Add, {"conv", "input"});
  append(g, "flatten", OpKind::Flatten, {"join"});
  append(g, "fc", OpKind::Linear, {"flatten"}).out = 10;
  expect_input_error([&] { infer_shapes(g); }, {"'join'", "[3x8x8]", "[4x8x8]"});
}

TEST(GraphErrors, LinearOnSpatialInputNamesTheLayer) {
  Graph g = with_input(Shape{3, 8, 8, false}, 10);
  append(g, "classifier", OpKind::Linear, {"input"}).out = 10;
  expect_input_error([&] { infer_shapes(g); }, {"'classifier'", "flat", "[3x8x8]"});
}

TEST(GraphErrors, GroupsNotDividingChannelsNamesTheLayer) {
  Graph g = with_input(Shape{3, 8, 8, false}, 10);
  Node& conv = append(g, "grouped", OpKind::Conv, {"input"});
  conv.out = 4, conv.groups = 2;
  append(g, "flatten", OpKind::Flatten, {"grouped"});
  append(g, "fc", OpKind::Linear, {"flatten"}).out = 10;
  expect_input_error([&] { infer_shapes(g); }, {"'grouped'", "groups = 2", "3"});
}

TEST(GraphErrors, ConcatOfDifferentSpatialSizesNamesTheLayer) {
  Graph g = with_input(Shape{3, 8, 8, false}, 10);
  Node& pool = append(g, "pool", OpKind::MaxPool, {"input"});
  pool.kernel = 2, pool.stride = 2;
  append(g, "cat", OpKind::Concat, {"input", "pool"});
  append(g, "flatten", OpKind::Flatten, {"cat"});
  append(g, "fc", OpKind::Linear, {"flatten"}).out = 10;
  expect_input_error([&] { infer_shapes(g); }, {"'cat'", "'pool'", "[3x4x4]"});
}

TEST(GraphErrors, OutputThatIsNotTheClassCountNamesTheLayer) {
  Graph g = with_input(Shape{3, 8, 8, false}, 10);
  append(g, "flatten", OpKind::Flatten, {"input"});
  append(g, "head", OpKind::Linear, {"flatten"}).out = 7;
  expect_input_error([&] { infer_shapes(g); }, {"'head'", "7", "10 classes"});
  g.nodes.pop_back();
  expect_input_error([&] { infer_shapes(g); }, {"'flatten'", "192"});  // 3*8*8 features, but 10 classes
}

TEST(GraphErrors, KernelLargerThanThePaddedInputNamesTheLayer) {
  Graph g = with_input(Shape{3, 4, 4, false}, 10);
  Node& pool = append(g, "too_big", OpKind::MaxPool, {"input"});
  pool.kernel = 6, pool.stride = 6;
  append(g, "flatten", OpKind::Flatten, {"too_big"});
  append(g, "fc", OpKind::Linear, {"flatten"}).out = 10;
  // (4 - 6) / 6 + 1 would truncate to 1; torch refuses a kernel larger than the padded input, and so does the IR.
  expect_input_error([&] { infer_shapes(g); }, {"'too_big'", "(maxpool)", "empty output", "[3x4x4]"});
  g.nodes[1].op = OpKind::Conv;
  g.nodes[1].out = 2;
  g.nodes[1].kernel = 5;
  g.nodes[1].stride = 3;
  expect_input_error([&] { infer_shapes(g); }, {"'too_big'", "(conv)", "empty output"});
  g.nodes[1].padding = 1;  // 4 + 2 - 5 = 1 >= 0: one output pixel
  infer_shapes(g);
  EXPECT_EQ(g.nodes[1].shape, (Shape{2, 1, 1, false}));
}

TEST(GraphErrors, DuplicateAndInvalidNames) {
  Graph g = with_input(Shape{3, 8, 8, false}, 10);
  append(g, "flatten", OpKind::Flatten, {"input"});
  append(g, "flatten", OpKind::Linear, {"flatten"}).out = 10;
  expect_input_error([&] { infer_shapes(g); }, {"two layers are called 'flatten'"});
  g.nodes.back().name = "fc-1";
  expect_input_error([&] { infer_shapes(g); }, {"'fc-1'"});
}

TEST(GraphErrors, UnknownOpName) {
  EXPECT_EQ(op_from_name("adaptive_avgpool"), OpKind::AdaptiveAvgPool);
  EXPECT_STREQ(op_name(OpKind::Relu6), "relu6");
  expect_input_error([] { op_from_name("conv3d"); }, {"'conv3d'"});
}

TEST(GraphJson, RoundTripIsIdentical) {
  Graph g = every_op_graph();
  infer_shapes(g);
  const Json first = g;
  Graph back;
  from_json(first, back);
  const Json second = back;
  EXPECT_EQ(first, second);
  EXPECT_EQ(Json::parse(first.dump()), second);
  ASSERT_EQ(back.nodes.size(), g.nodes.size());
  EXPECT_EQ(back.num_classes, 10);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& a = g.nodes[i];
    const Node& b = back.nodes[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.op, b.op);
    EXPECT_EQ(a.inputs, b.inputs) << a.name;
    EXPECT_EQ(a.shape, b.shape) << a.name;
    EXPECT_EQ(node_params(g, a), node_params(back, b)) << a.name;
    if (a.op == OpKind::Conv) {
      EXPECT_EQ(a.out, b.out);
      EXPECT_EQ(a.kernel, b.kernel);
      EXPECT_EQ(a.stride, b.stride);
      EXPECT_EQ(a.padding, b.padding);
      EXPECT_EQ(a.groups, b.groups);
      EXPECT_EQ(a.bias, b.bias);
    }
  }
  EXPECT_EQ(node(back, "dropout").p, 0.25);
  EXPECT_EQ(node(back, "gap").output_size, 2);
  EXPECT_EQ(count_macs(back), count_macs(g));
}

TEST(GraphJson, UnknownInputIsAnError) {
  Json j = every_op_graph();
  j["nodes"][4]["inputs"] = Json::array({"nowhere"});
  Graph g;
  expect_input_error([&] { from_json(j, g); }, {"'dw'", "'nowhere'"});
}

TEST(GraphFromLayers, DefaultsFillKernelStrideAndPadding) {
  const Json layers = Json::parse(R"([
    {"op": "conv", "out": 8},
    {"op": "maxpool", "kernel": 3},
    {"op": "conv", "out": 4, "kernel": 5, "stride": 2},
    {"op": "avgpool"},
    {"op": "flatten"},
    {"op": "linear", "out": 10}
  ])");
  const Graph g = graph_from_layers(layers, Shape{1, 28, 28, false}, 10);
  ASSERT_EQ(g.nodes.size(), 7u);
  const Node& conv1 = node(g, "conv1");  // names: op and 1-based position
  EXPECT_EQ(conv1.kernel, 3);   // kernel 0 -> 3
  EXPECT_EQ(conv1.stride, 1);
  EXPECT_EQ(conv1.padding, 1);  // kernel / 2
  EXPECT_EQ(conv1.shape, (Shape{8, 28, 28, false}));
  const Node& pool = node(g, "maxpool2");
  EXPECT_EQ(pool.stride, 3);  // stride 0 -> kernel
  EXPECT_EQ(pool.padding, 0);
  EXPECT_EQ(pool.shape, (Shape{8, 9, 9, false}));  // (28 - 3) / 3 + 1
  const Node& conv3 = node(g, "conv3");
  EXPECT_EQ(conv3.padding, 2);
  EXPECT_EQ(conv3.shape, (Shape{4, 5, 5, false}));  // (9 + 4 - 5) / 2 + 1
  const Node& avg = node(g, "avgpool4");
  EXPECT_EQ(avg.kernel, 2);  // pools default to 2x2
  EXPECT_EQ(avg.stride, 2);
  EXPECT_EQ(avg.shape, (Shape{4, 2, 2, false}));
  EXPECT_EQ(node(g, "flatten5").shape, (Shape{16, 1, 1, true}));
  EXPECT_EQ(node(g, "linear6").shape, (Shape{10, 1, 1, true}));
  EXPECT_EQ(count_params(g), (8 * 9 + 8) + (4 * 8 * 25 + 4) + (16 * 10 + 10));
}

TEST(GraphFromLayers, NamedInputsMakeAResidualJoin) {
  const Json layers = Json::parse(R"([
    {"op": "conv", "out": 4, "name": "stem"},
    {"op": "relu", "name": "stem_relu"},
    {"op": "conv", "out": 4, "bias": false},
    {"op": "batchnorm"},
    {"op": "add", "name": "join", "inputs": ["batchnorm4", "stem_relu"]},
    {"op": "adaptive_avgpool"},
    {"op": "flatten"},
    {"op": "dropout", "p": 0.1},
    {"op": "linear", "out": 3}
  ])");
  const Graph g = graph_from_layers(layers, Shape{2, 6, 6, false}, 3);
  const Node& join = node(g, "join");
  EXPECT_EQ(join.inputs, (std::vector<int>{g.find("batchnorm4"), g.find("stem_relu")}));
  EXPECT_EQ(join.shape, (Shape{4, 6, 6, false}));
  EXPECT_EQ(node(g, "conv3").inputs, (std::vector<int>{g.find("stem_relu")}));
  EXPECT_EQ(node(g, "adaptive_avgpool6").shape, (Shape{4, 1, 1, false}));
  EXPECT_FALSE(node(g, "conv3").bias);
  EXPECT_DOUBLE_EQ(node(g, "dropout8").p, 0.1);
  EXPECT_EQ(g.consumers(g.find("stem_relu")), (std::vector<int>{g.find("conv3"), g.find("join")}));
}

TEST(GraphFromLayers, UnknownInputNamesTheLayerAndTheInput) {
  const Json layers = Json::parse(R"([
    {"op": "conv", "out": 4},
    {"op": "add", "inputs": ["conv1", "conv9"]},
    {"op": "flatten"},
    {"op": "linear", "out": 10}
  ])");
  expect_input_error([&] { graph_from_layers(layers, Shape{1, 8, 8, false}, 10); }, {"'add2'", "'conv9'"});
}

TEST(GraphFromLayers, LaterLayerIsNotAnInput) {
  const Json layers = Json::parse(R"([
    {"op": "conv", "out": 4, "inputs": ["fc"]},
    {"op": "flatten"},
    {"op": "linear", "out": 10, "name": "fc"}
  ])");
  expect_input_error([&] { graph_from_layers(layers, Shape{1, 8, 8, false}, 10); }, {"'conv1'", "'fc'"});
}

TEST(GraphFromLayers, EmptyLayerListIsAnError) {
  expect_input_error([] { graph_from_layers(Json::array(), Shape{1, 8, 8, false}, 10); }, {"layers"});
}

}  // namespace
}  // namespace edgesweep
