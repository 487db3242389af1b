// Tests of the experiment spec parser: defaults, sweeps, inline layers, and the file:line:col of every error.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/common/params.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {
namespace {

/// The design's example experiment, with the stages that exist: 2 architectures x 2 learning rates x 2 epochs.
const std::string kExample = R"([experiment]
name = "fmnist-quickstart"
seed = 7

[data]
dataset = "fashion-mnist"
train_subset = 10000

[model]
arch = ["small-cnn", "resnet8"]

[baseline]
epochs = 3
lr = 0.05
batch_size = 128

[[pipeline]]
stage = "finetune"
lr = [0.01, 0.05]
epochs = [1, 2]
)";

/// Lines 1-2 of most test documents; the line under test is then line 3 or 4.
const std::string kHead = "[experiment]\nname = \"t\"\n";

/// The message of the InputError that parsing `text` throws (as file "x.toml").
std::string error_of(const std::string& text) {
  try {
    parse_spec_string(text, "x.toml");
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError for:\n" << text;
  return "";
}

TEST(Spec, ParsesTheDesignExample) {
  const ExperimentSpec spec = parse_spec_string(kExample, "x.toml");
  EXPECT_EQ(spec.path, "x.toml");
  EXPECT_EQ(spec.text, kExample);
  EXPECT_EQ(spec.hash, sha256_hex(kExample));
  EXPECT_EQ(spec.hash.size(), 64u);
  EXPECT_EQ(spec.name, "fmnist-quickstart");
  EXPECT_EQ(spec.seed, 7u);
  EXPECT_EQ(spec.description, "");
  EXPECT_EQ(spec.strategy, "grid");
  EXPECT_EQ(spec.max_trials, 0);

  const Json& trial = spec.base_trial;
  EXPECT_EQ(trial["seed"], 7);
  EXPECT_EQ(trial["data"]["dataset"], "fashion-mnist");
  EXPECT_EQ(trial["data"]["train_subset"], 10000);
  EXPECT_EQ(trial["model"]["arch"], "small-cnn");  // first value of the sweep
  EXPECT_EQ(trial["baseline"]["epochs"], 3);
  EXPECT_DOUBLE_EQ(trial["baseline"]["lr"].get<double>(), 0.05);
  EXPECT_EQ(trial["baseline"]["batch_size"], 128);
  ASSERT_EQ(trial["pipeline"].size(), 1u);
  EXPECT_EQ(trial["pipeline"][0]["stage"], "finetune");
  EXPECT_DOUBLE_EQ(trial["pipeline"][0]["lr"].get<double>(), 0.01);
  EXPECT_EQ(trial["pipeline"][0]["epochs"], 1);

  ASSERT_EQ(spec.dimensions.size(), 3u);
  EXPECT_EQ(spec.dimensions[0].pointer, "/model/arch");
  EXPECT_EQ(spec.dimensions[0].label, "model.arch");
  EXPECT_EQ(spec.dimensions[0].values, (std::vector<Json>{"small-cnn", "resnet8"}));
  EXPECT_EQ(spec.dimensions[1].pointer, "/pipeline/0/lr");
  EXPECT_EQ(spec.dimensions[1].label, "pipeline[0].lr");
  EXPECT_EQ(spec.dimensions[1].values, (std::vector<Json>{0.01, 0.05}));
  EXPECT_EQ(spec.dimensions[2].pointer, "/pipeline/0/epochs");
  EXPECT_EQ(spec.dimensions[2].label, "pipeline[0].epochs");
  EXPECT_EQ(spec.dimensions[2].values, (std::vector<Json>{1, 2}));
}

TEST(Spec, FillsEveryDefault) {
  const ExperimentSpec spec = parse_spec_string(kExample, "x.toml");
  const Json& trial = spec.base_trial;
  EXPECT_EQ(trial["data"]["path"], "");  // fashion-mnist: the packaged copy
  EXPECT_DOUBLE_EQ(trial["data"]["val_fraction"].get<double>(), 0.1);
  EXPECT_EQ(trial["data"]["augment"], false);
  EXPECT_EQ(trial["data"]["image_size"], 32);
  EXPECT_DOUBLE_EQ(trial["model"]["width"].get<double>(), 1.0);
  EXPECT_EQ(trial["model"]["layers"], Json::array());
  EXPECT_EQ(trial["baseline"]["optimizer"], "sgd");
  EXPECT_DOUBLE_EQ(trial["baseline"]["momentum"].get<double>(), 0.9);
  EXPECT_EQ(trial["baseline"]["lr_schedule"], "cosine");
  EXPECT_DOUBLE_EQ(trial["baseline"]["weight_decay"].get<double>(), 5e-4);
  const Json& finetune = trial["pipeline"][0];
  EXPECT_EQ(finetune["optimizer"], "sgd");
  EXPECT_EQ(finetune["batch_size"], 128);
  EXPECT_EQ(finetune["step_size"], 1);
  EXPECT_DOUBLE_EQ(finetune["gamma"].get<double>(), 0.1);
  EXPECT_EQ(finetune.size(), 11u);  // ten training settings and "stage"

  const SectionSpec& run = section_spec("run");
  EXPECT_EQ(spec.run.threads, run.find("threads")->default_value);
  EXPECT_EQ(spec.run.eval_batch_size, run.find("eval_batch_size")->default_value);
  EXPECT_EQ(spec.run.max_attempts, run.find("max_attempts")->default_value);
  EXPECT_EQ(spec.run.trial_timeout_seconds, run.find("trial_timeout_seconds")->default_value);
  EXPECT_EQ(spec.run.heartbeat_seconds, run.find("heartbeat_seconds")->default_value);
  EXPECT_EQ(spec.run.heartbeat_timeout_seconds, run.find("heartbeat_timeout_seconds")->default_value);
  EXPECT_EQ(spec.run.ranks_per_trial, run.find("ranks_per_trial")->default_value);
  EXPECT_EQ(spec.run.trial_timeout_seconds, 0.0);  // no limit unless asked
  EXPECT_EQ(spec.run.ranks_per_trial, 1);          // one rank per task unless asked
  EXPECT_EQ(spec.run.device, run.find("device")->default_value);
  EXPECT_EQ(spec.run.device, "cpu");
  EXPECT_EQ(spec.run.results_dir, std::filesystem::path("results/fmnist-quickstart"));

  // The base trial is complete: it round-trips through the typed config unchanged.
  EXPECT_EQ(Json(spec.base_trial.get<TrialConfig>()), spec.base_trial);
}

TEST(Spec, RunLimitsAndHeartbeatsAreReadAndCheckedAgainstEachOther) {
  const auto contains = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  const ExperimentSpec spec = parse_spec_string(
      kHead + "[run]\ntrial_timeout_seconds = 900\nheartbeat_seconds = 0.5\nheartbeat_timeout_seconds = 4\n", "x.toml");
  EXPECT_DOUBLE_EQ(spec.run.trial_timeout_seconds, 900);
  EXPECT_DOUBLE_EQ(spec.run.heartbeat_seconds, 0.5);
  EXPECT_DOUBLE_EQ(spec.run.heartbeat_timeout_seconds, 4);
  // A worker would be reported lost between two of its heartbeats.
  const std::string tight = error_of(kHead + "[run]\nheartbeat_seconds = 5\nheartbeat_timeout_seconds = 8\n");
  EXPECT_TRUE(contains(tight, "x.toml:5")) << tight;
  EXPECT_TRUE(contains(tight, "'heartbeat_timeout_seconds' = 8 must be at least twice 'heartbeat_seconds' = 5"))
      << tight;
  // The default timeout (120 s) against a long interval: the interval's line is named.
  const std::string slow = error_of(kHead + "[run]\nheartbeat_seconds = 100\n");
  EXPECT_TRUE(contains(slow, "x.toml:4")) << slow;
  EXPECT_TRUE(contains(error_of(kHead + "[run]\ntrial_timeout_seconds = -1\n"), "trial_timeout_seconds"));
  EXPECT_TRUE(contains(error_of(kHead + "[run]\nheartbeat_seconds = 0\n"), "heartbeat_seconds"));
  EXPECT_EQ(parse_spec_string(kHead + "[run]\nranks_per_trial = 4\n", "x.toml").run.ranks_per_trial, 4);
  EXPECT_TRUE(contains(error_of(kHead + "[run]\nranks_per_trial = 0\n"), "ranks_per_trial"));
  EXPECT_TRUE(contains(error_of(kHead + "[run]\nranks_per_trial = 1.5\n"), "ranks_per_trial"));
  EXPECT_EQ(parse_spec_string(kHead + "[run]\ndevice = \"cuda\"\n", "x.toml").run.device, "cuda");
  const std::string device = error_of(kHead + "[run]\ndevice = \"gpu\"\n");
  EXPECT_TRUE(contains(device, "device")) << device;
  EXPECT_TRUE(contains(device, "gpu")) << device;
}

TEST(Spec, RunPrecisionGoesIntoEveryTrainingThatSetsNoneAndFp32ChangesNoHash) {
  const std::string pipeline = R"toml(
[[pipeline]]
stage = "prune"
method = "block"
sparsity = 0.5

[[pipeline]]
stage = "distill"
precision = "fp32"

[[pipeline]]
stage = "quantize"
mode = "static-int8"
)toml";
  const ExperimentSpec plain = parse_spec_string(kHead + pipeline, "x.toml");
  const ExperimentSpec fp32 = parse_spec_string(kHead + pipeline + "\n[run]\nprecision = \"fp32\"\n", "x.toml");
  // fp32 is written nowhere: configs and hashes are those of files that never heard of precision.
  EXPECT_EQ(fp32.base_trial, plain.base_trial);
  EXPECT_FALSE(plain.base_trial["baseline"].contains("precision"));
  EXPECT_FALSE(plain.base_trial["pipeline"][0].contains("precision"));
  EXPECT_EQ(plain.run.precision, "fp32");
  EXPECT_EQ(plain.run.memory_format, "auto");

  const ExperimentSpec bf16 = parse_spec_string(kHead + pipeline + "\n[run]\nprecision = \"bf16\"\n", "x.toml");
  const Json& trial = bf16.base_trial;
  EXPECT_EQ(trial["baseline"]["precision"], "bf16");
  EXPECT_EQ(trial["pipeline"][0]["precision"], "bf16");  // prune's fine-tuning
  EXPECT_EQ(trial["pipeline"][1]["precision"], "fp32");  // the stage's own setting wins
  EXPECT_EQ(trial["pipeline"][2]["precision"], "bf16");  // quantize: QAT's training
  const TrialConfig a = plain.base_trial.get<TrialConfig>(), b = bf16.base_trial.get<TrialConfig>();
  EXPECT_NE(baseline_hash(a), baseline_hash(b));  // a bf16 baseline is never taken for an fp32 one
  EXPECT_NE(trial_hash(a), trial_hash(b));
  EXPECT_EQ(b.baseline.precision, "bf16");
  EXPECT_EQ(Json(b), bf16.base_trial);  // round trip

  const auto contains = [](const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
  };
  EXPECT_TRUE(contains(error_of(kHead + "[run]\nprecision = \"fp8\"\n"), "precision"));
  EXPECT_TRUE(contains(error_of(kHead + "[run]\nmemory_format = \"nhwc\"\n"), "channels-last"));
  EXPECT_TRUE(contains(error_of(kHead + "[baseline]\nprecision = \"int8\"\n"), "bf16"));
  // Swept per stage like any training key.
  const ExperimentSpec swept = parse_spec_string(
      kHead + "[[pipeline]]\nstage = \"finetune\"\nprecision = [\"fp32\", \"bf16\"]\n", "x.toml");
  ASSERT_EQ(swept.dimensions.size(), 1u);
  EXPECT_EQ(swept.dimensions[0].pointer, "/pipeline/0/precision");
}

