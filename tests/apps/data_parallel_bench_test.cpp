// The data-parallel benchmark's tool in small: its figures are those of a real group (a network without batch norm
// trained by two ranks ends with the weights one rank reaches on the same batches; the all-reduce sums), not how
// fast.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "app_harness.h"
#include "edgesweep/common/json.h"

namespace edgesweep::apps_test {
namespace {

using DataParallelBenchTest = AppTest;

/// The JSON lines the tool printed.
std::vector<Json> lines_of(const ProcessResult& result) {
  std::vector<Json> lines;
  size_t start = 0;
  while (start < result.out.size()) {
    size_t end = result.out.find('\n', start);
    if (end == std::string::npos) end = result.out.size();
    const std::string line = result.out.substr(start, end - start);
    if (!line.empty() && line.front() == '{') lines.push_back(Json::parse(line));
    start = end + 1;
  }
  return lines;
}

TEST_F(DataParallelBenchTest, TwoRanksReachOneRanksWeightsAndTheAllReduceIsMeasuredPerSize) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  const ProcessResult equivalence =
      run_process({mpiexec_path(), "-np", "2", "--oversubscribe", EDGESWEEP_BENCH_DATA_PARALLEL, "equivalence", "600",
                   "1", "50"},
                  folder_, std::chrono::seconds(240), mpi_environment());
  ASSERT_EQ(equivalence.exit_code, 0) << describe(equivalence);
  const std::vector<Json> figures = lines_of(equivalence);
  ASSERT_EQ(figures.size(), 1u) << describe(equivalence);  // rank 0 reports, once
  EXPECT_EQ(figures[0]["ranks"], 2);
  EXPECT_EQ(figures[0]["steps"], 12);
  EXPECT_GT(figures[0]["largest_weight"].get<double>(), 0.01);
  EXPECT_LT(figures[0]["largest_weight_gap"].get<double>(), 1e-4);
  EXPECT_NEAR(figures[0]["test_accuracy_group"].get<double>(), figures[0]["test_accuracy_alone"].get<double>(), 0.5);

  const ProcessResult allreduce = run_process(
      {mpiexec_path(), "-np", "2", "--oversubscribe", EDGESWEEP_BENCH_DATA_PARALLEL, "allreduce"}, folder_,
      std::chrono::seconds(240), mpi_environment());
  ASSERT_EQ(allreduce.exit_code, 0) << describe(allreduce);
  const std::vector<Json> sizes = lines_of(allreduce);
  ASSERT_EQ(sizes.size(), 5u) << describe(allreduce);
  for (const Json& size : sizes) {
    EXPECT_GT(size["calls"].get<int64_t>(), 0);
    EXPECT_GT(size["algorithm_gb_per_s"].get<double>(), 0);
  }
  const ProcessResult wrong = run_process({EDGESWEEP_BENCH_DATA_PARALLEL, "train"}, folder_, std::chrono::seconds(60));
  EXPECT_EQ(wrong.exit_code, 2) << describe(wrong);
}

}  // namespace
}  // namespace edgesweep::apps_test
