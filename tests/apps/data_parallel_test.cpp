// Data-parallel tasks end to end ([run] ranks_per_trial): the binary under mpirun on loopback, its groups of worker
// ranks training each task together. A network without batch norm trains on a group of two as on one rank with the
// same global batch; every training stage (train, prune with fine-tuning, distill, QAT) runs in a group; a layout
// the worker ranks cannot form is refused before anything is recorded.
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"

namespace edgesweep::apps_test {
namespace {

/// A network without batch norm (or dropout): conv, relu, max-pool, linear.
const std::string kNoBatchNorm = conv_linear_model(8);

/// Pruning with fine-tuning, then distillation: two more stages that train.
const char* const kPruneDistill = R"toml([[pipeline]]
stage = "prune"
method = "magnitude-global"
sparsity = 0.5
finetune_epochs = 1
lr = 0.02
batch_size = 50

[[pipeline]]
stage = "distill"
epochs = 1
lr = 0.02
batch_size = 50
)toml";

/// A task's metrics by name and step.
std::map<std::pair<std::string, int64_t>, double> metrics_of(const Store& store, int64_t trial_id) {
  std::map<std::pair<std::string, int64_t>, double> metrics;
  for (const MetricRow& m : store.metrics(trial_id)) metrics[{m.name, m.step}] = m.value;
  return metrics;
}

class DataParallelTest : public AppTest {};

TEST_F(DataParallelTest, ANetworkWithoutBatchNormTrainsOnTwoRanksAsOnOneWithTheSameGlobalBatch) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  // The same experiment twice, each with its own baseline cache: on one worker rank, and on one group of two. One
  // thread per rank, so that only the data split differs. 900 training images in batches of 50 (the group's shards
  // are 25 and 25); the baseline's last batch of 50 too.
  const auto experiment = [&](const std::string& name, const fs::path& results, int ranks_per_trial) {
    return tiny_experiment(name, results, kNoBatchNorm, kPruneDistill,
                           "epochs = 2\nlr = 0.05\nbatch_size = 50\n") +
           fmt::format("threads = 1\nranks_per_trial = {}\n", ranks_per_trial);
  };
  const fs::path one_spec = write_file("one.toml", experiment("dp", folder_ / "one" / "results", 1));
  const fs::path two_spec = write_file("two.toml", experiment("dp", folder_ / "two" / "results", 2));
  const ProcessResult one = edgesweep_mpi(2, {"run", one_spec.string()});
  ASSERT_FALSE(one.timed_out) << describe(one);
  ASSERT_EQ(one.exit_code, 0) << describe(one);
  const ProcessResult two = edgesweep_mpi(3, {"run", two_spec.string()});
  ASSERT_FALSE(two.timed_out) << describe(two);
  ASSERT_EQ(two.exit_code, 0) << describe(two);
  EXPECT_TRUE(contains(two.out + two.err, "in 1 group(s) of 2 (data-parallel tasks)")) << describe(two);
  EXPECT_TRUE(contains(two.out + two.err, "starting (rank 1 of its group of 2)")) << describe(two);

  const Store alone = Store::open(folder_ / "one" / "results" / "edgesweep.db", Store::Mode::ReadOnly);
  const Store grouped = Store::open(folder_ / "two" / "results" / "edgesweep.db", Store::Mode::ReadOnly);
  const std::vector<TrialRow> alone_rows = trials_of(alone, "dp");
  const std::vector<TrialRow> grouped_rows = trials_of(grouped, "dp");
  ASSERT_EQ(alone_rows.size(), 2u);  // the baseline and one trial
  ASSERT_EQ(grouped_rows.size(), 2u);
  size_t losses = 0;
  for (size_t i = 0; i < alone_rows.size(); ++i) {
    SCOPED_TRACE(fmt::format("{} {}", alone_rows[i].kind, alone_rows[i].id));
    ASSERT_EQ(alone_rows[i].status, TrialStatus::Done) << alone_rows[i].error;
    ASSERT_EQ(grouped_rows[i].status, TrialStatus::Done) << grouped_rows[i].error;
    EXPECT_EQ(grouped_rows[i].worker, 1);  // the group's leader reports
    const auto a = metrics_of(alone, alone_rows[i].id);
    const auto b = metrics_of(grouped, grouped_rows[i].id);
    // Every epoch's training loss, over the whole global batch, agrees to float rounding: the weights went the same
    // way through every step of every stage.
    for (const auto& [key, value] : a) {
      const bool loss = key.first.find("train_loss") != std::string::npos;
      const bool accuracy = key.first.find("accuracy") != std::string::npos;
      if (!loss && !accuracy) continue;
      SCOPED_TRACE(fmt::format("{} at step {}", key.first, key.second));
      ASSERT_TRUE(b.count(key)) << "missing in the group's run";
      if (loss) {
        ++losses;
        EXPECT_NEAR(b.at(key), value, 1e-4 * std::max(1.0, std::abs(value)));
      } else {
        EXPECT_NEAR(b.at(key), value, 0.41);  // at most two of 500 test (or 100 validation) images
      }
    }
  }
  EXPECT_GE(losses, 4u);  // the baseline's two epochs, the fine-tune's and the distillation's
}

