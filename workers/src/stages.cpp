// The train and finetune stages. Compression stages register here through the same table.
#include "edgesweep/workers/stages.h"

#include <map>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"

namespace edgesweep {
namespace {

void record_epochs(const std::vector<EpochRecord>& epochs, StageContext& context) {
  for (const EpochRecord& e : epochs) {
    const int64_t step = context.epoch_offset + e.epoch;
    context.metrics->push_back({step, "train_loss", e.train_loss});
    context.metrics->push_back({step, "train_accuracy", e.train_accuracy});
    if (e.val_accuracy >= 0) context.metrics->push_back({step, "val_accuracy", e.val_accuracy});
    context.metrics->push_back({step, "lr", e.lr});
    context.metrics->push_back({step, "images_per_second", e.images_per_second});
    context.metrics->push_back({step, "stage", static_cast<double>(context.stage_index)});
  }
  context.epoch_offset += static_cast<int64_t>(epochs.size());
}

uint64_t stage_seed(const StageContext& context) {
  return context.trial.seed * 1000003ULL + static_cast<uint64_t>(context.stage_index) + 1;
}

GraphModule finetune_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  const TrainConfig config = train_config_from_params(stage.params);
  record_epochs(train_model(model, context.data, config, context.trial.data.augment, stage_seed(context)), context);
  return model;
}

GraphModule train_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  if (stage.params.value("reinitialize", true)) {
    torch::manual_seed(stage_seed(context));
    model = GraphModule(model->graph());
  }
  return finetune_stage(std::move(model), stage, context);
}

}  // namespace

TrainConfig train_config_from_params(const Json& params) {
  TrainConfig config;
  from_json(params, config);
  return config;
}

const StageFunction& find_stage(const std::string& name) {
  static const std::map<std::string, StageFunction> stages = {
      {"train", train_stage},
      {"finetune", finetune_stage},
  };
  auto it = stages.find(name);
  if (it == stages.end()) stage_spec(name);  // throws InputError listing the known stages
  check_input(it != stages.end(), "stage '{}' has a schema but no implementation", name);
  return it->second;
}

}  // namespace edgesweep
