// Pipeline stages: each is a function (model, data, params) -> model, looked up by its name in [[pipeline]].
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "edgesweep/common/task.h"
#include "edgesweep/workers/dataset.h"
#include "edgesweep/workers/graph_module.h"

namespace edgesweep {

/// What a stage may read and record besides its model and parameters.
struct StageContext {
  const DataSplits& data;
  const TrialConfig& trial;
  GraphModule baseline;          ///< the trained baseline (teacher for distillation)
  int stage_index = 0;           ///< position in the pipeline
  int64_t epoch_offset = 0;      ///< epochs run by earlier stages; per-epoch metrics continue from here
  std::vector<Metric>* metrics;  ///< per-epoch records go here
};

/// A stage turns a model into the next one (it may train it in place or build a new, smaller one).
using StageFunction = std::function<GraphModule(GraphModule model, const StageConfig& params, StageContext& context)>;

/// The stage called `name`; throws InputError listing the known stages when there is none.
const StageFunction& find_stage(const std::string& name);

/// Reads the training settings of a train/finetune stage (or [baseline]) from a filled-in parameter object.
TrainConfig train_config_from_params(const Json& params);

}  // namespace edgesweep
