// Tests of GraphModule, op by op: a one- or two-layer graph against the matching torch::nn layer holding the same
// weights, on seeded random input. Both sides call the same ATen kernels, so the tolerance is zero: outputs (and
// batch-norm running statistics) must be equal element for element (torch::equal).
#include "edgesweep/workers/graph_module.h"

#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "shape_printer.h"

namespace edgesweep {
namespace {

class GraphModuleOps : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(20261123); }
};

/// A graph of an input of `input` shape and the inline `layers`, for any output width.
GraphModule make_module(const Shape& input, const char* layers) {
  return GraphModule(graph_from_layers(Json::parse(layers), input, /*num_classes=*/0));
}

/// Copies `source` into a module tensor of the same shape.
void set_tensor(const torch::Tensor& target, const torch::Tensor& source) {
  ASSERT_TRUE(target.defined());
  ASSERT_EQ(target.sizes(), source.sizes());
  torch::NoGradGuard no_grad;
  target.copy_(source);
}

::testing::AssertionResult exactly_equal(const torch::Tensor& actual, const torch::Tensor& expected) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "shape " << actual.sizes() << " vs " << expected.sizes();
  }
  if (!torch::equal(actual, expected)) {
    return ::testing::AssertionFailure() << "max abs diff " << (actual - expected).abs().max().item<double>();
  }
  return ::testing::AssertionSuccess();
}

struct ConvCase {
  int64_t in, out, kernel, stride, padding, groups;
  bool bias;
};

TEST_F(GraphModuleOps, ConvMatchesConv2d) {
  const ConvCase cases[] = {
      {4, 6, 3, 1, 1, 1, true},   // plain 3x3, same size
      {4, 8, 3, 2, 0, 2, false},  // strided, grouped, no bias
      {6, 6, 3, 1, 1, 6, true},   // depthwise
      {6, 12, 3, 2, 1, 6, false}, // depthwise with channel multiplier 2, strided
      {4, 5, 1, 1, 0, 1, true},   // pointwise
      {4, 3, 5, 2, 2, 1, true},   // large kernel, strided, padded
  };
  for (const ConvCase& c : cases) {
    const std::string label = fmt::format("in {} out {} k {} s {} p {} g {} bias {}", c.in, c.out, c.kernel, c.stride,
                                          c.padding, c.groups, c.bias);
    GraphModule module = make_module(
        Shape{c.in, 9, 9, false},
        fmt::format(R"([{{"op": "conv", "out": {}, "kernel": {}, "stride": {}, "padding": {}, "groups": {},
                        "bias": {}}}, {{"op": "flatten"}}])",
                    c.out, c.kernel, c.stride, c.padding, c.groups, c.bias)
            .c_str());
    torch::nn::Conv2d reference(torch::nn::Conv2dOptions(c.in, c.out, c.kernel)
                                    .stride(c.stride)
                                    .padding(c.padding)
                                    .groups(c.groups)
                                    .bias(c.bias));
    set_tensor(module->weight(1), reference->weight);
    if (c.bias) {
      set_tensor(module->bias(1), reference->bias);
    } else {
      EXPECT_FALSE(module->bias(1).defined()) << label;
    }
    const auto x = torch::randn({3, c.in, 9, 9});
    const auto expected = reference->forward(x);
    EXPECT_EQ(module->graph().nodes[1].shape, (Shape{expected.size(1), expected.size(2), expected.size(3), false}))
        << label;
    EXPECT_TRUE(exactly_equal(module->forward(x), expected.flatten(1))) << label;
  }
}

