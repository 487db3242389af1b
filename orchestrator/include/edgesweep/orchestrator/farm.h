// The device farm: rank 0 measures every artifact of an experiment on every device of its [[devices]]. Jobs are
// rows of the store (written first, so nothing is lost); one network thread per device runs them against the
// device's agent, one at a time, and hands the results back to rank 0's loop, which alone writes the store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"
#include "edgesweep/orchestrator/spec.h"
#include "edgesweep/orchestrator/store.h"

namespace edgesweep {

struct FarmOptions {
  /// Started as `<agent_executable> agent --listen ...` for a device with spawn = true that does not answer.
  std::filesystem::path agent_executable = "/proc/self/exe";
  /// Seconds a spawned agent has to start answering.
  double spawn_wait_seconds = 60;
};

/// How many of an experiment's measurement jobs are in each state.
struct FarmCounts {
  int64_t pending = 0;
  int64_t running = 0;
  int64_t done = 0;
  int64_t failed = 0;
};

/// The benchmark request the farm sends for every artifact of `spec` (batch sizes, timing, evaluation set).
Json measurement_request(const ExperimentSpec& spec);

/// The measurement rows (one per batch size) of an agent's benchmark result; throws Error naming what is missing.
std::vector<MeasurementRow> measurement_rows(const Json& result, int64_t artifact_id, int64_t device_id);

class Farm {
 public:
  /// A farm for the devices of `spec`; nothing starts before start(). `store` must outlive the farm.
  Farm(Store& store, const ExperimentSpec& spec, int64_t experiment_id, FarmOptions options = {});
  ~Farm();
  Farm(const Farm&) = delete;
  Farm& operator=(const Farm&) = delete;

  /// Whether the experiment has devices at all.
  bool enabled() const;

  /// Registers the devices, puts jobs left running by an earlier run back to pending (and, when `resume`, failed
  /// ones too, with their attempts reset), queues a job for every recorded artifact that lacks one, spawns the
  /// loopback agents that are asked for and do not answer, and starts one thread per device.
  void start(bool resume);

  /// Queues one job per device for each artifact (rows already recorded in the store, ids set).
  void add_jobs(const std::vector<ArtifactRow>& artifacts);

  /// Rank 0's turn: records what the device threads reported (results, failures, device status) and, when
  /// `dispatch`, hands the due pending jobs to their devices. Never waits for the network.
  void poll(bool dispatch = true);

  /// Polls until every job is done or failed or `timeout_seconds` pass; true when all are finished.
  bool wait(double timeout_seconds);

  /// The job counts as rank 0 last recorded them.
  FarmCounts counts() const;

  /// Stops the device threads (a benchmark in progress is abandoned), records what they reported, puts jobs still
  /// running back to pending, and stops the agents it spawned (SIGTERM, then SIGKILL). Idempotent.
  void stop();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace edgesweep
