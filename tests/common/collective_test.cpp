// The worker groups' collectives across real processes: collective_probe under mpirun on four ranks (rank 0 alone,
// ranks 1-2 a group, rank 3 alone), every rank's checks passing; the NCCL bootstrap where the build has NCCL.
#include <chrono>
#include <iostream>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "mpi_probe.h"

namespace edgesweep {
namespace {

TEST(Collective, GroupsOfTheWorldSumAndCopyAcrossProcesses) {
  if (std::string(EDGESWEEP_MPIEXEC).empty()) GTEST_SKIP() << "built without MPI";
  const mpi_probe::ProbeRun run =
      mpi_probe::run_probe(EDGESWEEP_MPIEXEC, EDGESWEEP_COLLECTIVE_PROBE, 4, std::chrono::seconds(120));
  const std::string& log = run.log;
  ASSERT_TRUE(run.exit.has_value()) << "the probe did not end in 120 s\n" << log;
  EXPECT_EQ(run.exit->status(), 0) << log;
  for (int rank = 0; rank < 4; ++rank) {
    EXPECT_NE(log.find(fmt::format("rank {} ok", rank)), std::string::npos) << log;
    // The NCCL line says what was exercised: not built, no device, or a communicator.
    EXPECT_NE(log.find(fmt::format("rank {} nccl: ", rank)), std::string::npos) << log;
  }
  if (log.find("nccl: no device") != std::string::npos) {
    std::cout << "NCCL: the bootstrap ran (the leader's id reached every rank); no GPU, so no communicator\n";
  }
}

}  // namespace
}  // namespace edgesweep