TEST_F(GraphModuleOps, BatchNormMatchesBatchNorm2dInTrainAndEval) {
  GraphModule module = make_module(Shape{5, 4, 4, false}, R"([{"op": "batchnorm"}, {"op": "flatten"}])");
  torch::nn::BatchNorm2d reference(5);
  // Start both from the same non-trivial affine parameters and running statistics.
  {
    torch::NoGradGuard no_grad;
    reference->weight.copy_(torch::rand({5}) + 0.5);
    reference->bias.copy_(torch::randn({5}));
    reference->running_mean.copy_(torch::randn({5}));
    reference->running_var.copy_(torch::rand({5}) + 0.5);
  }
  set_tensor(module->weight(1), reference->weight);
  set_tensor(module->bias(1), reference->bias);
  set_tensor(module->running_mean(1), reference->running_mean);
  set_tensor(module->running_var(1), reference->running_var);

  const auto initial_mean = reference->running_mean.clone();
  module->train();
  reference->train();
  for (int step = 0; step < 3; ++step) {
    const auto x = torch::randn({8, 5, 4, 4}) * 3 + 1;
    EXPECT_TRUE(exactly_equal(module->forward(x), reference->forward(x).flatten(1))) << "train step " << step;
    EXPECT_TRUE(exactly_equal(module->running_mean(1), reference->running_mean)) << "train step " << step;
    EXPECT_TRUE(exactly_equal(module->running_var(1), reference->running_var)) << "train step " << step;
  }
  // The statistics did move: momentum 0.1 towards a batch mean near 1.
  EXPECT_GT((module->running_mean(1) - initial_mean).abs().max().item<float>(), 0.1f);

  module->eval();
  reference->eval();
  const auto mean_before = module->running_mean(1).clone();
  const auto x = torch::randn({4, 5, 4, 4});
  EXPECT_TRUE(exactly_equal(module->forward(x), reference->forward(x).flatten(1)));
  EXPECT_TRUE(exactly_equal(module->running_mean(1), mean_before));  // eval leaves the statistics alone
}

TEST_F(GraphModuleOps, BatchNormOnFlatInputMatchesBatchNorm1d) {
  GraphModule module = make_module(Shape{6, 1, 1, false}, R"([{"op": "flatten"}, {"op": "batchnorm"}])");
  torch::nn::BatchNorm1d reference(6);
  {
    torch::NoGradGuard no_grad;
    reference->weight.copy_(torch::rand({6}) + 0.5);
    reference->bias.copy_(torch::randn({6}));
  }
  set_tensor(module->weight(2), reference->weight);
  set_tensor(module->bias(2), reference->bias);
  const auto x = torch::randn({10, 6, 1, 1});
  EXPECT_TRUE(exactly_equal(module->forward(x), reference->forward(x.flatten(1))));
  EXPECT_TRUE(exactly_equal(module->running_var(2), reference->running_var));
  module->eval();
  reference->eval();
  EXPECT_TRUE(exactly_equal(module->forward(x), reference->forward(x.flatten(1))));
}

TEST_F(GraphModuleOps, ActivationsMatchReluAndRelu6) {
  const auto x = torch::randn({4, 3, 5, 5}) * 5;  // reaches below 0 and above 6
  ASSERT_GT(x.max().item<float>(), 6.0f);
  GraphModule relu = make_module(Shape{3, 5, 5, false}, R"([{"op": "relu"}, {"op": "flatten"}])");
  EXPECT_TRUE(exactly_equal(relu->forward(x), torch::nn::ReLU()->forward(x).flatten(1)));
  GraphModule relu6 = make_module(Shape{3, 5, 5, false}, R"([{"op": "relu6"}, {"op": "flatten"}])");
  const auto y = relu6->forward(x);
  EXPECT_TRUE(exactly_equal(y, torch::nn::ReLU6()->forward(x).flatten(1)));
  EXPECT_EQ(y.max().item<float>(), 6.0f);
  EXPECT_EQ(y.min().item<float>(), 0.0f);
}

