// A synthetic experiment store for the report tests, built through the Store API only (no training): a baseline and
// a prune x quantize sweep with metrics, per-epoch curves, artifacts, devices and measurements.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "edgesweep/orchestrator/store.h"

namespace edgesweep::report_test {

/// The experiment's description: hostile HTML that must come out escaped.
extern const char* const hostile_description;

/// A device name that is hostile HTML too.
extern const char* const hostile_device;

/// What the synthetic store holds.
struct SyntheticExperiment {
  int64_t experiment_id = 0;
  int64_t trials = 0;        ///< trials besides the baseline
  int64_t failed_trials = 0;
  int64_t devices = 0;       ///< real devices with measurements of every done artifact
};

/// Creates the store at `path` (a new file) and fills it.
SyntheticExperiment build_synthetic_store(const std::filesystem::path& path);

}  // namespace edgesweep::report_test
