// End-to-end sweeps under mpirun: a 4-trial sweep on two worker ranks (store, artifacts, metrics, the trials and
// status commands), and a sweep where one baseline fails at run time while the rest of the sweep completes.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/common/json.h"

namespace edgesweep::apps_test {
namespace {

/// The fields of the `edgesweep status` line of experiment `name`: name, status, tasks, done, failed, running,
/// pending, created; empty when no line starts with the name.
std::vector<std::string> status_line(const std::string& output, const std::string& name) {
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::vector<std::string> fields;
    std::string word;
    while (words >> word) fields.push_back(word);
    if (!fields.empty() && fields[0] == name) return fields;
  }
  return {};
}

using SweepTest = AppTest;

TEST_F(SweepTest, FourTrialsOnTwoWorkerRanks) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "edgesweep was built without MPI";
  const fs::path spec = write_file("sweep.toml", tiny_experiment("mpi-sweep", results_dir_, "arch = \"small-cnn\"",
                                                                 R"toml([[pipeline]]
stage = "finetune"
epochs = 1
lr = [0.001, 0.01]
optimizer = ["sgd", "adam"]
batch_size = 64
)toml"));

  const ProcessResult run = edgesweep_mpi(3, {"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  EXPECT_TRUE(contains(run.out + run.err, "on 2 worker rank(s)")) << describe(run);

  const fs::path db = results_dir_ / "edgesweep.db";
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  const auto experiment = store.find_experiment("mpi-sweep");
  ASSERT_TRUE(experiment.has_value());
  EXPECT_EQ(experiment->status, "done");
  const std::vector<TrialRow> rows = store.trials(experiment->id);
  ASSERT_EQ(rows.size(), 5u);

  int baselines = 0;
  std::set<int64_t> workers;
  std::set<std::pair<double, std::string>> settings;
  for (const TrialRow& row : rows) {
    SCOPED_TRACE(fmt::format("{} {}", row.kind, row.id));
    EXPECT_EQ(row.status, TrialStatus::Done) << row.error;
    EXPECT_EQ(row.attempts, 1);
    EXPECT_TRUE(row.error.empty()) << row.error;
    EXPECT_FALSE(row.started.empty());
    EXPECT_FALSE(row.finished.empty());
    EXPECT_TRUE(row.worker == 1 || row.worker == 2) << "worker " << row.worker;
    workers.insert(row.worker);
    if (row.kind == "baseline") {
      ++baselines;
      EXPECT_TRUE(row.config.at("pipeline").empty());
    } else {
      EXPECT_EQ(row.kind, "trial");
      const Json& stage = row.config.at("pipeline").at(0);
      EXPECT_EQ(stage.at("stage"), "finetune");
      settings.insert({stage.at("lr").get<double>(), stage.at("optimizer").get<std::string>()});
    }

    // Exactly one artifact, content-addressed: the file is there and its sha256 is the recorded one.
    const std::vector<ArtifactRow> artifacts = store.artifacts(row.id);
    ASSERT_EQ(artifacts.size(), 1u);
    const ArtifactRow& artifact = artifacts.front();
    EXPECT_EQ(artifact.kind, row.kind == "baseline" ? "baseline" : "model");
    EXPECT_EQ(artifact.format, "torchscript");
    EXPECT_EQ(artifact.path, "artifacts/" + artifact.sha256 + ".pt");
    const fs::path file = results_dir_ / artifact.path;
    ASSERT_TRUE(fs::is_regular_file(file)) << file;
    EXPECT_EQ(sha256_file(file), artifact.sha256);
    EXPECT_EQ(static_cast<int64_t>(fs::file_size(file)), artifact.bytes);
    EXPECT_GT(artifact.params, 0);
    EXPECT_GT(artifact.macs, 0);

    // Final metrics, and the per-epoch ones of the single epoch each task trains.
    const auto metrics = final_metrics(store, row.id);
    ASSERT_TRUE(metrics.count("test_accuracy"));
    EXPECT_GT(metrics.at("test_accuracy"), 10.0);
    EXPECT_LE(metrics.at("test_accuracy"), 100.0);
    EXPECT_EQ(metrics.at("params"), static_cast<double>(artifact.params));
    EXPECT_EQ(metrics.at("model_bytes"), static_cast<double>(artifact.bytes));
    std::set<std::string> epoch_metrics;
    for (const MetricRow& m : store.metrics(row.id)) {
      if (m.step < 0) continue;
      EXPECT_EQ(m.step, 1) << m.name << ": one epoch, counted from 1";
      EXPECT_TRUE(std::isfinite(m.value)) << m.name;
      epoch_metrics.insert(m.name);
      if (m.name == "train_loss") {
        EXPECT_GT(m.value, 0.0);
      }
      if (m.name == "train_accuracy" || m.name == "val_accuracy") {
        EXPECT_GE(m.value, 0.0);
        EXPECT_LE(m.value, 100.0);
      }
    }
    for (const char* name : {"train_loss", "train_accuracy", "val_accuracy", "lr"}) {
      EXPECT_TRUE(epoch_metrics.count(name)) << "no per-epoch " << name;
    }
    if (row.kind == "trial") {
      EXPECT_NEAR(metrics.at("accuracy_drop"), metrics.at("baseline_test_accuracy") - metrics.at("test_accuracy"),
                  1e-9);
    }
  }
  EXPECT_EQ(baselines, 1);
  EXPECT_EQ(settings, (std::set<std::pair<double, std::string>>{
                          {0.001, "sgd"}, {0.001, "adam"}, {0.01, "sgd"}, {0.01, "adam"}}));
  EXPECT_EQ(workers, (std::set<int64_t>{1, 2})) << "both worker ranks should have run tasks";

  // `trials --format json` lists the same five rows with their results.
  const ProcessResult listed = edgesweep({"trials", spec.string(), "--format", "json"});
  ASSERT_EQ(listed.exit_code, 0) << describe(listed);
  Json json;
  ASSERT_NO_THROW(json = Json::parse(listed.out)) << describe(listed);
  ASSERT_TRUE(json.is_array());
  ASSERT_EQ(json.size(), 5u);
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(json[i].at("id"), rows[i].id);
    EXPECT_EQ(json[i].at("kind"), rows[i].kind);
    EXPECT_EQ(json[i].at("status"), "done");
    EXPECT_EQ(json[i].at("worker"), rows[i].worker);
    EXPECT_DOUBLE_EQ(json[i].at("metrics").at("test_accuracy").get<double>(),
                     final_metrics(store, rows[i].id).at("test_accuracy"));
    if (rows[i].kind == "trial") {
      EXPECT_TRUE(contains(json[i].at("settings").get<std::string>(), "pipeline[0].lr=")) << json[i].dump();
    }
  }

  // `status <db>` shows the experiment done with all five tasks done.
  const ProcessResult status = edgesweep({"status", db.string()});
  ASSERT_EQ(status.exit_code, 0) << describe(status);
  const std::vector<std::string> fields = status_line(status.out, "mpi-sweep");
  ASSERT_GE(fields.size(), 7u) << describe(status);
  EXPECT_EQ(fields[1], "done");
  EXPECT_EQ(fields[2], "5");  // tasks
  EXPECT_EQ(fields[3], "5");  // done
  EXPECT_EQ(fields[4], "0");  // failed
  EXPECT_EQ(fields[5], "0");  // running
  EXPECT_EQ(fields[6], "0");  // pending
}

// Two fine-tuning rates, each quantized two ways: the worker that fine-tuned at a rate also quantizes the other way
// from the kept fine-tuned model, while the other worker takes the other rate.
TEST_F(SweepTest, TrialsSharingTheirEarlierStagesReuseThemOnTwoWorkerRanks) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "edgesweep was built without MPI";
  const fs::path spec = write_file("shared.toml", tiny_experiment("mpi-shared", results_dir_, "arch = \"small-cnn\"",
                                                                  R"toml([[pipeline]]
stage = "finetune"
epochs = 1
lr = [0.001, 0.01]
batch_size = 64

[[pipeline]]
stage = "quantize"
mode = ["none", "dynamic-fp16"]
)toml"));
  const ProcessResult run = edgesweep_mpi(3, {"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  ASSERT_EQ(run.exit_code, 0) << describe(run);

  const Store store = Store::open(results_dir_ / "edgesweep.db", Store::Mode::ReadOnly);
  const auto experiment = store.find_experiment("mpi-shared");
  ASSERT_TRUE(experiment.has_value());
  std::map<double, std::vector<double>> reused_by_rate;
  std::map<double, std::set<double>> val_accuracy_by_rate;
  for (const TrialRow& row : store.trials(experiment->id)) {
    EXPECT_EQ(row.status, TrialStatus::Done) << row.error;
    if (row.kind != "trial") continue;
    const double rate = row.config.at("pipeline").at(0).at("lr").get<double>();
    reused_by_rate[rate].push_back(final_metrics(store, row.id).at("reused_stages"));
    for (const MetricRow& m : store.metrics(row.id)) {
      if (m.name == "val_accuracy" && m.step == 1) val_accuracy_by_rate[rate].insert(m.value);
    }
  }
  ASSERT_EQ(reused_by_rate.size(), 2u);
  for (auto& [rate, reused] : reused_by_rate) {
    std::sort(reused.begin(), reused.end());
    EXPECT_EQ(reused, (std::vector<double>{0.0, 1.0})) << "lr " << rate;
    EXPECT_EQ(val_accuracy_by_rate[rate].size(), 1u) << "lr " << rate << ": one fine-tuning, recorded by both trials";
  }
  // Every trial is done: the models kept after the fine-tuning are removed.
  EXPECT_FALSE(fs::exists(results_dir_ / "prefixes"));
}

/// A custom model whose layers are valid TOML and a valid graph, but give 5 class scores for 10 classes.
const char* const five_output_layers = R"toml(
[[model.layers]]
op = "conv"
out = 4

[[model.layers]]
op = "relu"

[[model.layers]]
op = "adaptive_avgpool"

[[model.layers]]
op = "flatten"

[[model.layers]]
op = "linear"
out = 5
)toml";

TEST_F(SweepTest, FailingBaselineDoesNotStopTheSweep) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "edgesweep was built without MPI";
  const fs::path spec = write_file(
      "failing.toml", tiny_experiment("failing-sweep", results_dir_,
                                      std::string("arch = [\"small-cnn\", \"custom\"]\n") + five_output_layers,
                                      R"toml([[pipeline]]
stage = "finetune"
epochs = 1
lr = [0.001, 0.01]
)toml"));

  const ProcessResult run = edgesweep_mpi(3, {"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  EXPECT_EQ(run.exit_code, 1) << "some trials failed, so the run exits 1\n" << describe(run);

  const Store store = Store::open(results_dir_ / "edgesweep.db", Store::Mode::ReadOnly);
  const auto experiment = store.find_experiment("failing-sweep");
  ASSERT_TRUE(experiment.has_value());
  EXPECT_EQ(experiment->status, "failed");
  const std::vector<TrialRow> rows = store.trials(experiment->id);
  ASSERT_EQ(rows.size(), 6u);  // per arch: one baseline and two trials

  std::map<std::string, int> counts;  // "<arch> <kind> <status>" -> how many
  int64_t custom_baseline = 0;
  for (const TrialRow& row : rows) {
    const std::string arch = row.config.at("model").at("arch").get<std::string>();
    counts[fmt::format("{} {} {}", arch, row.kind, to_string(row.status))] += 1;
    if (arch == "custom" && row.kind == "baseline") custom_baseline = row.id;
  }
  EXPECT_EQ(counts, (std::map<std::string, int>{{"small-cnn baseline done", 1},
                                                {"small-cnn trial done", 2},
                                                {"custom baseline failed", 1},
                                                {"custom trial failed", 2}}));
  ASSERT_NE(custom_baseline, 0);

  for (const TrialRow& row : rows) {
    SCOPED_TRACE(fmt::format("{} {} ({})", row.kind, row.id, row.config.at("model").at("arch").dump()));
    if (row.status == TrialStatus::Done) {
      EXPECT_TRUE(row.error.empty()) << row.error;
      ASSERT_EQ(store.artifacts(row.id).size(), 1u);
      const ArtifactRow artifact = store.artifacts(row.id).front();
      EXPECT_EQ(sha256_file(results_dir_ / artifact.path), artifact.sha256);
      const double accuracy = final_metrics(store, row.id).at("test_accuracy");
      EXPECT_GT(accuracy, 10.0);
      EXPECT_LE(accuracy, 100.0);
      continue;
    }
    EXPECT_TRUE(store.artifacts(row.id).empty());
    EXPECT_TRUE(final_metrics(store, row.id).empty());
    if (row.kind == "baseline") {
      // The graph check's message, with the values on both sides.
      EXPECT_TRUE(contains(row.error, "10 classes")) << row.error;
      EXPECT_TRUE(contains(row.error, "5 outputs")) << row.error;
      EXPECT_EQ(row.attempts, 1);
    } else {
      EXPECT_TRUE(contains(row.error, "baseline")) << row.error;
      EXPECT_TRUE(contains(row.error, std::to_string(custom_baseline))) << row.error;
      EXPECT_TRUE(contains(row.error, "10 classes")) << row.error;
      EXPECT_EQ(row.attempts, 0) << "a trial whose baseline failed never starts";
    }
  }
  EXPECT_TRUE(contains(run.out, "failed")) << describe(run);
}

}  // namespace
}  // namespace edgesweep::apps_test
