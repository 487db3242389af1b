// Data-parallel gradients across real processes: gradient_probe under mpirun on two and on three ranks, each rank's
// weights equal to one process's on the whole batches.
#include <chrono>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "../common/mpi_probe.h"

namespace edgesweep {
namespace {

TEST(GradientSync, DataParallelStepsGiveTheWeightsOfOneProcessOnTheWholeBatch) {
  if (std::string(EDGESWEEP_MPIEXEC).empty()) GTEST_SKIP() << "built without MPI";
  for (const int ranks : {2, 3}) {
    SCOPED_TRACE(fmt::format("{} ranks", ranks));
    const mpi_probe::ProbeRun run =
        mpi_probe::run_probe(EDGESWEEP_MPIEXEC, EDGESWEEP_GRADIENT_PROBE, ranks, std::chrono::seconds(180));
    const std::string& log = run.log;
    ASSERT_TRUE(run.exit.has_value()) << "the probe did not end in 180 s\n" << log;
    EXPECT_EQ(run.exit->status(), 0) << log;
    for (int rank = 0; rank < ranks; ++rank) {
      EXPECT_NE(log.find(fmt::format("rank {} ok", rank)), std::string::npos) << log;
    }
  }
}

}  // namespace
}  // namespace edgesweep
