// Sensitivity analysis: how much validation accuracy each prunable layer (or channel group) loses when it alone is
// pruned at several ratios, and the per-layer ratios a later prune stage derives from it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/stages.h"

namespace edgesweep {

/// The sensitivity stage: records "sensitivity/<layer>/<ratio>" (accuracy drop in points on the validation split)
/// for every prunable layer (method "magnitude") or prunable channel group (method "block", named by its first
/// producer) at every ratio of `ratios`, and hands the model on unchanged.
GraphModule sensitivity_stage(GraphModule model, const StageConfig& stage, StageContext& context);

/// Per layer (or group) name: the largest ratio whose recorded drop is at most `max_drop`, capped at `cap`; 0 when
/// none is. Reads the latest "sensitivity/..." metrics; throws InputError when there are none.
std::map<std::string, double> ratios_from_sensitivity(const std::vector<Metric>& metrics, double max_drop, double cap);

/// Magnitude masks with a ratio per layer (layers missing from `ratios` keep every weight).
WeightMasks magnitude_masks_per_layer(const GraphModule& model, const std::map<std::string, double>& ratios);

/// Units to remove with a ratio per prunable channel group (keyed by the name of its first producer; other groups
/// keep every unit), ranked by block importance.
std::vector<bool> select_units_per_group(const GraphModule& model, const ChannelAnalysis& analysis,
                                         const std::map<std::string, double>& ratios);

}  // namespace edgesweep
