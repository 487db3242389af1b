// What `edgesweep pareto` and `edgesweep export` print: the fronts per device, and an experiment's trials with
// their settings, final metrics and device measurements, as a terminal table, CSV or JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edgesweep/orchestrator/pareto.h"
#include "edgesweep/orchestrator/store.h"

namespace edgesweep {

/// The fronts of select_pareto as "table" (one block per device, the knee marked with '*'), "csv" or "json"
/// (one row or object per front member, with the trial's settings and the objective and constraint values).
std::string format_pareto(const std::vector<DeviceFront>& fronts, const ParetoOptions& options,
                          const std::string& format);

/// Every trial of an experiment with its swept settings and final metrics, and every measurement of its artifacts:
/// "csv" (one row per trial and measurement; a trial without measurements gets one row) or "json" (the experiment,
/// its devices and its trials, each with its artifacts and their measurements, raw figures included).
std::string format_export(const Store& store, int64_t experiment_id, const std::string& format);

}  // namespace edgesweep
