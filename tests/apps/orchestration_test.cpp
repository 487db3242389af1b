// The orchestration benchmark's tool in small: stand-in tasks through the real scheduler, MPI control plane and
// store, alone and on two worker ranks. It checks that every trial is recorded done once, not how fast.
#include <string>

#include <gtest/gtest.h>

#include "app_harness.h"
#include "edgesweep/common/json.h"

namespace edgesweep::apps_test {
namespace {

using OrchestrationTest = AppTest;

/// The JSON line the tool prints.
Json figures_of(const ProcessResult& result) {
  const size_t start = result.out.rfind("\n{");
  const std::string line = result.out.substr(start == std::string::npos ? 0 : start + 1);
  return Json::parse(line);
}

void expect_all_done(const fs::path& results, size_t trials, bool over_mpi) {
  const Store store = Store::open(results / "edgesweep.db", Store::Mode::ReadOnly);
  const std::vector<TrialRow> rows = trials_of(store, "orchestration");
  EXPECT_EQ(rows.size(), trials + 1);  // and the baseline
  for (const TrialRow& row : rows) {
    EXPECT_EQ(row.status, TrialStatus::Done) << "task " << row.id << ": " << row.error;
    EXPECT_EQ(row.attempts, 1) << "task " << row.id;
    if (over_mpi) {
      EXPECT_TRUE(row.worker == 1 || row.worker == 2) << "task " << row.id << " on rank " << row.worker;
    } else {
      EXPECT_EQ(row.worker, 0);
    }
  }
}

TEST_F(OrchestrationTest, StandInTrialsAreEachRecordedDoneOnceAloneAndOnTwoWorkerRanks) {
  const fs::path alone = folder_ / "alone";
  const ProcessResult inline_run = run_process({EDGESWEEP_BENCH_ORCHESTRATION, alone.string(), "40", "0.01"},
                                               folder_, std::chrono::seconds(120));
  ASSERT_EQ(inline_run.exit_code, 0) << describe(inline_run);
  const Json inline_figures = figures_of(inline_run);
  EXPECT_EQ(inline_figures["trials"], 40);
  EXPECT_EQ(inline_figures["exit_code"], 0);
  EXPECT_GT(inline_figures["wall_seconds"].get<double>(), 0.4);  // forty tasks of 10 ms, one after another
  expect_all_done(alone, 40, false);
  // The folder is written from scratch: an existing one is refused, not overwritten.
  const ProcessResult again = run_process({EDGESWEEP_BENCH_ORCHESTRATION, alone.string(), "40", "0"}, folder_,
                                          std::chrono::seconds(60));
  EXPECT_EQ(again.exit_code, 2) << describe(again);

  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI (the run alone passed)";
  const fs::path mpi = folder_ / "mpi";
  const ProcessResult mpi_run =
      run_process({mpiexec_path(), "-np", "3", "--oversubscribe", EDGESWEEP_BENCH_ORCHESTRATION, mpi.string(), "300",
                   "0"},
                  folder_, std::chrono::seconds(240), mpi_environment());
  ASSERT_EQ(mpi_run.exit_code, 0) << describe(mpi_run);
  const Json figures = figures_of(mpi_run);
  EXPECT_EQ(figures["trials"], 300);
  EXPECT_EQ(figures["workers"], 2);
  EXPECT_GT(figures["trials_per_second"].get<double>(), 0.0);
  expect_all_done(mpi, 300, true);
}

}  // namespace
}  // namespace edgesweep::apps_test
