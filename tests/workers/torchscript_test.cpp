// Tests of TorchScript export: every zoo model, trained a few steps so weights and batch-norm statistics are not
// at their initial values, must give bit-identical outputs (torch::equal) after save_torchscript and
// torch::jit::load, and after load_graph_module; the archive carries the graph and metadata as extra files.
#include "edgesweep/workers/torchscript.h"

#include <fstream>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

const Shape kFashion{1, 28, 28, false};

class TorchScriptExport : public ::testing::Test {
 protected:
  void SetUp() override { torch::manual_seed(20261123); }
  TempFolder folder_{"torchscript-test"};
};

/// A few SGD steps on random data in training mode, so weights and batch-norm running statistics move.
void train_a_few_steps(GraphModule& model, int steps) {
  const Shape& in = model->graph().input().shape;
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  model->train();
  for (int step = 0; step < steps; ++step) {
    const auto x = torch::randn({4, in.channels, in.height, in.width}) * 2 + 0.5;
    const auto labels = torch::randint(0, model->graph().num_classes, {4}, torch::kInt64);
    optimizer.zero_grad();
    const auto loss = torch::nn::functional::cross_entropy(model->forward(x), labels);
    loss.backward();
    optimizer.step();
  }
  model->eval();
}

torch::Tensor run_eval(GraphModule& model, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return model->forward(x);
}

::testing::AssertionResult bit_identical(const torch::Tensor& actual, const torch::Tensor& expected) {
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << "shape " << actual.sizes() << " vs " << expected.sizes();
  }
  if (!torch::equal(actual, expected)) {
    return ::testing::AssertionFailure() << "max abs diff " << (actual - expected).abs().max().item<double>();
  }
  return ::testing::AssertionSuccess();
}

/// Reads the extra files of an archive through torch::jit::load.
torch::jit::ExtraFilesMap read_extra_files(const std::filesystem::path& path) {
  torch::jit::ExtraFilesMap extra{{kGraphFile, ""}, {kMetadataFile, ""}};
  torch::jit::load(path.string(), c10::nullopt, extra);
  return extra;
}

TEST_F(TorchScriptExport, ZooModelsAreBitIdenticalAfterSaveAndLoad) {
  for (const std::string& arch : zoo_names()) {
    SCOPED_TRACE(arch);
    GraphModule model(build_zoo_model(arch, kFashion, 10, 1.0));
    const auto initial_parameters = model->parameters()[0].clone();
    train_a_few_steps(model, 2);
    ASSERT_FALSE(torch::equal(model->parameters()[0], initial_parameters));
    // Batch norm statistics moved away from their initial 0 / 1.
    const int first_bn = [&] {
      for (size_t i = 0; i < model->graph().nodes.size(); ++i) {
        if (model->graph().nodes[i].op == OpKind::BatchNorm) return static_cast<int>(i);
      }
      return -1;
    }();
    ASSERT_GE(first_bn, 0);
    EXPECT_GT(model->running_mean(first_bn).abs().max().item<float>(), 0.0f);
    EXPECT_FALSE(torch::equal(model->running_var(first_bn), torch::ones_like(model->running_var(first_bn))));

    const auto x = torch::randn({5, 1, 28, 28});
    const auto expected = run_eval(model, x);
    EXPECT_TRUE(bit_identical(model->forward(x).detach(), expected)) << "GraphModule with autograd on";
    const Json metadata = {{"arch", arch}, {"input_shape", {1, 28, 28}}, {"mean", {0.286}}, {"std", {0.353}}};
    const auto path = folder_ / (arch + ".pt");
    save_torchscript(model, metadata, path);
    ASSERT_TRUE(std::filesystem::exists(path));
    EXPECT_FALSE(std::filesystem::exists(path.string() + ".partial"));

    torch::jit::Module loaded = torch::jit::load(path.string());
    EXPECT_FALSE(loaded.is_training());
    // The graph executor profiles the first runs and optimises afterwards: every run must match.
    for (int run = 0; run < 3; ++run) {
      EXPECT_TRUE(bit_identical(loaded.forward({x}).toTensor(), expected)) << "run " << run;
    }
    {
      torch::NoGradGuard no_grad;
      EXPECT_TRUE(bit_identical(loaded.forward({x}).toTensor(), expected)) << "without autograd";
    }

    LoadedModel back = load_graph_module(path);
    back.model->eval();
    EXPECT_EQ(back.metadata, metadata);
    EXPECT_EQ(Json(back.model->graph()), Json(model->graph()));
    EXPECT_TRUE(bit_identical(run_eval(back.model, x), expected));
    const auto original = model->named_parameters();
    for (const auto& p : back.model->named_parameters()) {
      EXPECT_TRUE(torch::equal(p.value(), original[p.key()])) << p.key();
      EXPECT_TRUE(p.value().requires_grad()) << p.key();  // trainable again
    }
    const auto original_buffers = model->named_buffers();
    for (const auto& b : back.model->named_buffers()) {
      EXPECT_TRUE(torch::equal(b.value(), original_buffers[b.key()])) << b.key();
    }

    const auto extra = read_extra_files(path);
    EXPECT_EQ(Json::parse(extra.at(kGraphFile)), Json(model->graph()));
    EXPECT_EQ(Json::parse(extra.at(kMetadataFile)), metadata);
  }
}