TEST_F(GraphModuleOps, PoolsMatchMaxAvgAndAdaptivePools) {
  const auto x = torch::randn({2, 3, 7, 7});
  GraphModule max_pool = make_module(Shape{3, 7, 7, false},
                                     R"([{"op": "maxpool", "kernel": 3, "stride": 2, "padding": 1}, {"op": "flatten"}])");
  EXPECT_TRUE(exactly_equal(max_pool->forward(x),
                            torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1))
                                ->forward(x)
                                .flatten(1)));
  EXPECT_EQ(max_pool->graph().nodes[1].shape, (Shape{3, 4, 4, false}));

  GraphModule avg_pool = make_module(Shape{3, 7, 7, false},
                                     R"([{"op": "avgpool", "kernel": 3, "stride": 2, "padding": 1}, {"op": "flatten"}])");
  EXPECT_TRUE(exactly_equal(avg_pool->forward(x),
                            torch::nn::AvgPool2d(torch::nn::AvgPool2dOptions(3).stride(2).padding(1))
                                ->forward(x)
                                .flatten(1)));

  GraphModule avg_default = make_module(Shape{3, 7, 7, false}, R"([{"op": "avgpool"}, {"op": "flatten"}])");
  EXPECT_TRUE(exactly_equal(avg_default->forward(x), torch::nn::AvgPool2d(2)->forward(x).flatten(1)));

  for (int64_t size : {1, 2, 3}) {  // 7 is not a multiple of 2 or 3: overlapping adaptive windows
    GraphModule adaptive = make_module(
        Shape{3, 7, 7, false},
        fmt::format(R"([{{"op": "adaptive_avgpool", "output_size": {}}}, {{"op": "flatten"}}])", size).c_str());
    EXPECT_TRUE(exactly_equal(adaptive->forward(x), torch::nn::AdaptiveAvgPool2d(size)->forward(x).flatten(1)))
        << "output size " << size;
  }
}

TEST_F(GraphModuleOps, LinearAndFlattenMatchLinearAndFlatten) {
  const auto x = torch::randn({5, 3, 2, 2});
  for (bool bias : {true, false}) {
    GraphModule module = make_module(
        Shape{3, 2, 2, false},
        fmt::format(R"([{{"op": "flatten"}}, {{"op": "linear", "out": 7, "bias": {}}}])", bias).c_str());
    torch::nn::Linear reference(torch::nn::LinearOptions(12, 7).bias(bias));
    set_tensor(module->weight(2), reference->weight);
    if (bias) set_tensor(module->bias(2), reference->bias);
    EXPECT_TRUE(exactly_equal(module->forward(x), reference->forward(torch::nn::Flatten()->forward(x))))
        << "bias " << bias;
  }
  GraphModule flatten = make_module(Shape{3, 2, 2, false}, R"([{"op": "flatten"}])");
  EXPECT_TRUE(exactly_equal(flatten->forward(x), torch::nn::Flatten()->forward(x)));
}

TEST_F(GraphModuleOps, DropoutIsIdentityInEvalAndMatchesDropoutInTrain) {
  GraphModule module = make_module(Shape{4, 8, 8, false}, R"([{"op": "flatten"}, {"op": "dropout", "p": 0.3}])");
  torch::nn::Dropout reference(0.3);
  const auto x = torch::randn({16, 4, 8, 8});
  module->eval();
  EXPECT_TRUE(exactly_equal(module->forward(x), x.flatten(1)));

  module->train();
  torch::manual_seed(7);
  const auto y = module->forward(x);
  torch::manual_seed(7);
  EXPECT_TRUE(exactly_equal(y, reference->forward(x.flatten(1))));
  const double dropped = y.eq(0).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(dropped, 0.3, 0.05);  // 4,096 draws
  const auto kept = y.ne(0);
  EXPECT_TRUE(torch::allclose(y.masked_select(kept), x.flatten(1).masked_select(kept) / 0.7, 1e-6, 1e-6));
}

