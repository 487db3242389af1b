// Import of TorchScript archives made by Python's torchvision (tests/interop/make_torchvision_models.py, run by CTest
// as the fixture of these tests): every family, scripted and traced, imports with outputs equal to the archive's,
// with every parameter accounted for; block pruning of half of every prunable channel group gives a smaller dense
// network that exports, and Python's torch.jit.load runs it like C++; static int8 quantization runs. And the errors:
// an unsupported operator, a wrong input shape, a file that is not TorchScript, several outputs.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/baseline_init.h"
#include "edgesweep/workers/compress/channel_groups.h"
#include "edgesweep/workers/compress/distill.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/import_torchscript.h"
#include "edgesweep/workers/torchscript.h"
#include "expect_error.h"
#include "python_interop.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

const fs::path kModels = EDGESWEEP_TORCHVISION_MODELS;

struct Entry {
  std::string name;
  fs::path archive;
  Shape input;
  int64_t classes = 0;
  int64_t params = 0;
};

/// The generator's manifest; an empty list (and a test failure) when the fixture has not run.
std::vector<Entry> manifest() {
  std::ifstream in(kModels / "manifest.json");
  if (!in) return {};
  std::vector<Entry> entries;
  for (const Json& j : Json::parse(in)) {
    const auto shape = j.at("input").get<std::vector<int64_t>>();
    entries.push_back({j.at("name").get<std::string>(), kModels / j.at("archive").get<std::string>(),
                       Shape{shape[0], shape[1], shape[2], false}, j.at("classes").get<int64_t>(),
                       j.at("params").get<int64_t>()});
  }
  return entries;
}

Entry entry(const std::string& name) {
  for (const Entry& e : manifest()) {
    if (e.name == name) return e;
  }
  ADD_FAILURE() << "no archive '" << name << "' in " << kModels / "manifest.json"
                << " (the make_torchvision_models fixture makes it)";
  return Entry{};
}

/// Random calibration images for static int8, at the network's input shape.
DataSplits calibration_data(const Shape& input) {
  DataSplits data;
  data.train = Dataset{torch::randint(0, 256, {32, input.channels, input.height, input.width}, torch::kInt64)
                           .to(torch::kUInt8),
                       torch::zeros({32}, torch::kInt64)};
  data.input_shape = input;
  data.mean.assign(static_cast<size_t>(input.channels), 0.5);
  data.std.assign(static_cast<size_t>(input.channels), 0.25);
  return data;
}

/// Half of every prunable channel group removed, ranked by the block importance.
GraphModule prune_half(const GraphModule& model) {
  ChannelSelection selection;
  selection.sparsity = 0.5;
  selection.coupled = true;
  return prune_channels(model, ChannelImportance::Block, selection);
}

class ImportFamily : public ::testing::TestWithParam<std::string> {};

