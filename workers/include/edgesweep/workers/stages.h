// Pipeline stages: each is a function (model, data, params) -> model, looked up by its name in [[pipeline]].
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "edgesweep/common/task.h"
#include "edgesweep/workers/dataset.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/trainer.h"

namespace edgesweep {

struct ScriptedModel;  // compress/quantize.h

/// What a stage may read and record besides its model and parameters.
struct StageContext {
  const DataSplits& data;
  const TrialConfig& trial;
  GraphModule baseline;          ///< the trained baseline (teacher for distillation)
  int stage_index = 0;           ///< position in the pipeline
  int64_t epoch_offset = 0;      ///< epochs run by earlier stages; per-epoch metrics continue from here
  std::vector<Metric>* metrics;  ///< per-epoch records go here
  /// Set by a stage whose result is no longer a GraphModule (quantize, always the last stage): the trial evaluates
  /// and saves this module instead of exporting the returned GraphModule.
  std::shared_ptr<ScriptedModel> scripted = nullptr;
  /// Set by an unstructured prune stage (cleared by a train stage that reinitializes): every later training stage
  /// (fine-tuning, distillation, quantization-aware training) keeps the weights that are zero when it starts at zero,
  /// so the sparsity the prune stage reached is what the trial exports.
  bool keep_zero_weights = false;
};

/// A stage turns a model into the next one (it may train it in place or build a new, smaller one).
using StageFunction = std::function<GraphModule(GraphModule model, const StageConfig& params, StageContext& context)>;

/// The stage called `name`; throws InputError listing the known stages when there is none.
const StageFunction& find_stage(const std::string& name);

/// Reads the training settings of a train/finetune stage (or [baseline]) from a filled-in parameter object.
TrainConfig train_config_from_params(const Json& params);

/// Appends a training run's per-epoch records to the context's metrics and advances its epoch offset.
void record_epochs(const std::vector<EpochRecord>& epochs, StageContext& context);

/// Adds to `hooks` what holds `model`'s zero weights at zero after every optimizer step, when
/// `context.keep_zero_weights` asks for it; the masks are taken now, from the weights as they are.
void hold_zero_weights(const GraphModule& model, const StageContext& context, TrainHooks& hooks);

/// The training epochs `stage` runs as its settings say: a train, finetune or distill stage's epochs, a prune stage's
/// rounds of fine-tuning (`steps` rounds when iterative), a qat-int8 quantize stage's qat_epochs; 0 for the rest.
double stage_training_epochs(const StageConfig& stage);

/// The length in epochs of the trial's learning-rate span: the training epochs of every stage whose lr_span is
/// "trial" (0 when none is).
double trial_span_epochs(const std::vector<StageConfig>& pipeline);

/// `config` placed in its trial's span when its lr_span is "trial": it starts after the training epochs of the
/// spanning stages before this one plus `earlier_in_stage` (a prune stage's earlier rounds), in a span of
/// trial_span_epochs. Unchanged otherwise.
TrainConfig in_trial_span(TrainConfig config, const StageContext& context, double earlier_in_stage = 0);

/// The seed of a stage's random choices: from the trial's seed and the stage's position.
uint64_t stage_seed(const StageContext& context);

}  // namespace edgesweep
