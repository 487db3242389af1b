// Tables of an experiment's trials for the terminal, CSV and JSON, built from the store.
#pragma once

#include <string>

#include "edgesweep/orchestrator/store.h"

namespace edgesweep {

/// The trials of an experiment with their swept settings and final metrics, as "table", "csv" or "json".
/// `status` filters by status when not empty ("pending", "running", "done", "failed").
std::string format_trials(const Store& store, int64_t experiment_id, const std::string& format,
                          const std::string& status = "");

/// One line per experiment in the store: name, status, task counts by status.
std::string format_status(const Store& store);

}  // namespace edgesweep