TEST_P(ImportFamily, MatchesTheArchiveThenPrunesExportsAndQuantizes) {
  const Entry e = entry(GetParam());
  ASSERT_FALSE(e.name.empty());
  torch::set_num_threads(1);
  const ImportedModel imported = import_torchscript(e.archive, e.input, e.classes);
  const Graph& graph = imported.model->graph();
  EXPECT_LE(imported.check.relative_difference(), kImportTolerance);
  EXPECT_GT(imported.check.output_scale, 0);
  EXPECT_EQ(imported.check.inputs, 3);
  EXPECT_EQ(count_params(graph), e.params) << "every parameter of the archive is in the IR";
  EXPECT_EQ(graph.output().shape, (Shape{e.classes, 1, 1, true}));
  std::cout << e.name << ": " << graph.nodes.size() << " layers, " << count_params(graph) << " params, "
            << count_macs(graph) << " MACs, max |diff| " << imported.check.max_abs_difference << " of scale "
            << imported.check.output_scale << "\n";

  // Block pruning: half of every prunable group, a dense smaller network that runs.
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  int64_t prunable = 0;
  for (const ChannelGroup& group : analysis.groups) prunable += group.prunable ? 1 : 0;
  ASSERT_GT(prunable, 0) << e.name;
  GraphModule pruned = prune_half(imported.model);
  pruned->eval();
  EXPECT_LT(count_macs(pruned->graph()), count_macs(graph));
  const torch::Tensor x = torch::randn({2, e.input.channels, e.input.height, e.input.width});
  torch::NoGradGuard no_grad;
  const torch::Tensor y = pruned->forward(x);
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, e.classes}));
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());

  // Export: the archive loaded back in C++ gives the pruned network's outputs.
  TempFolder folder("import");
  save_torchscript(pruned, Json{{"source", e.name}}, folder / "pruned.pt");
  torch::jit::Module loaded = torch::jit::load((folder / "pruned.pt").string());
  EXPECT_LE((loaded.forward({x}).toTensor() - y).abs().max().item<double>(), 1e-5 * (1 + y.abs().max().item<double>()));

  // Static int8 of the pruned network: it runs and keeps the output shape.
  QuantizeOptions options;
  options.calibration_batches = 1;
  options.calibration_batch_size = 32;
  ScriptedModel quantized = quantize_post_training(pruned, calibration_data(e.input), options);
  const torch::Tensor q = quantized.forward(x);
  EXPECT_EQ(q.sizes(), y.sizes());
  EXPECT_TRUE(torch::isfinite(q).all().item<bool>());
}

const char* const kFamilies[] = {"resnet18",       "resnet-bottleneck",  "vgg",           "vgg-bn",
                                 "mobilenet_v2",   "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_1",
                                 "shufflenet_v2",  "densenet",           "user-net"};

std::vector<std::string> every_archive() {
  std::vector<std::string> names;
  for (const char* family : kFamilies) {
    for (const char* form : {"scripted", "traced"}) names.push_back(std::string(family) + "-" + form);
  }
  return names;
}