TEST(Spec, MinimalSpecHasDefaultSectionsAndNoSweep) {
  const ExperimentSpec spec = parse_spec_string(kHead, "x.toml");
  EXPECT_EQ(spec.name, "t");
  EXPECT_EQ(spec.seed, 0u);
  EXPECT_TRUE(spec.dimensions.empty());
  EXPECT_EQ(spec.base_trial["model"]["arch"], "small-cnn");
  EXPECT_EQ(spec.base_trial["baseline"]["epochs"], 3);
  EXPECT_EQ(spec.base_trial["pipeline"], Json::array());
  EXPECT_EQ(spec.run.results_dir, std::filesystem::path("results/t"));
}

TEST(Spec, ReadsRunAndSearchSettings) {
  const ExperimentSpec spec = parse_spec_string(kHead + R"(description = "d"
[run]
results_dir = "out/runs"
threads = 4
max_attempts = 5
[search]
strategy = "random"
max_trials = 12
)",
                                                "x.toml");
  EXPECT_EQ(spec.description, "d");
  EXPECT_EQ(spec.run.results_dir, std::filesystem::path("out/runs"));  // relative stays relative
  EXPECT_EQ(spec.run.threads, 4);
  EXPECT_EQ(spec.run.max_attempts, 5);
  EXPECT_EQ(spec.strategy, "random");
  EXPECT_EQ(spec.max_trials, 12);
}

