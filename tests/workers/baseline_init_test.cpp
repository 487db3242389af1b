// Tests of transfer learning's start ([baseline] init): every tensor of the archive copied, the classifier head fresh
// (and seeded) when the class count changes and copied when it does not; refusals of another network, quantized and
// foreign files; and a baseline task on a class subset that starts from an earlier baseline's archive.
#include "edgesweep/workers/baseline_init.h"

#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/common/task.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/run_task.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "fake_datasets.h"
#include "synthetic_data.h"
#include "temp_folder.h"
#include "tiny_tasks.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

GraphModule tiny_model(int64_t classes, uint64_t seed, int64_t channels = 4) {
  torch::manual_seed(seed);
  return GraphModule(graph_from_layers(tiny_layers(classes, channels), Shape{1, 8, 8, false}, classes));
}

/// Copies of every parameter and buffer of `model`, by name.
std::map<std::string, torch::Tensor> tensors_of(GraphModule& model) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& p : model->named_parameters(false)) tensors[p.key()] = p.value().detach().clone();
  for (const auto& b : model->named_buffers(false)) tensors[b.key()] = b.value().detach().clone();
  return tensors;
}

/// A trained 2-class archive (batch-norm statistics no longer at their initial values) saved under `folder`.
GraphModule pretrained(const fs::path& path) {
  const DataSplits data = brightness_task(3);
  GraphModule model = tiny_model(2, 1);
  TrainConfig training;
  training.epochs = 1;
  training.batch_size = 16;
  train_model(model, data, training, false, 2);
  save_torchscript(model, Json{{"precision", "fp32"}}, path);
  return model;
}

TEST(BaselineInit, CopiesEveryTensorButTheHeadOfANewClassCount) {
  const TempFolder folder("baseline-init");
  GraphModule archive = pretrained(folder / "pretrained.pt");
  const auto archived = tensors_of(archive);
  GraphModule model = tiny_model(5, 9);
  const auto fresh = tensors_of(model);
  EXPECT_EQ(classifier_head(model->graph()), model->graph().find("fc2"));

  initialize_from_archive(model, folder / "pretrained.pt", sha256_file(folder / "pretrained.pt"));
  const auto started = tensors_of(model);
  ASSERT_EQ(started.size(), archived.size());
  for (const auto& [name, tensor] : started) {
    if (name == "fc2_weight" || name == "fc2_bias") {
      // The head keeps the seeded initialisation of the model built for 5 classes.
      EXPECT_EQ(tensor.size(0), 5) << name;
      EXPECT_TRUE(torch::equal(tensor, fresh.at(name))) << name;
    } else {
      EXPECT_TRUE(torch::equal(tensor, archived.at(name))) << name << " is not the archive's";
      EXPECT_FALSE(torch::equal(tensor, fresh.at(name))) << name << " kept its fresh value";
    }
  }
  // Seeded: the same seed gives the same head.
  GraphModule again = tiny_model(5, 9);
  initialize_from_archive(again, folder / "pretrained.pt");
  EXPECT_TRUE(torch::equal(again->weight(again->graph().find("fc2")), model->weight(model->graph().find("fc2"))));
}

TEST(BaselineInit, ANewHeadForOtherClassesOfTheSameCount) {
  const TempFolder folder("baseline-init");
  GraphModule archive = tiny_model(2, 1);
  save_torchscript(archive, Json{{"precision", "fp32"}, {"class_names", {"sandal", "shirt"}}},
                   folder / "named.pt");
  const auto archived = tensors_of(archive);
  GraphModule same = tiny_model(2, 9);
  initialize_from_archive(same, folder / "named.pt", "", {"sandal", "shirt"});
  EXPECT_TRUE(torch::equal(tensors_of(same).at("fc2_weight"), archived.at("fc2_weight")));
  GraphModule other = tiny_model(2, 9);
  const auto fresh = tensors_of(other);
  initialize_from_archive(other, folder / "named.pt", "", {"bag", "ankle boot"});
  for (const auto& [name, tensor] : tensors_of(other)) {
    const bool head = name == "fc2_weight" || name == "fc2_bias";
    EXPECT_TRUE(torch::equal(tensor, head ? fresh.at(name) : archived.at(name))) << name;
  }
}

TEST(BaselineInit, KeepsTheHeadWhenTheClassCountIsEqual) {
  const TempFolder folder("baseline-init");
  GraphModule archive = pretrained(folder / "pretrained.pt");
  GraphModule model = tiny_model(2, 9);
  initialize_from_archive(model, folder / "pretrained.pt");
  const auto archived = tensors_of(archive);
  for (const auto& [name, tensor] : tensors_of(model)) {
    EXPECT_TRUE(torch::equal(tensor, archived.at(name))) << name;
  }
  torch::NoGradGuard no_grad;
  archive->eval();
  model->eval();
  const auto input = torch::randn({4, 1, 8, 8});
  EXPECT_TRUE(torch::equal(model->forward(input), archive->forward(input)));
}

