// Tests that run a probe program under mpirun (the probe checks itself on every rank and prints "rank R ok"): the
// probe's check helper, and the test's bounded run of the probe on loopback with its output.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "edgesweep/common/process.h"

namespace edgesweep::mpi_probe {

/// In a probe: counts a failed check and says what differed on stderr.
inline int& failures() {
  static int count = 0;
  return count;
}
inline void expect(bool condition, const std::string& what) {
  if (condition) return;
  ++failures();
  fmt::print(stderr, "{}\n", what);
}
/// In a probe: prints "rank R ok" when every check held; the exit code.
inline int finish(int world_rank) {
  if (failures() == 0) fmt::print("rank {} ok\n", world_rank);
  std::fflush(stdout);
  return failures() == 0 ? 0 : 1;
}

/// In a test: what a probe run left.
struct ProbeRun {
  std::optional<ProcessExit> exit;  ///< nullopt: still running at the time limit (then killed)
  std::string log;                  ///< standard output and error of every rank
};

/// In a test: runs `probe` under `mpiexec` on `ranks` ranks (root allowed, shared memory, loopback wiring), bounded
/// to `timeout`.
inline ProbeRun run_probe(const std::string& mpiexec, const std::string& probe, int ranks,
                          std::chrono::seconds timeout) {
  TemporaryFolder folder("edgesweep-mpi-probe-");
  ProcessOptions options;
  options.argv = {mpiexec, "-np", std::to_string(ranks), "--oversubscribe", probe};
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
  for (const char* setting : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMPI_MCA_btl=self,vader",
                              "OMPI_MCA_oob_tcp_if_include=lo"}) {
    environment.emplace_back(setting);
  }
  options.environment = environment;
  options.output_file = folder / "probe.log";
  ProbeRun run;
  {
    Process process(options);
    run.exit = process.wait_for(timeout);
  }  // killed (its group) when still running
  std::ifstream in(folder / "probe.log");
  run.log.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return run;
}

}  // namespace edgesweep::mpi_probe