TEST_F(DataParallelTest, EveryTrainingStageRunsInAGroupWithBatchNorm) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  const fs::path spec = write_file("stages.toml", tiny_experiment("stages", results_dir_, "arch = \"small-cnn\"",
                                                                  R"toml([[pipeline]]
stage = "prune"
method = "block"
sparsity = 0.3
finetune_epochs = 1

[[pipeline]]
stage = "distill"
epochs = 1

[[pipeline]]
stage = "quantize"
mode = ["qat-int8", "static-int8"]
)toml") + "ranks_per_trial = 2\n");
  const ProcessResult run = edgesweep_mpi(3, {"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  const Store store = Store::open(results_dir_ / "edgesweep.db", Store::Mode::ReadOnly);
  const std::vector<TrialRow> rows = trials_of(store, "stages");
  ASSERT_EQ(rows.size(), 3u);
  for (const TrialRow& row : rows) {
    SCOPED_TRACE(fmt::format("{} {}", row.kind, row.id));
    ASSERT_EQ(row.status, TrialStatus::Done) << row.error;
    EXPECT_EQ(row.worker, 1);
    const auto metrics = metrics_of(store, row.id);
    ASSERT_TRUE(metrics.count({"test_accuracy", -1}));
    // One epoch on 900 images: far above chance (10 %) when the shards' gradients were combined, not thrown away.
    EXPECT_GT(metrics.at({"test_accuracy", -1}), 40.0);
    EXPECT_EQ(store.artifacts(row.id).size(), 1u);  // the leader alone exported
  }
  // Both ranks of the group were released at the end.
  const auto experiment = store.find_experiment("stages");
  ASSERT_TRUE(experiment.has_value());
  std::map<int64_t, std::string> states;
  for (const WorkerRow& row : store.workers(experiment->id)) states[row.rank] = row.state;
  EXPECT_EQ(states, (std::map<int64_t, std::string>{{1, "released"}, {2, "released"}}));
}

TEST_F(DataParallelTest, ALayoutTheWorkerRanksCannotFormIsRefusedBeforeAnythingIsRecorded) {
  const fs::path spec = write_file(
      "layout.toml", tiny_experiment("layout", results_dir_, "arch = \"small-cnn\"", "") + "ranks_per_trial = 2\n");
  // Alone, there are no worker ranks to group.
  const ProcessResult alone = edgesweep({"run", spec.string()});
  ASSERT_FALSE(alone.timed_out) << describe(alone);
  EXPECT_EQ(alone.exit_code, 2) << describe(alone);
  EXPECT_TRUE(contains(alone.err, "[run] ranks_per_trial = 2 needs worker ranks")) << describe(alone);
  EXPECT_FALSE(fs::exists(results_dir_ / "edgesweep.db"));
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI (the run alone was refused)";
  // Three worker ranks do not form groups of two; every rank ends.
  const ProcessResult odd = edgesweep_mpi(4, {"run", spec.string()});
  ASSERT_FALSE(odd.timed_out) << describe(odd);
  EXPECT_EQ(odd.exit_code, 2) << describe(odd);
  EXPECT_TRUE(contains(odd.err, "[run] ranks_per_trial = 2 does not divide the 3 worker rank(s)")) << describe(odd);
  EXPECT_FALSE(fs::exists(results_dir_ / "edgesweep.db"));
}

}  // namespace
}  // namespace edgesweep::apps_test
