// Your own network end to end: a torchvision network saved as TorchScript by Python (the make_torchvision_models
// fixture) is validated (the import's check and channel groups printed), then run: its baseline fine-tuned on
// Fashion-MNIST resized to its resolution in three channels, block-pruned to half of every prunable group and
// quantized to static int8, with every state recorded. And the experiment errors a user meets first.
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"

namespace edgesweep::apps_test {
namespace {

const fs::path kModels = EDGESWEEP_TORCHVISION_MODELS;

/// An experiment on the imported archive `model` (a 3 x 32 x 32 network) with `data_extra` in [data].
std::string import_experiment(const fs::path& results_dir, const fs::path& model, const std::string& data_extra) {
  return fmt::format(R"toml([experiment]
name = "imported"
seed = 5

[data]
dataset = "fashion-mnist"
train_subset = 600
test_subset = 300
val_fraction = 0.1
{}

[model]
arch = "torchscript"
path = '{}'
input_shape = [3, 32, 32]

[baseline]
epochs = 1
lr = 0.01
batch_size = 64

[[pipeline]]
stage = "prune"
method = "block"
sparsity = 0.5
finetune_epochs = 1

[[pipeline]]
stage = "quantize"
mode = "static-int8"
calibration_batches = 2

[run]
results_dir = '{}'
)toml",
                     data_extra, model.string(), results_dir.string());
}

using ImportRunTest = AppTest;

TEST_F(ImportRunTest, TorchvisionNetworkIsValidatedPrunedAndQuantized) {
  const fs::path model = kModels / "vgg-bn-scripted.pt";
  ASSERT_TRUE(fs::exists(model)) << model << " (the make_torchvision_models fixture makes it)";
  const fs::path spec = write_file(
      "imported.toml",
      import_experiment(results_dir_, model, "resize = 32\nrgb = true\nmean = [0.3, 0.3, 0.3]\nstd = [0.35, 0.35, 0.35]"));

  const ProcessResult validate = edgesweep({"validate", spec.string()});
  ASSERT_EQ(validate.exit_code, 0) << describe(validate);
  for (const char* fragment : {"imported ", "vgg-bn-scripted.pt", "29 layers", "239658 parameters",
                               "max |difference| from the archive 0", "prunable channel groups (",
                               "channel groups left whole (", "the network's input channels"}) {
    EXPECT_TRUE(contains(validate.out, fragment)) << fragment << "\n" << describe(validate);
  }

  const ProcessResult run = edgesweep({"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  ASSERT_EQ(run.exit_code, 0) << describe(run);

  const Store store = Store::open(results_dir_ / "edgesweep.db", Store::Mode::ReadOnly);
  const auto experiment = store.find_experiment("imported");
  ASSERT_TRUE(experiment.has_value());
  const std::vector<TrialRow> rows = store.trials(experiment->id);
  ASSERT_EQ(rows.size(), 2u);
  double baseline_macs = 0, trial_macs = 0, baseline_bytes = 0, trial_bytes = 0;
  for (const TrialRow& row : rows) {
    EXPECT_EQ(row.status, TrialStatus::Done) << row.error;
    EXPECT_EQ(row.config.at("model").at("path_sha256").get<std::string>().size(), 64u);
    for (const MetricRow& m : store.metrics(row.id)) {
      if (m.step != -1) continue;
      if (m.name == "macs") (row.kind == "baseline" ? baseline_macs : trial_macs) = m.value;
      if (m.name == "model_bytes") (row.kind == "baseline" ? baseline_bytes : trial_bytes) = m.value;
    }
  }
  EXPECT_EQ(baseline_macs, 1901184) << "the imported VGG's MACs";
  EXPECT_GT(trial_macs, 0);
  EXPECT_LT(trial_macs, 0.6 * baseline_macs) << "half of every prunable group removed";
  EXPECT_GT(trial_bytes, 0);
  EXPECT_LT(trial_bytes, 0.5 * baseline_bytes) << "pruned and int8";
}

/// Runs `spec` and returns its trials (the baseline first), every one of them done.
std::vector<TrialRow> run_and_read(const std::function<ProcessResult(std::vector<std::string>)>& edgesweep_run,
                                   const fs::path& spec, const fs::path& db, const std::string& name) {
  const ProcessResult run = edgesweep_run({"run", spec.string()});
  EXPECT_FALSE(run.timed_out) << describe(run);
  EXPECT_EQ(run.exit_code, 0) << describe(run);
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  const auto experiment = store.find_experiment(name);
  if (!experiment) {
    ADD_FAILURE() << "no experiment " << name;
    return {};
  }
  std::vector<TrialRow> rows = store.trials(experiment->id);
  for (const TrialRow& row : rows) EXPECT_EQ(row.status, TrialStatus::Done) << row.kind << " " << row.id << ": " << row.error;
  return rows;
}

TEST_F(ImportRunTest, EveryPruneDistillAndQuantizeMethodRunsOnAnImportedNetwork) {
  const fs::path model = kModels / "vgg-bn-traced.pt";
  ASSERT_TRUE(fs::exists(model)) << model;
  const auto experiment = [&](const std::string& name, const std::string& pipeline) {
    std::string text = import_experiment(results_dir_, model, "resize = 32\nrgb = true");
    text.replace(text.find("name = \"imported\""), std::string("name = \"imported\"").size(), "name = \"" + name + "\"");
    const size_t from = text.find("[[pipeline]]");
    const size_t to = text.find("[run]");
    text.replace(from, to - from, pipeline);
    text += "latency_seconds = 0.05\n";
    return write_file(name + ".toml", text);
  };
  const auto run = [&](std::vector<std::string> args) { return edgesweep(std::move(args)); };
  const fs::path db = results_dir_ / "edgesweep.db";

  // Every pruning method but movement (which schedules itself by AGP), then distillation from the baseline.
  const std::vector<TrialRow> pruned = run_and_read(
      run,
      experiment("import-prune", R"toml([[pipeline]]
stage = "prune"
method = ["magnitude-local", "magnitude-global", "l1-filter", "l2-filter", "fpgm-filter", "block", "node"]
sparsity = 0.5
finetune_epochs = 1
lr = 0.01

[[pipeline]]
stage = "distill"
teacher = "baseline"
epochs = 1
lr = 0.005

)toml"),
      db, "import-prune");
  EXPECT_EQ(pruned.size(), 8u);
  // Movement pruning with its AGP schedule.
  const std::vector<TrialRow> movement = run_and_read(run, experiment("import-movement", R"toml([[pipeline]]
stage = "prune"
method = "movement"
schedule = "agp"
sparsity = 0.5
finetune_epochs = 2
lr = 0.01

)toml"),
                                                      db, "import-movement");
  EXPECT_EQ(movement.size(), 2u);
  // Every quantization mode after block pruning.
  const std::vector<TrialRow> quantized = run_and_read(run, experiment("import-quantize", R"toml([[pipeline]]
stage = "prune"
method = "block"
sparsity = 0.3
finetune_epochs = 1
lr = 0.01

[[pipeline]]
stage = "quantize"
mode = ["dynamic-fp16", "dynamic-int8", "static-int8", "qat-int8"]
calibration_batches = 2
qat_epochs = 1
lr = 0.001

)toml"),
                                                       db, "import-quantize");
  EXPECT_EQ(quantized.size(), 5u);
}

TEST_F(ImportRunTest, DataThatDoesNotFitTheNetworkIsRefusedWithAHint) {
  const fs::path spec = write_file("imported.toml", import_experiment(results_dir_, kModels / "vgg-bn-scripted.pt", ""));
  const ProcessResult validate = edgesweep({"validate", spec.string()});
  EXPECT_EQ(validate.exit_code, 2) << describe(validate);
  EXPECT_TRUE(contains(validate.err, "imported.toml:"));
  EXPECT_TRUE(contains(validate.err, "'input_shape' = [3,32,32], but [data] gives fashion-mnist images of [1,28,28]"))
      << describe(validate);
  EXPECT_TRUE(contains(validate.err, "resize = 32 and rgb = true")) << describe(validate);
}

TEST_F(ImportRunTest, MissingArchiveAndUnsupportedOperatorAreRefused) {
  const fs::path missing = write_file(
      "missing.toml", import_experiment(results_dir_, folder_ / "nowhere.pt", "resize = 32\nrgb = true"));
  const ProcessResult no_file = edgesweep({"validate", missing.string()});
  EXPECT_EQ(no_file.exit_code, 2) << describe(no_file);
  EXPECT_TRUE(contains(no_file.err, "'path' = \"" + (folder_ / "nowhere.pt").string() + "\" is not an existing file"))
      << describe(no_file);

  std::string text = import_experiment(results_dir_, kModels / "unsupported-op.pt", "resize = 16\nrgb = true");
  const std::string shape = "input_shape = [3, 32, 32]";
  text.replace(text.find(shape), shape.size(), "input_shape = [3, 16, 16]");
  const fs::path unsupported = write_file("unsupported.toml", text);
  const ProcessResult refused = edgesweep({"validate", unsupported.string()});
  EXPECT_NE(refused.exit_code, 0) << describe(refused);
  EXPECT_TRUE(contains(refused.err, "aten::pow")) << describe(refused);
}

}  // namespace
}  // namespace edgesweep::apps_test
