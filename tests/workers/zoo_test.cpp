// Tests of the model zoo: parameter and MAC counts against hand-computed values (conv without bias, batch norm
// 2 per channel, linear with bias), shapes for 1x28x28 and 3x32x32 inputs, the width multiplier and the errors.
#include "edgesweep/workers/zoo.h"

#include <string>

#include <gtest/gtest.h>

#include "edgesweep/common/error.h"
#include "expect_error.h"
#include "shape_printer.h"

namespace edgesweep {
namespace {

const Shape kCifar{3, 32, 32, false};
const Shape kFashion{1, 28, 28, false};

const Node& node(const Graph& graph, const std::string& name) {
  const int index = graph.find(name);
  EXPECT_GE(index, 0) << "no node called " << name;
  return graph.nodes.at(static_cast<size_t>(index));
}

int count_ops(const Graph& graph, OpKind op) {
  int n = 0;
  for (const Node& node : graph.nodes) n += node.op == op ? 1 : 0;
  return n;
}

TEST(Zoo, NamesListEveryArchitecture) {
  EXPECT_EQ(zoo_names(), (std::vector<std::string>{"small-cnn", "vgg", "resnet8", "resnet20", "mobilenetv2"}));
}

// ResNet-20 for 3x32x32 and 10 classes, 1x1 projection shortcuts:
//   stem     conv 3->16 (432) + bn (32)                                       =     464
//   stage 1  3 blocks x 2 x (conv 16->16 2304 + bn 32)                         =  14,016
//   stage 2  block 0: conv 16->32 4608 + bn 64, conv 32->32 9216 + bn 64,
//            1x1 down 16->32 512 + bn 64                                       =  14,528
//            blocks 1-2: 2 x 2 x (9216 + 64)                                   =  37,120
//   stage 3  block 0: conv 32->64 18432 + 128, conv 64->64 36864 + 128,
//            1x1 down 32->64 2048 + 128                                        =  57,728
//            blocks 1-2: 2 x 2 x (36864 + 128)                                 = 147,968
//   fc       64 * 10 + 10                                                      =     650
//   total                                                                      = 272,474 (the known ~0.27 M)
// MACs: stem 16*32*32*27 = 442,368; stage 1 6 x 16*1024*144 = 14,155,776;
//   stage 2: 32*256*144 + 32*256*16 + 5 x 32*256*288 = 13,107,200; stage 3 likewise 64*64*{288, 32, 5 x 576}
//   = 13,107,200; fc 640: total 40,813,184.
TEST(Zoo, ResNet20ForCifarHasTheKnownCounts) {
  const Graph g = build_zoo_model("resnet20", kCifar, 10, 1.0);
  EXPECT_EQ(count_params(g), 272474);
  EXPECT_EQ(count_macs(g), 40813184);
  EXPECT_EQ(node(g, "stem_conv").shape, (Shape{16, 32, 32, false}));
  EXPECT_EQ(node(g, "layer2_0_add").shape, (Shape{32, 16, 16, false}));
  EXPECT_EQ(node(g, "layer3_2_relu").shape, (Shape{64, 8, 8, false}));
  EXPECT_EQ(g.output().shape, (Shape{10, 1, 1, true}));
  EXPECT_EQ(count_ops(g, OpKind::Add), 9);
  EXPECT_EQ(count_ops(g, OpKind::Conv), 1 + 9 * 2 + 2);  // stem, two per block, two projections
  EXPECT_EQ(g.find("layer1_0_down_conv"), -1);           // stage 1 keeps width and size: identity shortcut
  EXPECT_EQ(node(g, "layer2_0_down_conv").kernel, 1);
  EXPECT_EQ(node(g, "layer2_0_down_conv").stride, 2);
}

// For 1x28x28 the stem loses 2 x 16 x 9 = 288 weights: 272,474 - 288 = 272,186; maps are 28 -> 14 -> 7.
TEST(Zoo, ResNet20ForFashionMnist) {
  const Graph g = build_zoo_model("resnet20", kFashion, 10, 1.0);
  EXPECT_EQ(count_params(g), 272186);
  EXPECT_EQ(node(g, "layer1_2_relu").shape, (Shape{16, 28, 28, false}));
  EXPECT_EQ(node(g, "layer2_0_relu").shape, (Shape{32, 14, 14, false}));
  EXPECT_EQ(node(g, "layer3_2_relu").shape, (Shape{64, 7, 7, false}));
  EXPECT_EQ(g.output().shape, (Shape{10, 1, 1, true}));
}

// ResNet-8 (one block per stage): stem 464 (or 176 for one channel: 144 + 32), stage 1 4,672, stage 2 14,528,
// stage 3 57,728, fc 650: 78,042 for 3 channels, 77,754 for 1.
TEST(Zoo, ResNet8Counts) {
  const Graph cifar = build_zoo_model("resnet8", kCifar, 10, 1.0);
  EXPECT_EQ(count_params(cifar), 78042);
  const Graph fashion = build_zoo_model("resnet8", kFashion, 10, 1.0);
  EXPECT_EQ(count_params(fashion), 77754);
  EXPECT_EQ(count_ops(fashion, OpKind::Add), 3);
  EXPECT_EQ(node(fashion, "layer3_0_relu").shape, (Shape{64, 7, 7, false}));
  EXPECT_EQ(fashion.output().shape, (Shape{10, 1, 1, true}));
}

// Small CNN for 1x28x28: conv 1->32 288 + bn 64, pool -> 14, conv 32->64 18,432 + bn 128, pool -> 7,
// fc 3136->128 401,536, fc 128->10 1,290: 421,738.
// MACs: 32*28*28*9 = 225,792; 64*14*14*288 = 3,612,672; 401,408; 1,280: 4,241,152.
TEST(Zoo, SmallCnnCounts) {
  const Graph g = build_zoo_model("small-cnn", kFashion, 10, 1.0);
  EXPECT_EQ(count_params(g), 421738);
  EXPECT_EQ(count_macs(g), 4241152);
  EXPECT_EQ(node(g, "flatten").shape, (Shape{3136, 1, 1, true}));
  EXPECT_DOUBLE_EQ(node(g, "dropout").p, 0.25);
}

// VGG for 1x28x28: convs 1->64 (576 + 128), 64->128 (73,728 + 256), 128->256 (294,912 + 512),
// 256->256 (589,824 + 512), 256->512 (1,179,648 + 1,024), 512->512 (2,359,296 + 1,024); fc 5,130: 4,506,570.
TEST(Zoo, VggShapesEndAtTheClassCount) {
  const Graph g = build_zoo_model("vgg", kFashion, 10, 1.0);
  EXPECT_EQ(count_params(g), 4506570);
  EXPECT_EQ(node(g, "pool4").shape, (Shape{512, 1, 1, false}));  // 28 -> 14 -> 7 -> 3 -> 1
  EXPECT_EQ(g.output().shape, (Shape{10, 1, 1, true}));
  // The smallest input keeps three pools (8 -> 4 -> 2 -> 1) and skips the fourth.
  const Graph small = build_zoo_model("vgg", Shape{3, 8, 8, false}, 7, 1.0);
  EXPECT_EQ(small.find("pool4"), -1);
  EXPECT_EQ(node(small, "pool3").shape, (Shape{256, 1, 1, false}));
  EXPECT_EQ(small.output().shape, (Shape{7, 1, 1, true}));
}

TEST(Zoo, MobileNetV2ShapesEndAtTheClassCount) {
  for (const Shape& input : {kFashion, kCifar}) {
    for (int64_t classes : {10, 4}) {
      const Graph g = build_zoo_model("mobilenetv2", input, classes, 1.0);
      EXPECT_EQ(g.output().shape, (Shape{classes, 1, 1, true})) << input.to_string();
      EXPECT_EQ(node(g, "head_conv").shape.channels, 320);
      EXPECT_EQ(node(g, "head_conv").shape.height, input.height / 4);  // two stride-2 stages
    }
  }
  const Graph g = build_zoo_model("mobilenetv2", kFashion, 10, 1.0);
  // 11 inverted residual blocks, each with one depthwise conv; a residual join wherever stride 1 keeps the width:
  // one in the 24-channel stage, two each in the 32 and 64 stages, one in the 96 stage.
  int depthwise = 0;
  for (const Node& n : g.nodes) {
    if (n.op == OpKind::Conv && n.groups > 1) {
      ++depthwise;
      EXPECT_EQ(n.groups, input_channels(g, n)) << n.name;
      EXPECT_EQ(n.groups, n.out) << n.name;
    }
  }
  EXPECT_EQ(depthwise, 11);
  EXPECT_EQ(count_ops(g, OpKind::Add), 6);
  EXPECT_EQ(node(g, "block1_dw_conv").groups, 32);  // expansion 1: depthwise on the 32 stem channels
  EXPECT_EQ(node(g, "block2_dw_conv").groups, 96);  // 16 * 6
  EXPECT_EQ(count_ops(g, OpKind::Relu6), 1 + 10 * 2 + 1 * 1 + 1);  // stem, expand+dw per block (dw only in 1), head
}

// ResNet-20 at width 0.5 (8/16/32 channels) for 3x32x32: stem 216 + 16; stage 1 3 x 2 x (576 + 16) = 3,552;
// stage 2 (1,152 + 32) + (2,304 + 32) + (128 + 32) + 2 x 2 x (2,304 + 32) = 13,024; stage 3 (4,608 + 64) +
// (9,216 + 64) + (512 + 64) + 2 x 2 x (9,216 + 64) = 51,648; fc 32 * 10 + 10 = 330: 68,786.
TEST(Zoo, WidthMultiplierScalesChannels) {
  const Graph half = build_zoo_model("resnet20", kCifar, 10, 0.5);
  EXPECT_EQ(count_params(half), 68786);
  EXPECT_EQ(node(half, "stem_conv").out, 8);
  EXPECT_EQ(node(half, "layer3_2_b_conv").out, 32);
  const Graph full = build_zoo_model("small-cnn", kFashion, 10, 1.0);
  const Graph wide = build_zoo_model("small-cnn", kFashion, 10, 1.5);
  EXPECT_EQ(node(wide, "conv1_conv").out, 48);
  EXPECT_EQ(node(wide, "conv2_conv").out, 96);
  EXPECT_EQ(node(wide, "fc1").out, 192);
  EXPECT_EQ(node(wide, "fc2").out, 10);  // the class count never scales
  EXPECT_GT(count_params(wide), count_params(full));
  const Graph tiny = build_zoo_model("mobilenetv2", kFashion, 10, 0.01);  // channels never drop below 1
  for (const Node& n : tiny.nodes) {
    if (n.op == OpKind::Conv) {
      EXPECT_GE(n.out, 1) << n.name;
    }
  }
  EXPECT_EQ(tiny.output().shape.channels, 10);
}

TEST(Zoo, ErrorsNameTheArchitecture) {
  expect_error<InputError>([] { build_zoo_model("resnet50", kCifar, 10, 1.0); }, {"'resnet50'"});
  expect_error<InputError>([] { build_zoo_model("vgg", Shape{3, 7, 7, false}, 10, 1.0); },
                           {"'vgg'", "8x8", "[3x7x7]"});
}

TEST(Zoo, BuildModelTakesZooOrInlineLayers) {
  ModelConfig config;
  config.arch = "resnet8";
  EXPECT_EQ(count_params(build_model(config, kFashion, 10)), 77754);
  config.arch = "custom";
  config.layers = Json::parse(R"([{"op": "flatten"}, {"op": "linear", "out": 10}])");
  const Graph custom = build_model(config, kFashion, 10);
  EXPECT_EQ(count_params(custom), 784 * 10 + 10);
  EXPECT_EQ(custom.num_classes, 10);
}

}  // namespace
}  // namespace edgesweep
