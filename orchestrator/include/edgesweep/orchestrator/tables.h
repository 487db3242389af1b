// Tables of an experiment's trials for the terminal, CSV and JSON, built from the store.
#pragma once

#include <optional>
#include <string>

#include "edgesweep/orchestrator/store.h"

namespace edgesweep {

/// The trials of an experiment with their swept settings and final metrics, as "table", "csv" or "json".
/// `status` filters by status when not empty ("pending", "running", "done", "failed").
std::string format_trials(const Store& store, int64_t experiment_id, const std::string& format,
                          const std::string& status = "");

/// One line per experiment in the store: name, status, task counts by status. Below it, for each experiment that is
/// running or lost a rank in its latest run, its ranks as rank 0 last heard from them: state, the task each holds,
/// where that task is (stage, epoch, step) and how long ago the rank was heard from, counted from `now` (Unix
/// seconds; default: the clock).
std::string format_status(const Store& store, std::optional<double> now = std::nullopt);

}  // namespace edgesweep
