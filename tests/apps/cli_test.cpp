// End-to-end tests of the commands that train nothing: `validate` (error positions, trial counts, baseline cache
// paths) and `query` (rows as JSON, writes refused).
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"
#include "edgesweep/common/json.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep::apps_test {
namespace {

using CliTest = AppTest;

TEST_F(CliTest, ValidateNamesTheFileLineAndColumnOfAnUnknownKey) {
  // Line 6, column 3: a misspelt key, indented.
  const fs::path spec = write_file("typo.toml", fmt::format(R"toml([experiment]
name = "typo"

[data]
train_subset = 1000
  trian_subset = 5

[run]
results_dir = '{}'
)toml",
                                                            results_dir_.string()));
  const ProcessResult result = edgesweep({"validate", spec.string()});
  ASSERT_FALSE(result.timed_out) << describe(result);
  EXPECT_EQ(result.exit_code, 2) << describe(result);
  EXPECT_TRUE(contains(result.err, spec.string() + ":6:3:")) << describe(result);
  EXPECT_TRUE(contains(result.err, "trian_subset")) << describe(result);
  EXPECT_TRUE(contains(result.err, "train_subset")) << "the known keys are listed\n" << describe(result);

  // The same inside a pipeline stage: line 9, column 1.
  const fs::path stage = write_file("stage_typo.toml", fmt::format(R"toml([experiment]
name = "stage-typo"

[run]
results_dir = '{}'

[[pipeline]]
stage = "finetune"
learning_rate = 0.01
)toml",
                                                                  results_dir_.string()));
  const ProcessResult stage_result = edgesweep({"validate", stage.string()});
  EXPECT_EQ(stage_result.exit_code, 2) << describe(stage_result);
  EXPECT_TRUE(contains(stage_result.err, stage.string() + ":9:1:")) << describe(stage_result);
  EXPECT_TRUE(contains(stage_result.err, "learning_rate")) << describe(stage_result);
  EXPECT_FALSE(fs::exists(results_dir_)) << "validate must not create the results folder";
}