INSTANTIATE_TEST_SUITE_P(Torchvision, ImportFamily, ::testing::ValuesIn(every_archive()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

TEST(ImportPython, PrunedImportsGivePythonTheOutputsOfCpp) {
  torch::set_num_threads(1);
  TempFolder folder("import-python");
  Json manifest_json = {{"cases", Json::array()}};
  Json models = Json::array();
  // compare_torchscript.py takes one input for every model: the families at 32 x 32.
  const Shape input{3, 32, 32, false};
  torch::manual_seed(20261207);
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  write_float32(folder / "input.f32", x);
  for (const Entry& e : manifest()) {
    if (!(e.input == input) || e.name.find("-scripted") == std::string::npos) continue;
    GraphModule pruned = prune_half(import_torchscript(e.archive, e.input, e.classes).model);
    pruned->eval();
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      y = pruned->forward(x);
    }
    save_torchscript(pruned, Json{{"source", e.name}}, folder / (e.name + ".pt"));
    write_float32(folder / (e.name + ".out.f32"), y);
    models.push_back({{"name", e.name},
                      {"archive", e.name + ".pt"},
                      {"output", e.name + ".out.f32"},
                      {"output_shape", {2, e.classes}}});
  }
  ASSERT_GE(models.size(), 8u);
  std::ofstream(folder / "manifest.json")
      << Json{{"input", {{"file", "input.f32"}, {"shape", {2, 3, 32, 32}}}}, {"models", models}}.dump(2);
  compare_in_python(folder);
}

TEST(ImportAnalysis, CouplingThroughGatesSplitsAndShuffles) {
  // MobileNetV3's squeeze-excitation multiplies its gate into the expanded channels: the gate's last conv and the
  // expansion conv produce one group.
  const Graph mobilenet = import_torchscript(kModels / "mobilenet_v3_small-scripted.pt", Shape{3, 32, 32, false})
                              .model->graph();
  bool gate_joined = false;
  for (const ChannelGroup& group : analyze_channel_groups(mobilenet).groups) {
    int convs = 0;
    for (int producer : group.producers) convs += mobilenet.nodes[producer].op == OpKind::Conv ? 1 : 0;
    gate_joined = gate_joined || (group.prunable && convs >= 2 && group.producers.size() == 2);
  }
  EXPECT_TRUE(gate_joined) << "a prunable group of an expansion conv and its gate";

  // ShuffleNetV2: channels that pass a shuffle stay whole, and say why; the convs inside a branch are prunable.
  const Graph shufflenet =
      import_torchscript(kModels / "shufflenet_v2-scripted.pt", Shape{3, 32, 32, false}).model->graph();
  int shuffled = 0, prunable = 0;
  for (const ChannelGroup& group : analyze_channel_groups(shufflenet).groups) {
    if (group.prunable) ++prunable;
    if (group.fixed_reason.find("channel_shuffle") != std::string::npos) ++shuffled;
  }
  EXPECT_GT(shuffled, 0);
  EXPECT_GT(prunable, 0);
  int slices = 0;
  for (const Node& node : shufflenet.nodes) slices += node.op == OpKind::Slice ? 1 : 0;
  EXPECT_GT(slices, 0) << "chunk(2, dim=1) becomes slices";
}

TEST(ImportArchives, BaselineInitAndTeacherAcceptAnyArchiveThatImports) {
  torch::set_num_threads(1);
  const Shape input{3, 32, 32, false};
  GraphModule imported = import_torchscript(kModels / "vgg-bn-scripted.pt", input).model;
  torch::manual_seed(3);
  GraphModule fresh(imported->graph());  // the same network with random weights
  // The traced form of the same network: no edgesweep graph in it, imported to the same IR.
  initialize_from_archive(fresh, kModels / "vgg-bn-traced.pt");
  fresh->eval();
  const torch::Tensor x = torch::randn({2, 3, 32, 32});
  torch::NoGradGuard no_grad;
  const torch::Tensor expected = imported->forward(x);
  EXPECT_TRUE(torch::equal(fresh->forward(x), expected));
  GraphModule teacher = load_teacher((kModels / "vgg-bn-traced.pt").string(), imported, "distill");
  teacher->eval();
  EXPECT_TRUE(torch::equal(teacher->forward(x), expected));
  // Another network does not fit.
  expect_error<InputError>([&] { initialize_from_archive(fresh, kModels / "vgg-traced.pt"); },
                           {"[baseline] 'init'", "another network"});
}

TEST(ImportErrors, UnsupportedOperatorIsNamedWithItsSchemaAndSourceLine) {
  expect_error<InputError>([] { import_torchscript(kModels / "unsupported-op.pt", Shape{3, 16, 16, false}); },
                           {"unsupported-op.pt", "operator aten::pow at code/__torch__.py:", "`torch.pow",
                            "schema: aten::pow", "edgesweep imports these operators", "aten::conv2d"});
}

TEST(ImportErrors, WrongInputShapeNamesTheOperatorThatFailed) {
  expect_error<InputError>([] { import_torchscript(kModels / "resnet18-scripted.pt", Shape{1, 32, 32, false}); },
                           {"resnet18-scripted.pt", "does not run on an input of [1x32x32]", "aten::conv2d"});
  expect_error<InputError>([] { import_torchscript(kModels / "resnet18-scripted.pt", Shape{3, 32, 32, false}, 7); },
                           {"resnet18-scripted.pt", "gives 10 outputs", "7 classes"});
}

TEST(ImportErrors, FileThatIsNotTorchScriptIsRefused) {
  TempFolder folder("import-errors");
  std::ofstream(folder / "model.pt") << "not a zip archive\n";
  expect_error<InputError>([&] { import_torchscript(folder / "model.pt", Shape{3, 32, 32, false}); },
                           {"model.pt", "is not a TorchScript archive"});
  expect_error<InputError>([&] { import_torchscript(folder / "missing.pt", Shape{3, 32, 32, false}); },
                           {"missing.pt", "does not exist"});
}

TEST(ImportErrors, SeveralOutputsAreRefused) {
  expect_error<InputError>([] { import_torchscript(kModels / "two-outputs.pt", Shape{3, 16, 16, false}); },
                           {"two-outputs.pt", "several outputs", "2 values"});
}

}  // namespace
}  // namespace edgesweep
