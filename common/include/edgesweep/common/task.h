// Work sent from the orchestrator to a worker, and what comes back; both travel as JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"
#include "edgesweep/common/trial_config.h"

namespace edgesweep {

/// One unit of work: train a baseline, or run a trial's pipeline starting from its baseline.
struct Task {
  std::string kind;           ///< "baseline" or "trial"
  int64_t trial_id = 0;       ///< row id in the store
  TrialConfig config;
  std::string results_dir;    ///< the experiment's results folder; artifact paths are relative to it
  std::string baseline_path;  ///< trials: the baseline artifact, relative to results_dir
  std::string baseline_sha256;
  std::string cache_dir;      ///< folder of cached baselines (by content hash); empty: no cache
  int64_t threads = 1;        ///< LibTorch threads for this task
  int64_t eval_batch_size = 256;
  double latency_seconds = 0;  ///< in-process latency of the artifact, per batch size (0: not measured)
  double timeout_seconds = 0;  ///< wall-clock limit; past it the task stops at its next step (0: none)
  double heartbeat_seconds = 10;  ///< worker ranks: how often to report the task's progress to rank 0
  std::string device = "cpu";     ///< [run] device: "cpu" or "cuda" (the worker rank's GPU)
  std::string memory_format = "auto";  ///< [run] memory_format: "auto", "contiguous" or "channels-last"
};

/// One value recorded for a trial: per epoch (step >= 1) or final (step = -1).
struct Metric {
  int64_t step = -1;
  std::string name;
  double value = 0;
};

/// A model file a task wrote, content-addressed under the results folder.
struct ArtifactRecord {
  std::string kind;    ///< "baseline" or "model"
  std::string path;    ///< relative to results_dir, e.g. "artifacts/<sha256>.pt"
  std::string sha256;
  int64_t bytes = 0;
  int64_t params = 0;
  int64_t macs = 0;
  std::string format = "torchscript";
  Json metadata = Json::object();
};

struct TaskResult {
  int64_t trial_id = 0;
  bool ok = false;
  std::string error;  ///< why it failed, when !ok
  std::vector<Metric> metrics;
  std::vector<ArtifactRecord> artifacts;
  double seconds = 0;
  bool cached = false;  ///< baselines: taken from the cache, not trained
};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Task, kind, trial_id, config, results_dir, baseline_path, baseline_sha256, cache_dir,
                                   threads, eval_batch_size, latency_seconds, timeout_seconds,
                                   heartbeat_seconds, device, memory_format)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Metric, step, name, value)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ArtifactRecord, kind, path, sha256, bytes, params, macs, format, metadata)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TaskResult, trial_id, ok, error, metrics, artifacts, seconds, cached)

}  // namespace edgesweep
