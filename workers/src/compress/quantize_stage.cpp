// The quantize stage: settings, post-training quantization, quantization-aware training, and the pipeline rule
// that quantize comes last.
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/distill.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/mixed_precision.h"

namespace edgesweep {
namespace {

const char* const kModes[] = {"none", "dynamic-fp16", "dynamic-int8", "static-int8", "qat-int8"};

void record_training(const std::vector<EpochRecord>& epochs, StageContext& context) {
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

}  // namespace

QuantizeOptions read_quantize_options(const Json& params) {
  QuantizeOptions options;
  options.mode = params.at("mode").get<std::string>();
  bool known = false;
  for (const char* mode : kModes) known = known || options.mode == mode;
  check_input(known, "quantize: 'mode' is \"{}\", expected one of: none, dynamic-fp16, dynamic-int8, static-int8, "
              "qat-int8", options.mode);
  options.engine = params.at("engine").get<std::string>();
  engine_from_name(options.engine);
  options.observer = observer_from_name(params.at("observer").get<std::string>());
  options.percentile = params.at("percentile").get<double>();
  check_input(options.percentile > 50 && options.percentile <= 100,
              "quantize: 'percentile' = {} is out of range: must be > 50 and <= 100", options.percentile);
  options.per_channel = params.at("per_channel").get<bool>();
  options.calibration_batches = params.at("calibration_batches").get<int64_t>();
  check_input(options.calibration_batches >= 1, "quantize: 'calibration_batches' = {} must be >= 1",
              options.calibration_batches);
  Json training = params;
  training["epochs"] = params.at("qat_epochs").get<int64_t>();
  options.qat_training = train_config_from_params(training);
  check_input(options.qat_training.epochs >= 0, "quantize: 'qat_epochs' = {} must be >= 0",
              options.qat_training.epochs);
  options.calibration_batch_size = options.qat_training.batch_size;
  options.freeze_observers_epoch = params.at("freeze_observers_epoch").get<int64_t>();
  check_input(options.freeze_observers_epoch >= 1, "quantize: 'freeze_observers_epoch' = {} must be >= 1",
              options.freeze_observers_epoch);
  return options;
}

void check_quantize_pipeline(const TrialConfig& trial) {
  for (size_t i = 0; i < trial.pipeline.size(); ++i) {
    if (trial.pipeline[i].stage != "quantize") continue;
    check_input(i + 1 == trial.pipeline.size(),
                "stage {} (quantize) must be the last stage: its result is an int8 TorchScript module that no later "
                "stage can take, but stage {} ({}) follows it",
                i, i + 1, trial.pipeline[std::min(i + 1, trial.pipeline.size() - 1)].stage);
    read_quantize_options(trial.pipeline[i].params);
  }
}

ScriptedModel quantize_post_training(const GraphModule& model, const DataSplits& data, const QuantizeOptions& options,
                                     GraphModule* folded_out) {
  if (options.mode == "dynamic-fp16") return export_dynamic_fp16(model);
  if (options.mode == "dynamic-int8") return export_dynamic_int8(model, options);
  check_input(options.mode == "static-int8", "quantize: mode '{}' is not a post-training mode", options.mode);
  GraphModule folded = fold_batchnorm(model);
  folded->eval();
  const QuantizationPlan plan = plan_quantization(folded->graph());
  std::vector<ActivationObserver> observers(plan.observed.size(),
                                            ActivationObserver(options.observer, options.percentile));
  calibrate(folded, data, plan, options.calibration_batches, options.calibration_batch_size, observers);
  std::vector<QuantParams> activations(plan.observed.size());
  for (int node : plan.observed_nodes()) activations[node] = observers[node].qparams();
  if (folded_out) *folded_out = folded;
  return export_static_int8(folded, plan, activations, options);
}

// Quantization-aware training. Batch norms are folded into their convs first (with the baseline's running
// statistics), so training sees exactly the layers the int8 model runs. The forward pass then fake-quantizes every
// conv and linear weight (symmetric int8 from the live weight, per channel or per tensor) and every value the
// int8 model quantizes, with the scale and zero point of its observer. Observers start from a calibration pass and
// keep updating on training batches (never on validation passes) until `freeze_observers_epoch`; from then on the
// ranges are fixed and training adapts the weights to them. LibTorch's fake_quantize ops give the straight-through
// gradient: 1 where the value is inside the representable range, 0 where it is clamped.
ScriptedModel quantization_aware_training(const GraphModule& model, const DataSplits& data,
                                          const QuantizeOptions& options, bool augment, uint64_t seed,
                                          GraphModule* folded_out, std::vector<EpochRecord>* epochs,
                                          const TrainLoss& loss) {
  GraphModule folded = fold_batchnorm(model);
  const QuantizationPlan plan = plan_quantization(folded->graph());
  const size_t n = plan.observed.size();
  std::vector<ActivationObserver> observers(n, ActivationObserver(options.observer, options.percentile));
  calibrate(folded, data, plan, options.calibration_batches, options.calibration_batch_size, observers);
  std::vector<QuantParams> activations(n);
  for (int node : plan.observed_nodes()) activations[node] = observers[node].qparams();
  bool frozen = options.freeze_observers_epoch <= 1;
  GraphModuleImpl* self = folded.get();
  folded->weight_transform = [&](int, const torch::Tensor& weight) {
    return fake_quantize_weight(weight, options.per_channel);
  };
  folded->output_transform = [&, self](int node, const torch::Tensor& value) {
    if (!plan.observed[node]) return value;
    if (self->is_training() && !frozen) {
      observers[node].observe(value);
      activations[node] = observers[node].qparams();
    }
    return fake_quantize_activation(at_least_fp32(value), activations[node]);  // fp32 under autocast too
  };
  std::vector<EpochRecord> records;
  try {
    TrainHooks hooks;
    hooks.loss = loss;
    // Folding scales each output channel, so the pruned weights are still exactly zero here.
    if (options.keep_zero_weights) hold_zero_weights(folded, hooks);
    records = train_model(
        folded, data, options.qat_training, augment, seed,
        [&](const EpochRecord& record) {
          if (record.epoch + 1 >= options.freeze_observers_epoch) frozen = true;
        },
        hooks);
  } catch (...) {
    folded->weight_transform = nullptr;
    folded->output_transform = nullptr;
    throw;
  }
  folded->weight_transform = nullptr;
  folded->output_transform = nullptr;
  folded->eval();
  if (epochs) *epochs = records;
  if (folded_out) *folded_out = folded;
  return export_static_int8(folded, plan, activations, options);
}

GraphModule quantize_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  QuantizeOptions options = read_quantize_options(stage.params);
  options.qat_training = in_trial_span(options.qat_training, context);
  options.keep_zero_weights = context.keep_zero_weights;
  const size_t stages = context.trial.pipeline.size();
  check_input(stages == 0 || context.stage_index + 1 == static_cast<int>(stages),
              "stage {} (quantize) must be the last stage of the pipeline ({} stages)", context.stage_index, stages);
  const bool distill = stage.params.value("distill", false);
  check_input(!distill || options.mode == "qat-int8",
              "quantize: 'distill' = true distils during the fine-tuning of qat-int8; mode '{}' has none",
              options.mode);
  const TrainLoss distillation =
      distill ? make_distillation_loss(context.baseline, model->graph(),
                                       read_distill_settings(stage.params, "quantize"), "quantize")
              : TrainLoss();
  if (options.mode == "none") return model;
  const DataSplits& data = context.data;
  const auto record = [&](const std::string& name, double value) {
    context.metrics->push_back({-1, "quantize/" + name, value});
  };
  if (data.val.size() > 0) {
    record("val_accuracy_fp32", evaluate_accuracy(model, data.val, data.mean, data.std, 256));
  }
  GraphModule result = model;
  ScriptedModel scripted;
  if (options.mode == "qat-int8") {
    std::vector<EpochRecord> epochs;
    const uint64_t seed = context.trial.seed * 1000003ULL + static_cast<uint64_t>(context.stage_index) + 1;
    scripted = quantization_aware_training(model, data, options, context.trial.data.augment, seed, &result, &epochs,
                                           distillation);
    record_training(epochs, context);
  } else {
    scripted = quantize_post_training(model, data, options, &result);
  }
  if (data.val.size() > 0) {
    record("val_accuracy_quantized", evaluate_scripted_accuracy(scripted, data.val, data.mean, data.std, 256));
  }
  record("calibration_batches", options.mode == "static-int8" || options.mode == "qat-int8"
                                    ? static_cast<double>(options.calibration_batches)
                                    : 0.0);
  context.scripted = std::make_shared<ScriptedModel>(std::move(scripted));
  return result;
}

}  // namespace edgesweep