TEST(Spec, AcceptsIntegersForFloatsAndConvertsThem) {
  const ExperimentSpec spec = parse_spec_string(kHead + "[baseline]\nlr = 1\nweight_decay = [0, 1]\n", "x.toml");
  EXPECT_TRUE(spec.base_trial["baseline"]["lr"].is_number_float());
  EXPECT_DOUBLE_EQ(spec.base_trial["baseline"]["lr"].get<double>(), 1.0);
  ASSERT_EQ(spec.dimensions.size(), 1u);
  EXPECT_TRUE(spec.dimensions[0].values[1].is_number_float());
  EXPECT_EQ(spec.dimensions[0].values, (std::vector<Json>{0.0, 1.0}));
}

TEST(Spec, DimensionsFollowFileOrderNotKeyOrder) {
  const ExperimentSpec spec = parse_spec_string(kHead + R"([baseline]
optimizer = ["sgd", "adam"]
epochs = [1, 2, 3]
[model]
width = [0.5, 1.0]
)",
                                                "x.toml");
  ASSERT_EQ(spec.dimensions.size(), 3u);
  EXPECT_EQ(spec.dimensions[0].label, "baseline.optimizer");
  EXPECT_EQ(spec.dimensions[1].label, "baseline.epochs");
  EXPECT_EQ(spec.dimensions[1].pointer, "/baseline/epochs");
  EXPECT_EQ(spec.dimensions[2].label, "model.width");
  EXPECT_EQ(spec.base_trial["baseline"]["optimizer"], "sgd");
  EXPECT_EQ(spec.base_trial["baseline"]["epochs"], 1);
}

TEST(Spec, ParsesCustomLayersWithDefaults) {
  const ExperimentSpec spec = parse_spec_string(kHead + R"([model]
arch = "custom"
[[model.layers]]
op = "conv"
out = 16
[[model.layers]]
op = "relu"
[[model.layers]]
op = "linear"
name = "head"
inputs = ["relu1"]
out = 10
)",
                                                "x.toml");
  const Json& layers = spec.base_trial["model"]["layers"];
  ASSERT_EQ(layers.size(), 3u);
  EXPECT_EQ(layers[0]["op"], "conv");
  EXPECT_EQ(layers[0]["out"], 16);
  EXPECT_EQ(layers[0]["name"], "");  // named by the model builder
  EXPECT_EQ(layers[0]["inputs"], Json::array());
  EXPECT_EQ(layers[0]["groups"], 1);
  EXPECT_EQ(layers[0]["bias"], true);
  // Every setting not written holds the schema's default.
  EXPECT_EQ(layers[0].size(), layer_spec().params.size());
  for (const ParamSpec& param : layer_spec().params) {
    SCOPED_TRACE(param.name);
    if (param.name == "op" || param.name == "out") continue;
    EXPECT_EQ(layers[0].at(param.name), param.default_value);
  }
  EXPECT_EQ(layers[1]["op"], "relu");
  EXPECT_EQ(layers[1]["out"], 0);
  EXPECT_EQ(layers[2]["name"], "head");
  EXPECT_EQ(layers[2]["inputs"], Json::array({"relu1"}));
  EXPECT_EQ(layers[2]["out"], 10);
  EXPECT_EQ(spec.base_trial["model"]["arch"], "custom");
  EXPECT_TRUE(spec.dimensions.empty());
}

TEST(Spec, SweptArchitectureWithCustomUsesTheLayers) {
  const ExperimentSpec spec = parse_spec_string(kHead + R"([model]
arch = ["resnet8", "custom"]
[[model.layers]]
op = "flatten"
[[model.layers]]
op = "linear"
out = 10
)",
                                                "x.toml");
  ASSERT_EQ(spec.dimensions.size(), 1u);
  EXPECT_EQ(spec.dimensions[0].values, (std::vector<Json>{"resnet8", "custom"}));
  EXPECT_EQ(spec.base_trial["model"]["layers"].size(), 2u);
}

/// An existing folder for [data] path.
std::string data_folder() {
  const std::filesystem::path folder = std::filesystem::path(testing::TempDir()) / "edgesweep_spec_data";
  std::filesystem::create_directories(folder);
  return folder.string();
}

TEST(Spec, FolderDatasetsKeepTheirPath) {
  const ExperimentSpec spec =
      parse_spec_string(kHead + "[data]\ndataset = \"cifar10\"\npath = \"" + data_folder() + "\"\n", "x.toml");
  EXPECT_EQ(spec.base_trial["data"]["dataset"], "cifar10");
  EXPECT_EQ(spec.base_trial["data"]["path"], data_folder());
}