TEST_F(CliTest, ValidatePrintsTheTrialCount) {
  const fs::path spec = write_file("good.toml", tiny_experiment("good", results_dir_, "arch = [\"small-cnn\", \"vgg\"]",
                                                                R"toml([[pipeline]]
stage = "finetune"
lr = [0.001, 0.005, 0.01]
)toml"));
  const ProcessResult result = edgesweep({"validate", spec.string()});
  ASSERT_FALSE(result.timed_out) << describe(result);
  ASSERT_EQ(result.exit_code, 0) << describe(result);
  EXPECT_TRUE(contains(result.out, "experiment 'good'")) << describe(result);
  EXPECT_TRUE(contains(result.out, ": 6 trial(s)")) << describe(result);
  EXPECT_TRUE(contains(result.out, "swept model.arch")) << describe(result);
  EXPECT_TRUE(contains(result.out, "swept pipeline[0].lr")) << describe(result);
  EXPECT_FALSE(fs::exists(results_dir_)) << "validate must not create the results folder";

  // The shipped quickstart: 2 learning rates x 2 optimizers.
  const ProcessResult quickstart =
      edgesweep({"validate", std::string(EDGESWEEP_SOURCE_DIR) + "/experiments/quickstart.toml"});
  ASSERT_EQ(quickstart.exit_code, 0) << describe(quickstart);
  EXPECT_TRUE(contains(quickstart.out, ": 4 trial(s)")) << describe(quickstart);
}

TEST_F(CliTest, ValidateAndRunRefuseCudaWhereThisLibTorchOrMachineHasNone) {
  const fs::path spec = write_file(
      "gpu.toml", tiny_experiment("gpu", results_dir_, "arch = \"small-cnn\"", "") + "device = \"cuda\"\n");
  const ProcessResult validate = edgesweep({"validate", spec.string()});
  ASSERT_FALSE(validate.timed_out) << describe(validate);
  if (validate.exit_code == 0) GTEST_SKIP() << "this build and machine can train on a GPU";
  EXPECT_EQ(validate.exit_code, 2) << describe(validate);
  EXPECT_TRUE(contains(validate.err, spec.string() + ": [run] device = \"cuda\", but ")) << describe(validate);
  // Debian's LibTorch, or a CUDA one on a machine without a visible GPU.
  EXPECT_TRUE(contains(validate.err, "LibTorch without CUDA") || contains(validate.err, "no GPU is visible"))
      << describe(validate);
  const ProcessResult run = edgesweep({"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  EXPECT_EQ(run.exit_code, 2) << describe(run);
  EXPECT_TRUE(contains(run.err, "[run] device = \"cuda\", but ")) << describe(run);
  EXPECT_FALSE(fs::exists(results_dir_ / "edgesweep.db")) << "nothing is recorded for a run that cannot start";
  // An unknown device is named with its line.
  const fs::path typo = write_file(
      "typo-device.toml", tiny_experiment("typo", results_dir_, "arch = \"small-cnn\"", "") + "device = \"gpu\"\n");
  const ProcessResult unknown = edgesweep({"validate", typo.string()});
  EXPECT_EQ(unknown.exit_code, 2) << describe(unknown);
  EXPECT_TRUE(contains(unknown.err, "gpu")) << describe(unknown);
  EXPECT_TRUE(contains(unknown.err, "cuda")) << "the allowed values are listed\n" << describe(unknown);
}

TEST_F(CliTest, ValidateAndRunRefuseAPrecisionTheCpuCannotTrainIn) {
  // fp16 on the CPU, swept in a stage: refused before anything runs, naming the file.
  const fs::path spec = write_file("fp16.toml", tiny_experiment("fp16", results_dir_, "arch = \"small-cnn\"",
                                                                R"toml([[pipeline]]
stage = "finetune"
precision = ["bf16", "fp16"]
)toml"));
  const ProcessResult validate = edgesweep({"validate", spec.string()});
  ASSERT_FALSE(validate.timed_out) << describe(validate);
  EXPECT_EQ(validate.exit_code, 2) << describe(validate);
  EXPECT_TRUE(contains(validate.err, spec.string() + ": precision = \"fp16\" on the CPU")) << describe(validate);
  const ProcessResult run = edgesweep({"run", spec.string()});
  EXPECT_EQ(run.exit_code, 2) << describe(run);
  EXPECT_FALSE(fs::exists(results_dir_ / "edgesweep.db")) << "nothing is recorded for a run that cannot start";
}

TEST_F(CliTest, ValidateChecksClassesAndInitAndPrintsWhereTheBaselineIsCached) {
  const auto spec_with = [&](const std::string& name, const std::string& init) {
    return write_file(name + ".toml", fmt::format(R"toml([experiment]
name = "{}"

[data]
classes = [5, 6, 7]

[baseline]
init = '{}'

[run]
results_dir = '{}'
)toml",
                                                  name, init, (results_dir_ / name).string()));
  };
  // A missing archive: refused at its value, line 8, column 8, before anything runs.
  const fs::path missing = spec_with("missing", (results_dir_ / "gone.pt").string());
  const ProcessResult refused = edgesweep({"validate", missing.string()});
  ASSERT_FALSE(refused.timed_out) << describe(refused);
  EXPECT_EQ(refused.exit_code, 2) << describe(refused);
  EXPECT_TRUE(contains(refused.err, missing.string() + ":8:8: [baseline] 'init' = ")) << describe(refused);
  EXPECT_TRUE(contains(refused.err, "is not an existing file")) << describe(refused);

  // So is a class list with a class twice, at the second one.
  const fs::path twice = write_file("twice.toml", "[experiment]\nname = \"twice\"\n[data]\nclasses = [5, 6, 5]\n");
  const ProcessResult twice_result = edgesweep({"validate", twice.string()});
  EXPECT_EQ(twice_result.exit_code, 2) << describe(twice_result);
  EXPECT_TRUE(contains(twice_result.err, twice.string() + ":4:18: [data] 'classes' = [5,6,5] names class 5 twice"))
      << describe(twice_result);

  // Any existing file passes validate (the worker checks that it is an archive of the same network).
  const fs::path archive = write_file("pretrained.pt", "bytes standing for an archive");
  const fs::path good = spec_with("good", archive.string());
  const ProcessResult result = edgesweep({"validate", good.string()});
  ASSERT_EQ(result.exit_code, 0) << describe(result);
  const std::string hash = baseline_hash(expand_trials(parse_spec_file(good)).front());
  const fs::path cached = results_dir_ / "cache" / (hash + ".pt");
  EXPECT_TRUE(contains(result.out, "baseline cache: " + cached.string() + " (not trained yet)")) << describe(result);
  EXPECT_FALSE(fs::exists(results_dir_)) << "validate must not create the results folder";
}

TEST_F(CliTest, QueryReturnsRowsAsJsonAndRefusesWrites) {
  const fs::path db = results_dir_ / "edgesweep.db";
  {
    Store store = Store::open(db, Store::Mode::ReadWrite);
    const int64_t experiment = store.create_experiment("query", "[experiment]\nname = \"query\"\n", "0123abcd");
    for (int i = 0; i < 3; ++i) store.add_trial(experiment, "trial", Json{{"i", i}}, fmt::format("hash-{}", i));
  }

  const ProcessResult count = edgesweep({"query", db.string(), "SELECT count(*) AS n FROM trials"});
  ASSERT_FALSE(count.timed_out) << describe(count);
  ASSERT_EQ(count.exit_code, 0) << describe(count);
  Json rows;
  ASSERT_NO_THROW(rows = Json::parse(count.out)) << describe(count);
  EXPECT_EQ(rows, Json::parse(R"([{"n": 3}])"));

  // The results folder names the same store; columns keep their SQL types.
  const ProcessResult listed =
      edgesweep({"query", results_dir_.string(), "SELECT id, kind, status, attempts FROM trials ORDER BY id"});
  ASSERT_EQ(listed.exit_code, 0) << describe(listed);
  ASSERT_NO_THROW(rows = Json::parse(listed.out)) << describe(listed);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], Json::parse(R"({"id": 1, "kind": "trial", "status": "pending", "attempts": 0})"));

  for (const char* write : {"DELETE FROM trials", "UPDATE trials SET status = 'done'",
                            "SELECT 1; DELETE FROM trials", "DROP TABLE trials"}) {
    SCOPED_TRACE(write);
    const ProcessResult refused = edgesweep({"query", db.string(), write});
    ASSERT_FALSE(refused.timed_out) << describe(refused);
    EXPECT_EQ(refused.exit_code, 2) << describe(refused);  // the statement is bad input
    EXPECT_TRUE(contains(refused.err, "error:")) << describe(refused);
    EXPECT_TRUE(refused.out.empty()) << describe(refused);
  }

  // A statement without an end is stopped at its time limit; fts3_tokenizer is not reachable.
  const ProcessResult endless = edgesweep({"query", db.string(), "--timeout", "1",
                                           "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                                           "SELECT count(*) FROM n"});
  ASSERT_FALSE(endless.timed_out) << describe(endless);
  EXPECT_EQ(endless.exit_code, 2) << describe(endless);
  EXPECT_TRUE(contains(endless.err, "query stopped after 1 s (its time limit)")) << describe(endless);
  const ProcessResult tokenizer =
      edgesweep({"query", db.string(), "SELECT fts3_tokenizer('simple', x'0000000000000000')"});
  EXPECT_EQ(tokenizer.exit_code, 2) << describe(tokenizer);
  EXPECT_TRUE(contains(tokenizer.err, "refuses the function fts3_tokenizer()")) << describe(tokenizer);

  // No store where the target points: bad input, exit 2, the path named.
  for (const fs::path& missing : {folder_ / "nowhere.db", folder_ / "empty-folder"}) {
    fs::create_directories(folder_ / "empty-folder");
    for (const char* command : {"query", "status", "trials", "report"}) {
      std::vector<std::string> args = {command, missing.string()};
      if (std::string(command) == "query") args.push_back("SELECT 1");
      const ProcessResult result = edgesweep(args);
      EXPECT_EQ(result.exit_code, 2) << describe(result);
      EXPECT_TRUE(contains(result.err, "no store at '")) << describe(result);
    }
  }

  const Store store = Store::open(db, Store::Mode::ReadOnly);
  const auto trials = trials_of(store, "query");
  ASSERT_EQ(trials.size(), 3u);
  for (const TrialRow& t : trials) EXPECT_EQ(t.status, TrialStatus::Pending);
}

}  // namespace
}  // namespace edgesweep::apps_test