/// Every op of the IR in one graph: conv (strided, grouped, biased), batch norm, relu, relu6, both pools, an
/// adaptive pool to 2x2, a three-way add, a concat, flatten, dropout and linear.
Graph every_op_graph() {
  return graph_from_layers(Json::parse(R"([
    {"op": "conv", "out": 8, "stride": 2, "name": "stem"},
    {"op": "batchnorm", "name": "stem_bn"},
    {"op": "relu", "name": "stem_relu"},
    {"op": "conv", "out": 8, "groups": 8, "bias": false, "name": "dw"},
    {"op": "relu6", "name": "dw_relu6"},
    {"op": "conv", "out": 8, "kernel": 1, "name": "pw"},
    {"op": "add", "inputs": ["pw", "stem_relu", "dw_relu6"], "name": "join"},
    {"op": "concat", "inputs": ["join", "stem_bn"], "name": "cat"},
    {"op": "maxpool", "kernel": 3, "stride": 2, "padding": 1},
    {"op": "avgpool", "kernel": 2, "stride": 1},
    {"op": "adaptive_avgpool", "output_size": 2},
    {"op": "flatten"},
    {"op": "dropout", "p": 0.5},
    {"op": "linear", "out": 6, "name": "fc"}
  ])"),
                           Shape{3, 16, 16, false}, 6);
}

TEST_F(TorchScriptExport, EveryOpIsBitIdenticalAfterSaveAndLoad) {
  GraphModule model(every_op_graph());
  train_a_few_steps(model, 2);
  const auto path = folder_ / "every-op.pt";
  save_torchscript(model, Json::object(), path);
  torch::jit::Module loaded = torch::jit::load(path.string());
  LoadedModel back = load_graph_module(path);
  back.model->eval();
  EXPECT_EQ(back.metadata, Json::object());
  // LibTorch picks convolution kernels by batch size (oneDNN or native): cover a single sample and a large batch.
  for (int64_t batch : {1, 3, 17}) {
    const auto x = torch::randn({batch, 3, 16, 16});
    const auto expected = run_eval(model, x);
    for (int run = 0; run < 3; ++run) {
      EXPECT_TRUE(bit_identical(loaded.forward({x}).toTensor(), expected)) << "batch " << batch << ", run " << run;
    }
    EXPECT_TRUE(bit_identical(run_eval(back.model, x), expected)) << "batch " << batch;
  }
}

TEST_F(TorchScriptExport, SourceCallsTheSameOperators) {
  const std::string source = torchscript_source(every_op_graph());
  const char* expected_lines[] = {
      "def forward(self, x):",
      "v_input = x",
      "v_stem = torch.conv2d(v_input, self.stem_weight, self.stem_bias, [2, 2], [1, 1], [1, 1], 1)",
      "v_stem_bn = torch.batch_norm(v_stem, self.stem_bn_weight, self.stem_bn_bias, self.stem_bn_running_mean, "
      "self.stem_bn_running_var, False, 0.10000000000000001, 1.0000000000000001e-05, False)",
      "v_dw = torch.conv2d(v_stem_relu, self.dw_weight, None, [1, 1], [1, 1], [1, 1], 8)",
      "v_dw_relu6 = torch.hardtanh(v_dw, 0.0, 6.0)",
      "v_join = (v_pw + v_stem_relu) + v_dw_relu6",
      "v_cat = torch.cat([v_join, v_stem_bn], 1)",
      "v_maxpool9 = torch.max_pool2d(v_cat, [3, 3], [2, 2], [1, 1], [1, 1], False)",
      "v_avgpool10 = torch.avg_pool2d(v_maxpool9, [2, 2], [1, 1], [0, 0], False, True)",
      "v_adaptive_avgpool11 = torch.adaptive_avg_pool2d(v_avgpool10, [2, 2])",
      "v_flatten12 = torch.flatten(v_adaptive_avgpool11, 1)",
      "v_dropout13 = v_flatten12",
      "v_fc = torch.linear(v_dropout13, self.fc_weight, self.fc_bias)",
      "return v_fc",
  };
  for (const char* line : expected_lines) {
    EXPECT_NE(source.find(line), std::string::npos) << "missing: " << line << "\nin:\n" << source;
  }
}

TEST_F(TorchScriptExport, ExportedModuleIsInferenceOnly) {
  GraphModule model(every_op_graph());
  model->train();  // the export is in eval mode whatever the source module's mode
  torch::jit::Module exported = export_torchscript(model);
  EXPECT_FALSE(exported.is_training());
  size_t parameters = 0;
  for (const auto& p : exported.named_parameters()) {
    ++parameters;
    EXPECT_FALSE(p.value.requires_grad()) << p.name;
  }
  EXPECT_EQ(parameters, model->parameters().size());
  // Copies, not aliases: changing the source leaves the export alone.
  const auto before = exported.attr("fc_weight").toTensor().clone();
  {
    torch::NoGradGuard no_grad;
    model->weight(model->graph().find("fc")).fill_(1.0);
  }
  EXPECT_TRUE(torch::equal(exported.attr("fc_weight").toTensor(), before));
}

TEST_F(TorchScriptExport, LoadErrorsNameTheFile) {
  const auto missing = folder_ / "missing.pt";
  expect_error<Error>([&] { load_graph_module(missing); }, {missing.string(), "does not exist"});

  // A valid TorchScript archive without edgesweep's extra files.
  const auto foreign = folder_ / "foreign.pt";
  export_torchscript(GraphModule(every_op_graph())).save(foreign.string());
  expect_error<Error>([&] { load_graph_module(foreign); }, {foreign.string(), "not an edgesweep model", kGraphFile});

  const auto garbage = folder_ / "garbage.pt";
  std::ofstream(garbage) << "not a zip archive";
  expect_error<Error>([&] { load_graph_module(garbage); }, {garbage.string(), "cannot load"});
}

}  // namespace
}  // namespace edgesweep