TEST(Spec, ReadsFilesAndNamesThemInErrors) {
  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "edgesweep_spec_test";
  std::filesystem::create_directories(dir);
  const std::filesystem::path good = dir / "good.toml";
  std::ofstream(good) << kExample;
  const ExperimentSpec spec = parse_spec_file(good);
  EXPECT_EQ(spec.path, good);
  EXPECT_EQ(spec.text, kExample);
  EXPECT_EQ(spec.hash, sha256_hex(kExample));

  const std::filesystem::path bad = dir / "bad.toml";
  std::ofstream(bad) << kHead << "[data]\nfoo = 1\n";
  try {
    parse_spec_file(bad);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(bad.string() + ":4:1: unknown key 'foo' in [data]", 0), 0u) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(Spec, UnreadableFileIsAnInputError) {
  try {
    parse_spec_file("/nonexistent/edgesweep/x.toml");
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "cannot read experiment file '/nonexistent/edgesweep/x.toml': No such file or directory");
  }
  const std::string dir = testing::TempDir();
  try {
    parse_spec_file(dir);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "cannot read experiment file '" + dir + "': it is a directory");
  }
}

TEST(SpecErrors, UnknownKeyInSection) {
  EXPECT_EQ(error_of(kHead + "[data]\n  foo = 1\n"),
            "x.toml:4:3: unknown key 'foo' in [data] (known keys: dataset, path, train_subset, test_subset, "
            "val_fraction, augment, image_size, channels, test_fraction, classes, resize, rgb, mean, std, split_seed)");
}

TEST(SpecErrors, UnknownKeyInExperimentThroughADottedKey) {
  EXPECT_EQ(error_of(kHead + "model.arch = \"vgg\"\n").rfind("x.toml:3:1: unknown key 'model' in [experiment]", 0),
            0u);
}

TEST(SpecErrors, UnknownKeyInStage) {
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = \"finetune\"\nsparsity = 0.5\n"),
            "x.toml:5:1: unknown key 'sparsity' in pipeline[0] (stage 'finetune'; known keys: stage, epochs, lr, "
            "optimizer, momentum, nesterov, weight_decay, batch_size, lr_schedule, step_size, gamma, precision, "
            "warmup_epochs, lr_span)");
}

TEST(SpecErrors, UnknownKeyInLayer) {
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[[model.layers]]\nop = \"conv\"\nchannels = 8\n")
                .rfind("x.toml:7:1: unknown key 'channels' in model.layers[0] (known keys: op, name, inputs,", 0),
            0u);
}

TEST(SpecErrors, WrongType) {
  EXPECT_EQ(error_of(kHead + "[baseline]\nepochs = \"three\"\n"),
            "x.toml:4:10: [baseline] 'epochs' must be an integer, got \"three\"");
  EXPECT_EQ(error_of(kHead + "[baseline]\nepochs = 2.0\n"),
            "x.toml:4:10: [baseline] 'epochs' must be an integer, got 2.0");
  EXPECT_EQ(error_of(kHead + "[data]\naugment = 1\n"), "x.toml:4:11: [data] 'augment' must be true or false, got 1");
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = 1979-05-27\n"),
            "x.toml:4:6: [baseline] 'lr' must be a finite number, got a date");
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = nan\n"), "x.toml:4:6: [baseline] 'lr' must be a finite number, got nan");
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = { value = 1 }\n"),
            "x.toml:4:6: [baseline] 'lr' must be a finite number, got a table");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[[model.layers]]\nop = \"add\"\ninputs = [\"a\", 3]\n"),
            "x.toml:7:16: model.layers[0] 'inputs' must be an array of strings, got 3");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[[model.layers]]\nop = \"add\"\ninputs = \"a\"\n"),
            "x.toml:7:10: model.layers[0] 'inputs' must be an array of strings, got \"a\"");
}

TEST(SpecErrors, SectionsMustBeTables) {
  EXPECT_EQ(error_of("baseline = 5\n" + kHead), "x.toml:1:1: 'baseline' must be a table: write it as [baseline]");
  EXPECT_EQ(error_of(kHead + "[pipeline]\nstage = \"train\"\n"),
            "x.toml:3:1: 'pipeline' must be an array of tables: write each stage as [[pipeline]]");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[model.layers]\nop = \"relu\"\n"),
            "x.toml:5:1: [model] 'layers' must be an array of tables: write each layer as [[model.layers]]");
}

TEST(SpecErrors, OutOfRange) {
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = -1.0\n"),
            "x.toml:4:6: [baseline] 'lr' = -1.0 is out of range: must be > 0");
  EXPECT_EQ(error_of(kHead + "[data]\nval_fraction = 0.9\n"),
            "x.toml:4:16: [data] 'val_fraction' = 0.9 is out of range: must be <= 0.5");
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = \"train\"\nbatch_size = 0\n"),
            "x.toml:5:14: pipeline[0] 'batch_size' = 0 is out of range: must be >= 1");
}

TEST(SpecErrors, UnknownChoice) {
  EXPECT_EQ(error_of(kHead + "[baseline]\noptimizer = \"adamw\"\n"),
            "x.toml:4:13: [baseline] 'optimizer' is \"adamw\", expected one of: sgd, adam");
  EXPECT_EQ(error_of(kHead + "[model]\narch = [\"resnet8\", \"resnet50\"]\n"),
            "x.toml:4:20: [model] 'arch' is \"resnet50\", expected one of: small-cnn, vgg, resnet8, resnet20, "
            "mobilenetv2, custom, torchscript");
}

/// The stage list error messages give: every known stage, sorted, comma-separated.
std::string known_stages() {
  std::string joined;
  for (const std::string& name : edgesweep::stage_names()) joined += (joined.empty() ? "" : ", ") + name;
  return joined;
}

