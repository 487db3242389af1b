// Tests of trials run whole by run_task: the stages a trial shares with an earlier trial of the same baseline are taken
// from it, give what running them again gives, and a damaged kept file is passed over, never trusted.
#include "edgesweep/workers/run_task.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "edgesweep/common/task.h"
#include "fake_datasets.h"
#include "stage_configs.h"
#include "temp_folder.h"
#include "tiny_tasks.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

double final_metric(const TaskResult& result, const std::string& name) {
  for (const Metric& m : result.metrics) {
    if (m.name == name && m.step == -1) return m.value;
  }
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

std::vector<Metric> per_epoch(const TaskResult& result) {
  std::vector<Metric> epochs;
  for (const Metric& m : result.metrics) {
    if (m.step >= 1 && m.name != "images_per_second" && m.name != "input_wait_seconds") epochs.push_back(m);
  }
  return epochs;
}

size_t count_files(const fs::path& folder, const std::string& extension) {
  size_t n = 0;
  if (!fs::exists(folder)) return 0;
  for (const auto& entry : fs::directory_iterator(folder)) n += entry.path().extension() == extension ? 1 : 0;
  return n;
}

class TrialPrefix : public ::testing::Test {
 protected:
  void SetUp() override {
    write_fashion_mnist_folder(folder_ / "data", labels_with_counts(std::vector<int>(10, 12)),
                               labels_with_counts(std::vector<int>(10, 4)));
  }

  /// The baseline of `results` (trained once per folder) and a trial on it: prune 50 % with one fine-tuning epoch,
  /// distil for one epoch at `distill_lr`, then quantize in `mode`.
  Task trial(const fs::path& results, int64_t id, const std::string& mode, double distill_lr = 0.05) {
    Task task = baseline_task(folder_ / "data", results, {0, 1, 2}, 1);
    const std::string key = results.string();
    if (baselines_.count(key) == 0) {
      const TaskResult baseline = run_task(task);
      EXPECT_TRUE(baseline.ok) << baseline.error;
      baselines_[key] = baseline.artifacts.at(0);
    }
    task.kind = "trial";
    task.trial_id = id;
    task.baseline_path = baselines_[key].path;
    task.baseline_sha256 = baselines_[key].sha256;
    task.config.pipeline = {
        stage_config("prune", {{"method", "magnitude-global"}, {"sparsity", 0.5}, {"finetune_epochs", 1},
                               {"batch_size", 16}}),
        stage_config("distill", {{"epochs", 1}, {"lr", distill_lr}, {"batch_size", 16}}),
        stage_config("quantize", {{"mode", mode}, {"calibration_batches", 2}})};
    return task;
  }

  TempFolder folder_{"trial-prefix"};
  std::map<std::string, ArtifactRecord> baselines_;
};

TEST_F(TrialPrefix, ATrialStartsAfterTheStagesItSharesWithAnEarlierOne) {
  const fs::path results = folder_ / "results";
  const TaskResult first = run_task(trial(results, 2, "none"));
  ASSERT_TRUE(first.ok) << first.error;
  EXPECT_EQ(final_metric(first, "reused_stages"), 0.0);
  EXPECT_EQ(count_files(results / "prefixes", ".pt"), 2u);  // after prune, and after prune + distill
  EXPECT_EQ(count_files(results / "prefixes", ".json"), 2u);

  // Another quantize mode: both earlier stages are taken, with their records.
  const TaskResult second = run_task(trial(results, 3, "static-int8"));
  ASSERT_TRUE(second.ok) << second.error;
  EXPECT_EQ(final_metric(second, "reused_stages"), 2.0);
  const std::vector<Metric> first_epochs = per_epoch(first), second_epochs = per_epoch(second);
  ASSERT_EQ(first_epochs.size(), second_epochs.size());
  for (size_t k = 0; k < first_epochs.size(); ++k) {
    EXPECT_EQ(first_epochs[k].name, second_epochs[k].name);
    EXPECT_EQ(first_epochs[k].value, second_epochs[k].value) << first_epochs[k].name;
  }
  for (const char* name : {"sparsity", "val_accuracy_after_finetune", "val_accuracy_after_distill"}) {
    EXPECT_EQ(final_metric(first, name), final_metric(second, name)) << name;
  }

  // The same trial from the start, in a folder of its own, exports the same file: reuse changes nothing.
  const TaskResult fresh = run_task(trial(folder_ / "fresh", 3, "static-int8"));
  ASSERT_TRUE(fresh.ok) << fresh.error;
  EXPECT_EQ(final_metric(fresh, "reused_stages"), 0.0);
  EXPECT_EQ(fresh.artifacts.at(0).sha256, second.artifacts.at(0).sha256);

  // Another distillation rate shares only the prune stage.
  const TaskResult other = run_task(trial(results, 4, "none", 0.02));
  ASSERT_TRUE(other.ok) << other.error;
  EXPECT_EQ(final_metric(other, "reused_stages"), 1.0);
  EXPECT_EQ(count_files(results / "prefixes", ".pt"), 3u);
}

TEST_F(TrialPrefix, AStageInTheTrialsLearningRateSpanIsSharedOnlyWithTheSameSpan) {
  // The prune and distill stages anneal as one schedule: with a longer distillation, the prune stage's fine-tuning
  // ran on another curve, so its kept model is not taken; with the same span it is.
  const fs::path results = folder_ / "results";
  const auto spanning = [&](int64_t id, int64_t distill_epochs, const std::string& mode) {
    Task task = trial(results, id, mode);
    task.config.pipeline[0].params["lr_span"] = "trial";
    task.config.pipeline[1].params["lr_span"] = "trial";
    task.config.pipeline[1].params["epochs"] = distill_epochs;
    return task;
  };
  ASSERT_TRUE(run_task(spanning(2, 1, "none")).ok);
  const TaskResult longer = run_task(spanning(3, 2, "none"));
  ASSERT_TRUE(longer.ok) << longer.error;
  EXPECT_EQ(final_metric(longer, "reused_stages"), 0.0);
  const TaskResult same = run_task(spanning(4, 1, "static-int8"));
  ASSERT_TRUE(same.ok) << same.error;
  EXPECT_EQ(final_metric(same, "reused_stages"), 2.0);
  // One cosine over the three epochs (prune's fine-tuning, then two of distillation) at each stage's own rate.
  std::vector<double> rates;
  for (const Metric& m : longer.metrics) {
    if (m.name == "lr") rates.push_back(m.value);
  }
  ASSERT_EQ(rates.size(), 3u);
  EXPECT_DOUBLE_EQ(rates[0], stage_config("prune", Json::object()).params.at("lr").get<double>());  // the schema's 0.01
  EXPECT_NEAR(rates[1], 0.05 * 0.5 * (1 + std::cos(M_PI / 3)), 1e-12);
  EXPECT_NEAR(rates[2], 0.05 * 0.5 * (1 + std::cos(2 * M_PI / 3)), 1e-12);
}

TEST_F(TrialPrefix, ADamagedKeptFileIsPassedOver) {
  const fs::path results = folder_ / "results";
  ASSERT_TRUE(run_task(trial(results, 2, "none")).ok);
  // Damage the longer prefix's archive (its recorded sha256 no longer matches) and the shorter one's sidecar.
  std::map<int, fs::path> by_stages;
  for (const auto& entry : fs::directory_iterator(results / "prefixes")) {
    if (entry.path().extension() != ".json") continue;
    std::ifstream in(entry.path());
    by_stages[Json::parse(in).at("stages").get<int>()] = entry.path();
  }
  ASSERT_EQ(by_stages.size(), 2u);
  std::ofstream(fs::path(by_stages[2]).replace_extension(".pt"), std::ios::app) << "extra";
  std::ofstream(by_stages[1]) << "{ not json";
  const TaskResult again = run_task(trial(results, 3, "none"));
  ASSERT_TRUE(again.ok) << again.error;
  EXPECT_EQ(final_metric(again, "reused_stages"), 0.0);
  // Running again replaced both with good files.
  const TaskResult third = run_task(trial(results, 4, "none"));
  ASSERT_TRUE(third.ok) << third.error;
  EXPECT_EQ(final_metric(third, "reused_stages"), 2.0);
}

TEST_F(TrialPrefix, ATaskPastItsTimeLimitStopsMidTrainingFailedWithTheLimitAndWhereItWas) {
  const fs::path results = folder_ / "timeout";
  // A million epochs: at a few hundred steps a second on any machine, far longer than the one-second limit.
  Task task = baseline_task(folder_ / "data", results, {0, 1, 2}, 1000000);
  task.timeout_seconds = 1;
  const TaskResult result = run_task(task);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.error.rfind("timeout after 1 s (reached stage 1/1 train, epoch ", 0), 0u) << result.error;
  EXPECT_NE(result.error.find("/1000000, step "), std::string::npos) << result.error;
  EXPECT_TRUE(result.artifacts.empty());
  EXPECT_EQ(count_files(results / "artifacts", ".pt"), 0u);
  // The limit was the task's own: the next task without one runs to the end.
  task.timeout_seconds = 0;
  task.config.baseline.epochs = 1;
  const TaskResult next = run_task(task);
  EXPECT_TRUE(next.ok) << next.error;
}

}  // namespace
}  // namespace edgesweep