TEST_F(GraphModuleOps, AddAndConcatMatchSumAndCat) {
  const auto x = torch::randn({3, 2, 4, 4}) * 4;
  GraphModule add = make_module(Shape{2, 4, 4, false},
                                R"([{"op": "relu", "name": "a"}, {"op": "add", "inputs": ["input", "a"]},
                                    {"op": "flatten"}])");
  EXPECT_TRUE(exactly_equal(add->forward(x), (x + torch::relu(x)).flatten(1)));

  GraphModule add3 = make_module(Shape{2, 4, 4, false},
                                 R"([{"op": "relu", "name": "a"}, {"op": "relu6", "name": "b", "inputs": ["input"]},
                                     {"op": "add", "inputs": ["input", "a", "b"]}, {"op": "flatten"}])");
  EXPECT_TRUE(exactly_equal(add3->forward(x), (x + torch::relu(x) + torch::hardtanh(x, 0, 6)).flatten(1)));

  GraphModule cat = make_module(Shape{2, 4, 4, false},
                                R"([{"op": "relu", "name": "a"}, {"op": "concat", "inputs": ["a", "input"]},
                                    {"op": "flatten"}])");
  EXPECT_EQ(cat->graph().nodes[2].shape, (Shape{4, 4, 4, false}));
  EXPECT_TRUE(exactly_equal(cat->forward(x), torch::cat({torch::relu(x), x}, 1).flatten(1)));
}

TEST_F(GraphModuleOps, ParametersAreNamedAfterTheirNodes) {
  GraphModule module = make_module(Shape{3, 8, 8, false},
                                   R"([{"op": "conv", "out": 4, "name": "stem", "bias": false},
                                       {"op": "batchnorm", "name": "stem_bn"}, {"op": "flatten"},
                                       {"op": "linear", "out": 2, "name": "fc"}])");
  std::vector<std::string> parameters, buffers;
  for (const auto& p : module->named_parameters()) parameters.push_back(p.key());
  for (const auto& b : module->named_buffers()) buffers.push_back(b.key());
  EXPECT_EQ(parameters, (std::vector<std::string>{"stem_weight", "stem_bn_weight", "stem_bn_bias", "fc_weight",
                                                  "fc_bias"}));
  EXPECT_EQ(buffers, (std::vector<std::string>{"stem_bn_running_mean", "stem_bn_running_var"}));
  int64_t total = 0;
  for (const auto& p : module->parameters()) total += p.numel();
  EXPECT_EQ(total, count_params(module->graph()));
  // Initialisation comes from the global generator: the same seed gives the same weights.
  torch::manual_seed(3);
  GraphModule a = make_module(Shape{3, 8, 8, false}, R"([{"op": "conv", "out": 4}, {"op": "flatten"}])");
  torch::manual_seed(3);
  GraphModule b = make_module(Shape{3, 8, 8, false}, R"([{"op": "conv", "out": 4}, {"op": "flatten"}])");
  EXPECT_TRUE(torch::equal(a->weight(1), b->weight(1)));
  EXPECT_TRUE(torch::equal(a->bias(1), torch::zeros({4})));
}

TEST_F(GraphModuleOps, CloneIsDeepAndComputesTheSame) {
  GraphModule model = make_module(Shape{2, 6, 6, false}, R"([{"op": "conv", "out": 3}, {"op": "batchnorm"},
      {"op": "relu"}, {"op": "flatten"}, {"op": "linear", "out": 4}])");
  model->eval();
  {
    torch::NoGradGuard no_grad;
    model->running_mean(2).normal_();
  }
  GraphModule copy = clone_graph_module(model);
  EXPECT_FALSE(copy->is_training());
  const auto x = torch::randn({2, 2, 6, 6});
  EXPECT_TRUE(exactly_equal(copy->forward(x), model->forward(x)));
  {
    torch::NoGradGuard no_grad;
    copy->weight(1).zero_();
    copy->running_mean(2).zero_();
  }
  EXPECT_FALSE(torch::equal(copy->weight(1), model->weight(1))) << "the copy holds its own tensors";
  EXPECT_FALSE(torch::equal(copy->running_mean(2), model->running_mean(2))) << "and its own buffers";
}

}  // namespace
}  // namespace edgesweep