TEST(SpecErrors, Stages) {
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = \"sparsify\"\n"),
            "x.toml:4:9: pipeline[0]: unknown stage 'sparsify' (known stages: " + known_stages() + ")");
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = \"train\"\n[[pipeline]]\nlr = 0.1\n"),
            "x.toml:5:1: pipeline[1] is missing required key 'stage' (known stages: " + known_stages() + ")");
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = [\"train\", \"finetune\"]\n"),
            "x.toml:4:9: pipeline[0] 'stage' cannot be swept: write one [[pipeline]] table per stage");
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = 3\n"), "x.toml:4:9: pipeline[0] 'stage' must be a string, got 3");
}

TEST(SpecErrors, UnknownTopLevelKey) {
  const std::string allowed =
      "(allowed: [experiment], [data], [model], [baseline], [search], [run], [objectives], [measure], "
      "[[pipeline]], [[devices]])";
  EXPECT_EQ(error_of(kHead + "[[device]]\nname = \"cpu\"\n"),
            "x.toml:3:3: unknown top-level key 'device' " + allowed);
  EXPECT_EQ(error_of(kHead + "[objective]\n"), "x.toml:3:2: unknown top-level key 'objective' " + allowed);
  EXPECT_EQ(error_of("seed = 3\n" + kHead), "x.toml:1:1: unknown top-level key 'seed' " + allowed);
}

TEST(SpecErrors, Experiment) {
  EXPECT_EQ(error_of("[data]\n"),
            "x.toml:1:1: missing [experiment] section: every spec needs [experiment] with a name");
  EXPECT_EQ(error_of("\n[experiment]\nseed = 1\n"), "x.toml:2:1: [experiment] is missing required key 'name'");
  EXPECT_EQ(error_of("[experiment]\nname = \"my run\"\n"),
            "x.toml:2:8: [experiment] 'name' = \"my run\" is not a valid name: use letters, digits, '.', '_' and "
            "'-' (it names the results folder)");
  EXPECT_EQ(error_of("[experiment]\nname = \"a/b\"\n").rfind("x.toml:2:8: [experiment] 'name' = \"a/b\" is not", 0),
            0u);
  EXPECT_EQ(error_of("[experiment]\nname = \"..\"\n").rfind("x.toml:2:8: [experiment] 'name' = \"..\" is not", 0),
            0u);
  EXPECT_EQ(error_of("[experiment]\nname = \"\"\n").rfind("x.toml:2:8: [experiment] 'name' = \"\" is not", 0), 0u);
  EXPECT_EQ(error_of("[experiment]\nname = \"t\"\nseed = -1\n"),
            "x.toml:3:8: [experiment] 'seed' = -1 is out of range: must be >= 0");
}

TEST(SpecErrors, Sweeps) {
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = []\n"),
            "x.toml:4:6: [baseline] 'lr' = [] is an empty sweep: give at least one value");
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = [0.1, 0.2, 0.1]\n"),
            "x.toml:4:17: [baseline] 'lr' sweeps 0.1 twice (first at 4:7)");
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = [1, 1.0]\n"),
            "x.toml:4:10: [baseline] 'lr' sweeps 1.0 twice (first at 4:7)");
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = [0.1, -1]\n"),
            "x.toml:4:12: [baseline] 'lr' = -1.0 is out of range: must be > 0");
  EXPECT_EQ(error_of(kHead + "[baseline]\nlr = [[0.1], 0.2]\n"),
            "x.toml:4:7: [baseline] 'lr' must be a finite number, got an array");
  EXPECT_EQ(error_of(kHead + "[data]\ndataset = [\"cifar10\"]\n"),
            "x.toml:4:11: [data] 'dataset' cannot be swept: give a string, not an array");
  EXPECT_EQ(error_of(kHead + "[search]\nmax_trials = [1, 2]\n"),
            "x.toml:4:14: [search] 'max_trials' cannot be swept: give an integer, not an array");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[[model.layers]]\nop = \"conv\"\nkernel = [3, 5]\n"),
            "x.toml:7:10: model.layers[0] 'kernel' cannot be swept: give an integer, not an array");
}

TEST(SpecErrors, ModelLayers) {
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n"),
            "x.toml:4:8: [model] arch = \"custom\" needs its layers: add one [[model.layers]] table per layer");
  EXPECT_EQ(error_of(kHead + "[model]\narch = [\"resnet8\", \"custom\"]\n"),
            "x.toml:4:20: [model] arch = \"custom\" needs its layers: add one [[model.layers]] table per layer");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"resnet8\"\n[[model.layers]]\nop = \"relu\"\n"),
            "x.toml:5:1: [model] layers are given but arch = \"resnet8\": set arch = \"custom\" to build them, or "
            "remove the [[model.layers]] tables");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[[model.layers]]\nout = 8\n"),
            "x.toml:5:1: model.layers[0] is missing required key 'op'");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[[model.layers]]\nop = \"conv3d\"\n")
                .rfind("x.toml:6:6: model.layers[0] 'op' is \"conv3d\", expected one of: conv,", 0),
            0u);
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"custom\"\n[[model.layers]]\nop = \"relu\"\nname = \"a\"\n"
                             "[[model.layers]]\nop = \"relu\"\nname = \"a\"\n"),
            "x.toml:10:8: model.layers[1] 'name' = \"a\" is already used by model.layers[0] at 7:8");
}

TEST(SpecErrors, FolderDatasetsNeedAPath) {
  EXPECT_EQ(error_of(kHead + "[data]\ndataset = \"cifar10\"\n"),
            "x.toml:4:11: [data] dataset = \"cifar10\" needs 'path' = the folder that holds it");
  EXPECT_EQ(error_of(kHead + "[data]\npath = \"\"\ndataset = \"imagefolder\"\n"),
            "x.toml:5:11: [data] dataset = \"imagefolder\" needs 'path' = the folder that holds it");
  // A path that is not there is found by validate, not by every task of the run.
  EXPECT_EQ(error_of(kHead + "[data]\ndataset = \"cifar10\"\npath = \"no/such/folder\"\n"),
            "x.toml:5:8: [data] 'path' = \"no/such/folder\" is not an existing folder (relative paths are read from "
            "the working folder)");
  EXPECT_EQ(error_of(kHead + "[data]\npath = \"x.toml\"\n"),
            "x.toml:4:8: [data] 'path' = \"x.toml\" is not an existing folder (relative paths are read from the "
            "working folder)");
}