TEST(BaselineInit, RefusesAnotherNetworkNamingTheFirstDifferingLayer) {
  const TempFolder folder("baseline-init");
  pretrained(folder / "pretrained.pt");
  const std::string init = "[baseline] 'init' = \"" + (folder / "pretrained.pt").string() + "\"";
  GraphModule wider = tiny_model(2, 9, 6);
  expect_error<InputError>([&] { initialize_from_archive(wider, folder / "pretrained.pt"); },
                           {init, "another network", "layer 1 ('conv1')", "out is 4 in the archive and 6"});

  // A zoo architecture at another width: the stem differs first.
  torch::manual_seed(1);
  GraphModule resnet8(build_zoo_model("resnet8", Shape{1, 8, 8, false}, 10, 1.0));
  save_torchscript(resnet8, Json{{"precision", "fp32"}}, folder / "resnet8.pt");
  GraphModule narrow(build_zoo_model("resnet8", Shape{1, 8, 8, false}, 5, 0.5));
  expect_error<InputError>([&] { initialize_from_archive(narrow, folder / "resnet8.pt"); },
                           {"layer 1 ('stem_conv')", "out is 16 in the archive and 8"});
  // Another architecture and another input.
  GraphModule other(build_zoo_model("small-cnn", Shape{1, 8, 8, false}, 10, 1.0));
  expect_error<InputError>([&] { initialize_from_archive(other, folder / "resnet8.pt"); },
                           {"layer 1 ('conv1_conv')", "name is \"stem_conv\" in the archive and \"conv1_conv\""});
  GraphModule colour(build_zoo_model("resnet8", Shape{3, 8, 8, false}, 10, 1.0));
  expect_error<InputError>([&] { initialize_from_archive(colour, folder / "resnet8.pt"); },
                           {"layer 0 ('input')", "shape is [1,8,8] in the archive and [3,8,8]"});
}

TEST(BaselineInit, RefusesQuantizedForeignMissingAndChangedFiles) {
  const TempFolder folder("baseline-init");
  GraphModule archive = pretrained(folder / "pretrained.pt");

  // A real int8 archive of the same network.
  QuantizeOptions options;
  options.mode = "static-int8";
  options.calibration_batches = 2;
  options.calibration_batch_size = 16;
  save_scripted_model(quantize_post_training(archive, brightness_task(3), options), Json::object(),
                      folder / "int8.pt");
  GraphModule model = tiny_model(2, 9);
  expect_error<InputError>([&] { initialize_from_archive(model, folder / "int8.pt"); },
                           {(folder / "int8.pt").string(), "is an int8 model", "float archive"});

  std::ofstream(folder / "notes.pt") << "not a model";
  expect_error<InputError>([&] { initialize_from_archive(model, folder / "notes.pt"); },
                           {"[baseline] 'init'", "is not an edgesweep archive", "not a TorchScript archive"});
  // TorchScript without edgesweep's graph is imported, which names its layers by operator (conv1, batchnorm1, ...):
  // it must then be the network [model] builds, names included, so a zoo network's own names do not match.
  export_torchscript(archive).save((folder / "plain.pt").string());
  expect_error<InputError>([&] { initialize_from_archive(model, folder / "plain.pt"); },
                           {"holds another network", "name is \"batchnorm1\" in the archive and \"bn1\""});
  expect_error<InputError>([&] { initialize_from_archive(model, folder / "gone.pt"); },
                           {(folder / "gone.pt").string(), "is not an existing file"});
  expect_error<InputError>(
      [&] { initialize_from_archive(model, folder / "pretrained.pt", std::string(64, '0')); },
      {"has sha256", "when the experiment was read", "the file changed"});
}

TEST(TransferBaseline, StartsFromAnEarlierBaselineOnOtherClasses) {
  const TempFolder folder("transfer-baseline");
  write_fashion_mnist_folder(folder / "data", labels_with_counts(std::vector<int>(10, 12)),
                             labels_with_counts(std::vector<int>(10, 4)));

  // Step 1: a baseline on classes 0-4.
  const TaskResult first = run_task(baseline_task(folder / "data", folder / "first", {0, 1, 2, 3, 4}, 1));
  ASSERT_TRUE(first.ok) << first.error;
  const fs::path pretrained = folder / "first" / first.artifacts.at(0).path;

  // Step 2: classes 5, 6 and 7 from that archive, without training, so the archive's weights are visible as they are.
  Task task = baseline_task(folder / "data", folder / "second", {5, 6, 7}, 0);
  task.config.baseline.init = pretrained.string();
  task.config.baseline.init_sha256 = sha256_file(pretrained);
  EXPECT_NE(baseline_hash(task.config),
            baseline_hash(baseline_task(folder / "data", folder / "x", {5, 6, 7}, 0).config));
  const TaskResult second = run_task(task);
  ASSERT_TRUE(second.ok) << second.error;
  LoadedModel started = load_graph_module(folder / "second" / second.artifacts.at(0).path);
  LoadedModel archive = load_graph_module(pretrained);
  EXPECT_EQ(started.metadata.at("class_names"), Json({"sandal", "shirt", "sneaker"}));
  GraphModule fresh = tiny_model(3, task.config.seed);  // what run_task builds before copying
  const auto fresh_tensors = tensors_of(fresh);
  const auto archived = tensors_of(archive.model);
  for (const auto& [name, tensor] : tensors_of(started.model)) {
    const bool head = name == "fc2_weight" || name == "fc2_bias";
    EXPECT_TRUE(torch::equal(tensor, head ? fresh_tensors.at(name) : archived.at(name))) << name;
  }
  // Test accuracy is measured on the 3 kept classes' 12 test images only.
  double accuracy = -1;
  for (const Metric& m : second.metrics) accuracy = m.name == "test_accuracy" ? m.value : accuracy;
  ASSERT_GE(accuracy, 0.0);
  EXPECT_NEAR(accuracy * 12 / 100, std::round(accuracy * 12 / 100), 1e-9) << accuracy;

  // A baseline whose init is gone fails before training, naming the key.
  task.config.baseline.init = (folder / "missing.pt").string();
  const TaskResult refused = run_task(task);
  EXPECT_FALSE(refused.ok);
  EXPECT_NE(refused.error.find("[baseline] 'init'"), std::string::npos) << refused.error;
}

}  // namespace
}  // namespace edgesweep