TEST(SpecErrors, TomlSyntax) {
  EXPECT_EQ(error_of(kHead + "seed = 7 8\n"),
            "x.toml:3:10: Error while parsing key-value pair: expected a comment or whitespace, saw '8'");
  EXPECT_EQ(error_of(kHead + "[experiment]\n"),
            "x.toml:3:1: Error while parsing table header: cannot redefine existing table 'experiment'");
}

TEST(SpecErrors, UsesTheSourceName) {
  try {
    parse_spec_string("[experiment]\nname = 3\n", "<string>");
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "<string>:2:8: [experiment] 'name' must be a string, got 3");
  }
}

}  // namespace
}  // namespace edgesweep

namespace edgesweep {
namespace {

TEST(SpecErrors, QuantizeMustBeTheLastStage) {
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = \"quantize\"\nmode = \"static-int8\"\n[[pipeline]]\n"
                             "stage = \"finetune\"\n"),
            "x.toml:4:9: pipeline[0] (quantize) must be the last stage: its result is an int8 TorchScript module "
            "that no later stage can take, but pipeline[1] follows it");
  EXPECT_NO_THROW(parse_spec_string(
      kHead + "[[pipeline]]\nstage = \"finetune\"\n[[pipeline]]\nstage = \"quantize\"\nmode = \"none\"\n", "x.toml"));
}

TEST(SpecErrors, DataClasses) {
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = []\n"),
            "x.toml:4:11: [data] 'classes' = [] is empty: list at least 2 class indices, or leave the key out to keep "
            "every class");
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = [3]\n"),
            "x.toml:4:11: [data] 'classes' = [3] keeps 1 class; a classifier needs at least 2");
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = [5, 6, 5]\n"),
            "x.toml:4:18: [data] 'classes' = [5,6,5] names class 5 twice (first at 4:12)");
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = [5, 10]\n"),
            "x.toml:4:15: [data] 'classes' = [5,10] holds 10, but fashion-mnist has 10 classes (0..9)");
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = [-1, 2]\n"),
            "x.toml:4:12: [data] 'classes' = [-1,2] holds -1; class indices count from 0");
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = [5, 6.5]\n"),
            "x.toml:4:15: [data] 'classes' must be an array of integers, got 6.5");
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = [5, \"6\"]\n"),
            "x.toml:4:15: [data] 'classes' must be an array of integers, got \"6\"");
  EXPECT_EQ(error_of(kHead + "[data]\nclasses = 5\n"),
            "x.toml:4:11: [data] 'classes' must be an array of integers, got 5");
  EXPECT_EQ(error_of(kHead + "[data]\ndataset = \"cifar10\"\npath = \"" + data_folder() + "\"\nclasses = [0, 10]\n"),
            "x.toml:6:15: [data] 'classes' = [0,10] holds 10, but cifar10 has 10 classes (0..9)");

  // An image folder's classes are its subfolders, counted when the folder is there.
  const std::filesystem::path folder = std::filesystem::path(testing::TempDir()) / "edgesweep_spec_classes";
  for (const char* name : {"ant", "bee", "cow"}) std::filesystem::create_directories(folder / name);
  const std::string images = kHead + "[data]\ndataset = \"imagefolder\"\npath = \"" + folder.string() + "\"\n";
  EXPECT_EQ(error_of(images + "classes = [0, 3]\n"),
            "x.toml:6:15: [data] 'classes' = [0,3] holds 3, but imagefolder has 3 classes (0..2)");
  EXPECT_EQ(parse_spec_string(images + "classes = [2, 0]\n", "x.toml").base_trial["data"]["classes"],
            Json({2, 0}));
  std::filesystem::remove_all(folder);
}

TEST(Spec, ClassesAreKeptInTheirOrderAndNotSwept) {
  const ExperimentSpec spec = parse_spec_string(kHead + "[data]\nclasses = [9, 5, 7]\n", "x.toml");
  EXPECT_EQ(spec.base_trial["data"]["classes"], Json({9, 5, 7}));
  EXPECT_TRUE(spec.dimensions.empty());
  EXPECT_EQ(spec.base_trial.get<TrialConfig>().data.classes, (std::vector<int64_t>{9, 5, 7}));
  EXPECT_EQ(Json(spec.base_trial.get<TrialConfig>()), spec.base_trial);
}

TEST(SpecErrors, BaselineInitIsAnExistingFile) {
  EXPECT_EQ(error_of(kHead + "[baseline]\ninit = \"gone.pt\"\n"),
            "x.toml:4:8: [baseline] 'init' = \"gone.pt\" is not an existing file (an edgesweep float archive, e.g. "
            "results/cache/<baseline hash>.pt, the path `edgesweep validate` prints for the experiment that trained "
            "it; relative paths are read from the working folder)");
  EXPECT_EQ(error_of(kHead + "[baseline]\ninit = [\"a.pt\", \"b.pt\"]\n"),
            "x.toml:4:8: [baseline] 'init' cannot be swept: give a string, not an array");
  EXPECT_EQ(error_of(kHead + "[baseline]\ninit_sha256 = \"00\"\n").rfind("x.toml:4:1: unknown key 'init_sha256'", 0),
            0u);
}

/// The baseline hash of the one trial of `text`.
std::string baseline_hash_of(const std::string& text) {
  const std::vector<TrialConfig> trials = expand_trials(parse_spec_string(text, "x.toml"));
  EXPECT_EQ(trials.size(), 1u);
  return baseline_hash(trials.front());
}

TEST(Spec, BaselineHashFollowsClassesAndTheInitArchive) {
  const std::filesystem::path folder = std::filesystem::path(testing::TempDir()) / "edgesweep_spec_init";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "a.pt") << "archive a";
  std::ofstream(folder / "b.pt") << "archive b";
  const auto with_init = [&](const std::string& file, const std::string& data = "") {
    return kHead + data + "[baseline]\ninit = \"" + (folder / file).string() + "\"\n";
  };
  const ExperimentSpec spec = parse_spec_string(with_init("a.pt"), "x.toml");
  EXPECT_EQ(spec.base_trial["baseline"]["init"], (folder / "a.pt").string());
  EXPECT_EQ(spec.base_trial["baseline"]["init_sha256"], sha256_hex("archive a"));

  const std::vector<std::string> hashes = {
      baseline_hash_of(kHead),
      baseline_hash_of(kHead + "[data]\nclasses = [5, 6, 7, 8, 9]\n"),
      baseline_hash_of(kHead + "[data]\nclasses = [0, 1, 2, 3, 4]\n"),
      baseline_hash_of(kHead + "[data]\nclasses = [9, 8, 7, 6, 5]\n"),
      baseline_hash_of(with_init("a.pt")),
      baseline_hash_of(with_init("b.pt")),
      baseline_hash_of(with_init("a.pt", "[data]\nclasses = [5, 6, 7, 8, 9]\n")),
  };
  for (size_t i = 0; i < hashes.size(); ++i) {
    for (size_t j = 0; j < i; ++j) EXPECT_NE(hashes[i], hashes[j]) << "configs " << j << " and " << i;
  }
  EXPECT_EQ(baseline_hash_of(with_init("a.pt")), hashes[4]);
  // The file's content counts: other bytes under the same path give another hash.
  std::ofstream(folder / "a.pt") << "archive a, trained again";
  EXPECT_NE(baseline_hash_of(with_init("a.pt")), hashes[4]);
  std::filesystem::remove_all(folder);
}

TEST(Spec, ConfigsWithoutClassesOrInitKeepTheirFormAndHash) {
  const ExperimentSpec spec = parse_spec_string(kExample, "x.toml");
  EXPECT_FALSE(spec.base_trial["data"].contains("classes"));
  EXPECT_FALSE(spec.base_trial["baseline"].contains("init"));
  EXPECT_FALSE(spec.base_trial["baseline"].contains("init_sha256"));
  // Configs recorded before the keys existed still read, with every class and fresh weights.
  Json recorded = spec.base_trial;
  const TrialConfig config = recorded.get<TrialConfig>();
  EXPECT_TRUE(config.data.classes.empty());
  EXPECT_TRUE(config.baseline.init.empty());
  // The ResNet-20 targets' baseline, cached under this hash by the version before the keys existed.
  EXPECT_EQ(baseline_hash_of(kHead + "seed = 3\n[data]\ndataset = \"fashion-mnist\"\ntrain_subset = 12000\n"
                                     "val_fraction = 0.05\n[model]\narch = \"resnet20\"\n[baseline]\nepochs = 10\n"
                                     "lr = 0.1\nbatch_size = 128\n"),
            "cea9272a68def63e9165d0314aaf7d1e4d66229235169afc1ebbfd515687febf");
}

TEST(SpecErrors, TorchScriptModels) {
  const std::filesystem::path folder = std::filesystem::path(testing::TempDir()) / "edgesweep_spec_torchscript";
  std::filesystem::create_directories(folder);
  std::ofstream(folder / "net.pt") << "an archive";
  const std::string path = (folder / "net.pt").string();
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"torchscript\"\n"),
            "x.toml:4:8: [model] arch = \"torchscript\" needs 'path', the TorchScript archive of your network; hint: "
            "scripts/torchvision-model writes one for a torchvision network");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"torchscript\"\npath = \"gone.pt\"\ninput_shape = [1, 28, 28]\n"),
            "x.toml:5:8: [model] 'path' = \"gone.pt\" is not an existing file (relative paths are read from the "
            "working folder)");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"torchscript\"\npath = \"" + path + "\"\ninput_shape = [28, 28]\n"),
            "x.toml:6:15: [model] arch = \"torchscript\" needs 'input_shape' = [C, H, W] of three positive sizes, got "
            "[28,28]");
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"resnet8\"\npath = \"" + path + "\"\n"),
            "x.toml:5:8: [model] 'path' is for arch = \"torchscript\" only (arch is \"resnet8\")");
  // The data must give what the network takes; the hint says how.
  EXPECT_EQ(error_of(kHead + "[model]\narch = \"torchscript\"\npath = \"" + path + "\"\ninput_shape = [3, 64, 64]\n"),
            "x.toml:6:15: [model] 'input_shape' = [3,64,64], but [data] gives fashion-mnist images of [1,28,28]; hint: "
            "set [data] resize = 64 and rgb = true (and mean and std to what the network was trained with)");
  const ExperimentSpec fits = parse_spec_string(
      kHead + "[data]\nresize = 64\nrgb = true\n[model]\narch = \"torchscript\"\npath = \"" + path +
          "\"\ninput_shape = [3, 64, 64]\n",
      "x.toml");
  EXPECT_EQ(fits.base_trial["model"]["path_sha256"], sha256_hex("an archive"));
  EXPECT_EQ(fits.base_trial["model"]["input_shape"], Json({3, 64, 64}));
  EXPECT_EQ(fits.base_trial["data"]["resize"], 64);
  EXPECT_EQ(fits.base_trial["data"]["rgb"], true);
  // The archive's content is part of the baseline hash.
  const std::string text = kHead + "[data]\nresize = 64\nrgb = true\n[model]\narch = \"torchscript\"\npath = \"" +
                           path + "\"\ninput_shape = [3, 64, 64]\n";
  const std::string before = baseline_hash_of(text);
  std::ofstream(folder / "net.pt") << "another archive";
  EXPECT_NE(baseline_hash_of(text), before);
  std::filesystem::remove_all(folder);
}

TEST(SpecErrors, DataNormalisation) {
  EXPECT_EQ(error_of(kHead + "[data]\nmean = [0.5]\n"),
            "x.toml:4:8: [data] 'mean' = [0.5] and 'std' = [] need the same number of values, one per channel");
  EXPECT_EQ(error_of(kHead + "[data]\nmean = [128.0]\nstd = [0.5]\n"),
            "x.toml:4:8: [data] 'mean' = [128.0]: each value is in [0, 1] units, got 128.0");
  EXPECT_EQ(error_of(kHead + "[data]\nmean = [0.5]\nstd = [0.0]\n"),
            "x.toml:5:7: [data] 'std' = [0.0]: each value must be positive, got 0.0");
  const ExperimentSpec spec = parse_spec_string(kHead + "[data]\nmean = [0.5]\nstd = [0.25]\n", "x.toml");
  EXPECT_EQ(spec.base_trial["data"]["mean"], Json({0.5}));
  EXPECT_FALSE(parse_spec_string(kExample, "x.toml").base_trial["data"].contains("resize"));
  EXPECT_FALSE(parse_spec_string(kExample, "x.toml").base_trial["model"].contains("path"));
}

// A key added after stores exist (prune's `regrow`) stays out of a config that leaves it out, so the trials of an
// experiment recorded before keep their hashes and `--resume` finds them.
TEST(Spec, KeysAddedLaterStayOutOfConfigsThatLeaveThemOut) {
  const std::string movement =
      kHead + "[[pipeline]]\nstage = \"prune\"\nmethod = \"movement\"\nsparsity = 0.5\nschedule = \"agp\"\n";
  EXPECT_FALSE(parse_spec_string(movement, "x.toml").base_trial["pipeline"][0].contains("regrow"));
  EXPECT_EQ(parse_spec_string(movement + "regrow = false\n", "x.toml").base_trial["pipeline"][0].at("regrow"), false);
  // The first trial of experiments/compression-menu.toml, as its store recorded it before `regrow` existed.
  const std::vector<TrialConfig> menu =
      expand_trials(parse_spec_file(EDGESWEEP_SOURCE_DIR "/experiments/compression-menu.toml"));
  ASSERT_FALSE(menu.empty());
  EXPECT_EQ(trial_hash(menu.front()), "a3a854620f07060dfcc5b686305a2af79bd27adcdb181ffea9a3d247a2c0e333");
}

TEST(SpecErrors, DistillTeacherIsTheBaselineOrAnExistingFile) {
  EXPECT_EQ(error_of(kHead + "[[pipeline]]\nstage = \"distill\"\nteacher = [\"baseline\", \"gone.pt\"]\n"),
            "x.toml:5:24: pipeline[0] 'teacher' = \"gone.pt\" is neither baseline nor an existing file (an "
            "edgesweep archive, e.g. results/<name>/artifacts/<sha256>.pt)");
  const std::string existing = EDGESWEEP_SOURCE_DIR "/experiments/quickstart.toml";  // any file passes the check
  const ExperimentSpec spec = parse_spec_string(
      kHead + "[[pipeline]]\nstage = \"distill\"\nteacher = [\"baseline\", \"" + existing + "\"]\n", "x.toml");
  EXPECT_EQ(spec.dimensions.size(), 1u);
}

TEST(Spec, SameExperimentIgnoresCommentsSpacingAndKeyOrderButNotSettings) {
  const std::string text = kHead + "seed = 3  # the seed\n[model]\narch = \"resnet20\"\nwidth = 1.0\n";
  EXPECT_TRUE(same_experiment(text, "# a note\n" + kHead + "seed=3\n\n[model]\nwidth = 1.0\narch = \"resnet20\"\n"));
  EXPECT_FALSE(same_experiment(text, kHead + "seed = 4\n[model]\narch = \"resnet20\"\nwidth = 1.0\n"));
  EXPECT_FALSE(same_experiment(text, kHead + "seed = 3\n[model]\narch = \"resnet20\"\n"));  // a default spelled out
  EXPECT_FALSE(same_experiment(text, "[experiment\n"));
}

// Trials of a sweep over the last stage share the stages before it; any other difference (an earlier stage's
// setting, the baseline) separates them.
TEST(SharedStages, TrialsDifferingOnlyInTheirLastStageShareAKey) {
  const ExperimentSpec spec = parse_spec_string(kHead + R"([model]
arch = ["small-cnn", "resnet8"]

[[pipeline]]
stage = "prune"
method = "block"
sparsity = [0.3, 0.5]

[[pipeline]]
stage = "quantize"
mode = ["none", "static-int8", "qat-int8"]
)",
                                                "x.toml");
  const std::vector<TrialConfig> trials = expand_trials(spec);
  ASSERT_EQ(trials.size(), 12u);
  std::map<std::string, std::set<std::string>> modes_by_key;
  for (const TrialConfig& trial : trials) {
    modes_by_key[shared_stages_key(trial)].insert(trial.pipeline.back().params.at("mode").get<std::string>());
  }
  EXPECT_EQ(modes_by_key.size(), 4u);  // 2 architectures x 2 sparsities
  for (const auto& [key, modes] : modes_by_key) {
    EXPECT_FALSE(key.empty());
    EXPECT_EQ(modes.size(), 3u);
  }
  TrialConfig other_seed = trials.front();
  other_seed.seed += 1;  // another baseline
  EXPECT_NE(shared_stages_key(other_seed), shared_stages_key(trials.front()));
  TrialConfig one_stage = trials.front();
  one_stage.pipeline.resize(1);
  EXPECT_EQ(shared_stages_key(one_stage), "");
}

TEST(SharedStages, TheNextTaskIsOneWhoseStagesNoRunningTaskIsComputing) {
  EXPECT_EQ(pick_next_task({"a", "a", "b"}, {}), 0u);
  EXPECT_EQ(pick_next_task({"a", "a", "b"}, {"a"}), 2u);      // b goes first; the a's wait for the running a
  EXPECT_EQ(pick_next_task({"a", "", "b"}, {"a", "b"}), 1u);  // a baseline (no key) never waits
  EXPECT_EQ(pick_next_task({"a", "b"}, {"a", "b", "b"}), 0u);  // every one shares: the first, rather than idle
}

}  // namespace
}  // namespace edgesweep
