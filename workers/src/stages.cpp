// The train, finetune and prune stages. Compression stages register here through the same table.
#include "edgesweep/workers/stages.h"

#include <cmath>
#include <map>
#include <memory>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/params.h"
#include "edgesweep/workers/compress/distill.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/compress/prune_gradual.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/compress/sensitivity.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"

namespace edgesweep {

void record_epochs(const std::vector<EpochRecord>& epochs, StageContext& context) {
  for (const EpochRecord& e : epochs) {
    const int64_t step = context.epoch_offset + e.epoch;
    context.metrics->push_back({step, "train_loss", e.train_loss});
    context.metrics->push_back({step, "train_accuracy", e.train_accuracy});
    if (e.val_accuracy >= 0) context.metrics->push_back({step, "val_accuracy", e.val_accuracy});
    context.metrics->push_back({step, "lr", e.lr});
    context.metrics->push_back({step, "images_per_second", e.images_per_second});
    context.metrics->push_back({step, "channels_last", e.channels_last ? 1.0 : 0.0});
    context.metrics->push_back({step, "input_wait_seconds", e.input_wait_seconds});
    if (e.skipped_steps > 0) context.metrics->push_back({step, "skipped_steps", static_cast<double>(e.skipped_steps)});
    context.metrics->push_back({step, "stage", static_cast<double>(context.stage_index)});
  }
  context.epoch_offset += static_cast<int64_t>(epochs.size());
}

void hold_zero_weights(const GraphModule& model, const StageContext& context, TrainHooks& hooks) {
  if (context.keep_zero_weights) hold_zero_weights(model, hooks);
}

double stage_training_epochs(const StageConfig& stage) {
  const Json& p = stage.params;
  const auto number = [&](const char* key) { return static_cast<double>(p.value(key, int64_t{0})); };
  if (stage.stage == "train" || stage.stage == "finetune" || stage.stage == "distill") return number("epochs");
  if (stage.stage == "prune") {
    const bool iterative = p.value("schedule", std::string()) == "iterative";
    return number("finetune_epochs") * (iterative ? std::max(1.0, number("steps")) : 1.0);
  }
  if (stage.stage == "quantize" && p.value("mode", std::string()) == "qat-int8") return number("qat_epochs");
  return 0;
}

double trial_span_epochs(const std::vector<StageConfig>& pipeline) {
  double total = 0;
  for (const StageConfig& stage : pipeline) {
    if (stage.params.value("lr_span", std::string("stage")) == "trial") total += stage_training_epochs(stage);
  }
  return total;
}

TrainConfig in_trial_span(TrainConfig config, const StageContext& context, double earlier_in_stage) {
  if (config.lr_span != "trial") return config;
  const auto& pipeline = context.trial.pipeline;
  double before = 0;
  for (size_t i = 0; i < pipeline.size() && static_cast<int>(i) < context.stage_index; ++i) {
    if (pipeline[i].params.value("lr_span", std::string("stage")) == "trial") {
      before += stage_training_epochs(pipeline[i]);
    }
  }
  config.span_offset_epochs = before + earlier_in_stage;
  config.span_total_epochs = trial_span_epochs(pipeline);
  return config;
}

uint64_t stage_seed(const StageContext& context) {
  return context.trial.seed * 1000003ULL + static_cast<uint64_t>(context.stage_index) + 1;
}

namespace {

GraphModule finetune_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  const TrainConfig config = in_trial_span(train_config_from_params(stage.params), context);
  TrainHooks hooks;
  hold_zero_weights(model, context, hooks);
  record_epochs(train_model(model, context.data, config, context.trial.data.augment, stage_seed(context), {}, hooks),
                context);
  return model;
}

GraphModule train_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  if (stage.params.value("reinitialize", true)) {
    torch::manual_seed(stage_seed(context));
    model = GraphModule(model->graph());
    context.keep_zero_weights = false;  // fresh weights: nothing pruned is left to hold
  }
  return finetune_stage(std::move(model), stage, context);
}

/// The settings of a prune stage, checked beyond what the schema can say.
struct PruneSettings {
  std::string method;
  double sparsity = 0;
  bool global = false;
  int64_t round_to = 1;
  int64_t rounds = 1;  ///< 1 for one-shot, `steps` for iterative
  TrainConfig finetune;
  bool distill = false;  ///< fine-tune against the baseline as teacher
  DistillSettings distillation;
  bool gradual = false;  ///< schedule = "agp": masks grow during fine-tuning
  GradualSchedule agp;
  int64_t agp_steps = 0;  ///< optimizer steps of the fine-tuning run the schedule spans
  double from_sensitivity = -1;  ///< >= 0: per-layer ratios from a sensitivity stage, with this maximum drop
  std::string criterion = "magnitude";  ///< block: magnitude, group-norm, taylor or bn-scale
  int64_t criterion_batches = 32;       ///< taylor
  int64_t recalibrate_batches = 0;      ///< filter/block: batch-norm statistics estimated again after each round
  int64_t slimming_epochs = 1;          ///< bn-scale
  double slimming_penalty = 1e-4;       ///< bn-scale
  bool unstructured() const {
    return method == "magnitude-local" || method == "magnitude-global" || method == "movement";
  }
};

PruneSettings read_prune_settings(const Json& params, const Graph& graph, int64_t train_size) {
  PruneSettings s;
  s.method = params.at("method").get<std::string>();
  const bool known = s.unstructured() || s.method == "l1-filter" || s.method == "l2-filter" ||
                     s.method == "fpgm-filter" || s.method == "block" ||
                     s.method == "node";
  check_input(known, "prune: 'method' is \"{}\", expected one of: magnitude-local, magnitude-global, movement, "
              "l1-filter, l2-filter, fpgm-filter, block, node", s.method);
  s.sparsity = params.at("sparsity").get<double>();
  check_input(s.sparsity >= 0 && s.sparsity < 1, "prune: 'sparsity' = {} is out of range: must be >= 0 and < 1",
              s.sparsity);
  const std::string allocation = params.at("allocation").get<std::string>();
  check_input(allocation == "local" || allocation == "global",
              "prune: 'allocation' is \"{}\", expected local or global", allocation);
  s.global = s.unstructured() && s.method != "movement" ? s.method == "magnitude-global" : allocation == "global";
  s.round_to = params.at("round_to").get<int64_t>();
  check_input(s.round_to >= 1, "prune: 'round_to' = {} must be >= 1", s.round_to);
  const std::string schedule = params.at("schedule").get<std::string>();
  check_input(schedule == "one-shot" || schedule == "iterative" || schedule == "agp",
              "prune: 'schedule' is \"{}\", expected one-shot, iterative or agp", schedule);
  s.gradual = schedule == "agp";
  check_input(!s.gradual || s.unstructured(),
              "prune: schedule 'agp' grows weight masks during fine-tuning and applies to magnitude-local, "
              "magnitude-global and movement, not to method '{}'; hint: use one-shot or iterative", s.method);
  check_input(s.gradual || s.method != "movement",
              "prune: method 'movement' scores weights during fine-tuning and needs schedule = \"agp\", got \"{}\"",
              schedule);
  const int64_t steps = params.at("steps").get<int64_t>();
  check_input(steps >= 1, "prune: 'steps' = {} must be >= 1", steps);
  s.rounds = schedule == "iterative" ? steps : 1;
  const int64_t epochs = params.at("finetune_epochs").get<int64_t>();
  check_input(epochs >= 0, "prune: 'finetune_epochs' = {} must be >= 0", epochs);
  Json training = params;
  training["epochs"] = epochs;
  s.finetune = train_config_from_params(training);
  s.from_sensitivity = params.value("from_sensitivity", -1.0);
  if (s.from_sensitivity >= 0) {
    check_input(s.method == "magnitude-local" || s.method == "block",
                "prune: 'from_sensitivity' gives per-layer ratios to magnitude-local and per-group ratios to block, "
                "not to method '{}'", s.method);
    check_input(schedule == "one-shot", "prune: 'from_sensitivity' prunes in one shot; 'schedule' is \"{}\"",
                schedule);
  }
  s.criterion = params.value("criterion", std::string("magnitude"));
  check_input(s.criterion == "magnitude" || s.criterion == "group-norm" || s.criterion == "taylor" ||
                  s.criterion == "bn-scale",
              "prune: 'criterion' is \"{}\", expected magnitude, group-norm, taylor or bn-scale", s.criterion);
  check_input(s.criterion == "magnitude" || s.method == "block",
              "prune: 'criterion' = \"{}\" ranks coupled channel groups and applies to method 'block', not '{}' "
              "(whose name says how it ranks)", s.criterion, s.method);
  check_input(s.criterion == "magnitude" || s.from_sensitivity < 0,
              "prune: 'criterion' = \"{}\" with 'from_sensitivity': the per-group ratios of a sensitivity stage were "
              "measured by removing the smallest-magnitude channels, so they prune by magnitude", s.criterion);
  s.recalibrate_batches = params.value("recalibrate_batches", int64_t{0});
  check_input(s.recalibrate_batches >= 0, "prune: 'recalibrate_batches' = {} must be >= 0", s.recalibrate_batches);
  check_input(s.recalibrate_batches == 0 || (!s.unstructured() && s.method != "node"),
              "prune: 'recalibrate_batches' re-estimates batch-norm statistics after channels are removed and "
              "applies to the filter and block methods, not '{}'", s.method);
  s.criterion_batches = params.value("criterion_batches", int64_t{32});
  check_input(s.criterion_batches >= 1, "prune: 'criterion_batches' = {} must be >= 1", s.criterion_batches);
  s.slimming_epochs = params.value("slimming_epochs", int64_t{1});
  check_input(s.slimming_epochs >= 0, "prune: 'slimming_epochs' = {} must be >= 0", s.slimming_epochs);
  s.slimming_penalty = params.value("slimming_penalty", 1e-4);
  check_input(s.slimming_penalty >= 0, "prune: 'slimming_penalty' = {} must be >= 0", s.slimming_penalty);
  const bool regrow = params.value("regrow", false);
  check_input(!regrow || s.method == "movement",
              "prune: 'regrow' = true lets movement scores bring pruned weights back and applies to method "
              "'movement', not '{}'", s.method);
  s.distill = params.value("distill", false);
  if (s.distill) s.distillation = read_distill_settings(params, "prune");
  if (s.gradual) {
    check_input(epochs >= 1, "prune: schedule 'agp' prunes during fine-tuning and needs 'finetune_epochs' >= 1");
    s.agp.initial_sparsity = params.at("agp_initial_sparsity").get<double>();
    s.agp.final_sparsity = s.sparsity;
    s.agp.frequency = params.at("agp_frequency").get<int64_t>();
    s.agp.ramp = params.at("agp_ramp").get<double>();
    s.agp.global = s.global;
    s.agp.movement = s.method == "movement";
    s.agp.regrow = regrow;
    check_input(s.agp.initial_sparsity <= s.sparsity,
                "prune: 'agp_initial_sparsity' = {} is above 'sparsity' = {}; the schedule only grows",
                s.agp.initial_sparsity, s.sparsity);
    check_input(!s.agp.movement || s.agp.initial_sparsity == 0,
                "prune: 'agp_initial_sparsity' = {} with method 'movement': movement scores start at zero, so the "
                "initial sparsity must be 0", s.agp.initial_sparsity);
    check_input(s.agp.frequency >= 1, "prune: 'agp_frequency' = {} must be >= 1", s.agp.frequency);
    check_input(s.agp.ramp > 0 && s.agp.ramp <= 1, "prune: 'agp_ramp' = {} must be in (0, 1]", s.agp.ramp);
    const int64_t steps_per_epoch = (train_size + s.finetune.batch_size - 1) / s.finetune.batch_size;
    s.agp_steps = steps_per_epoch * epochs;
    check_input(s.agp.frequency <= s.agp_steps,
                "prune: 'agp_frequency' = {} exceeds the {} optimizer steps of fine-tuning ({} epochs of {} "
                "batches); no mask update would happen", s.agp.frequency, s.agp_steps, epochs, steps_per_epoch);
  }
  if (!s.unstructured()) {
    const ChannelAnalysis analysis = s.method == "node"
                                         ? restrict_to_linear_groups(graph, analyze_channel_groups(graph))
                                         : analyze_channel_groups(graph);
    const bool coupled = s.method == "block";
    int64_t prunable = 0;
    for (const ChannelGroup& group : analysis.groups) {
      if ((coupled ? group.prunable : group.single_producer()) && group.size() > 1) prunable += group.size();
    }
    check_input(prunable > 0 || s.method != "node",
                "prune: method 'node' finds no hidden linear layer with neurons it can remove in this model");
    check_input(prunable > 0,
                "prune: method '{}' finds no channel group it can prune in this model (every group is {}){}",
                s.method, coupled ? "tied to the input or output or a grouped conv" : "coupled or fixed",
                coupled ? "" : "; hint: method = \"block\" prunes coupled groups");
  }
  return s;
}

/// Sparsity reached after `round` of `rounds`: linear for channels; geometric for weights (each round removes the
/// same share of the weights still there).
double scheduled_sparsity(double target, int64_t round, int64_t rounds, bool unstructured) {
  const double progress = static_cast<double>(round) / static_cast<double>(rounds);
  if (unstructured) return 1.0 - std::pow(1.0 - target, progress);
  return target * progress;
}

GraphModule prune_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  const PruneSettings settings = read_prune_settings(stage.params, model->graph(), context.data.train.size());
  const std::map<std::string, double> layer_ratios =
      settings.from_sensitivity >= 0
          ? ratios_from_sensitivity(*context.metrics, settings.from_sensitivity, settings.sparsity)
          : std::map<std::string, double>();
  const TrainLoss distillation =
      settings.distill ? make_distillation_loss(context.baseline, model->graph(), settings.distillation, "prune")
                       : TrainLoss();
  int prune_stages = 0;
  for (const StageConfig& s : context.trial.pipeline) prune_stages += s.stage == "prune" ? 1 : 0;
  const std::string prefix = prune_stages > 1 ? fmt::format("stage{}/", context.stage_index) : "";
  const auto record = [&](const std::string& name, double value) {
    context.metrics->push_back({-1, prefix + name, value});
  };
  const DataSplits& data = context.data;
  const bool validate = data.val.size() > 0;
  const auto val_accuracy = [&] { return evaluate_accuracy(model, data.val, data.mean, data.std, 256); };

  record("params_before", static_cast<double>(count_params(model->graph())));
  record("macs_before", static_cast<double>(count_macs(model->graph())));
  if (validate) record("val_accuracy_before_prune", val_accuracy());

  const ChannelImportance importance = settings.method == "l1-filter"        ? ChannelImportance::L1
                                       : settings.method == "l2-filter"      ? ChannelImportance::L2
                                       : settings.method == "fpgm-filter"    ? ChannelImportance::GeometricMedian
                                       : settings.criterion == "group-norm" ? ChannelImportance::GroupNorm
                                       : settings.criterion == "bn-scale"   ? ChannelImportance::BatchNormScale
                                                                            : ChannelImportance::Block;
  if (settings.criterion == "bn-scale" && settings.slimming_epochs > 0) {
    // Network slimming's sparsity training: the fine-tuning settings on their own schedule, plus the L1 penalty.
    TrainConfig slimming = settings.finetune;
    slimming.epochs = settings.slimming_epochs;
    slimming.lr_span = "stage";
    TrainHooks hooks;
    hold_zero_weights(model, context, hooks);
    add_batch_norm_sparsity(model, settings.slimming_penalty, hooks);
    record_epochs(train_model(model, data, slimming, context.trial.data.augment, stage_seed(context), {}, hooks),
                  context);
    if (validate) record("val_accuracy_after_slimming", val_accuracy());
  }
  // Sizes of the unpruned model's channel groups, by the name of their first producer (names survive pruning): local
  // channel pruning in rounds takes each round's share of these, so rounding to `round_to` never compounds.
  std::map<std::string, int64_t> original_sizes;
  for (const ChannelGroup& group : analyze_channel_groups(model->graph()).groups) {
    if (!group.producers.empty()) original_sizes[model->graph().nodes[group.producers.front()].name] = group.size();
  }
  WeightMasks masks;
  double reached = 0;
  for (int64_t round = 1; round <= settings.rounds; ++round) {
    const double target = scheduled_sparsity(settings.sparsity, round, settings.rounds, settings.unstructured());
    std::unique_ptr<GradualPruner> gradual;
    if (settings.gradual) {
      gradual = std::make_unique<GradualPruner>(model, settings.agp, settings.agp_steps);
    } else if (settings.from_sensitivity >= 0 && settings.unstructured()) {
      masks = magnitude_masks_per_layer(model, layer_ratios);
      apply_masks(model, masks);
    } else if (settings.from_sensitivity >= 0) {
      const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
      model = rebuild_without(model, analysis, select_units_per_group(model, analysis, layer_ratios));
    } else if (settings.unstructured()) {
      masks = magnitude_masks(model, target, settings.global, round > 1 ? &masks : nullptr);
      apply_masks(model, masks);
    } else {
      // The share of what is left that must go for the running total to reach `target`.
      ChannelSelection selection;
      selection.global = settings.global;
      selection.round_to = settings.round_to;
      selection.coupled = settings.method == "block";
      if (settings.global || settings.method == "node") {
        selection.sparsity = reached < 1 ? std::max(0.0, 1.0 - (1.0 - target) / (1.0 - reached)) : 0.0;
      } else {
        selection.sparsity = target;
        for (const ChannelGroup& group : analyze_channel_groups(model->graph()).groups) {
          const auto found = group.producers.empty()
                                 ? original_sizes.end()
                                 : original_sizes.find(model->graph().nodes[group.producers.front()].name);
          selection.base_sizes.push_back(found == original_sizes.end() ? group.size() : found->second);
        }
      }
      if (settings.method == "node") {
        model = prune_nodes(model, selection);
      } else {
        const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
        const std::vector<double> scores =
            settings.criterion == "taylor"
                ? taylor_importance(model, analysis, data, settings.criterion_batches, settings.finetune.batch_size,
                                    stage_seed(context) + static_cast<uint64_t>(round))
                : channel_importance(model, analysis, importance);
        model = rebuild_without(model, analysis, select_units(analysis, scores, selection));
        if (settings.recalibrate_batches > 0) {
          recalibrate_batch_norm(model, data, settings.recalibrate_batches, settings.finetune.batch_size,
                                 stage_seed(context) + 7919 * static_cast<uint64_t>(round));
        }
      }
    }
    reached = target;
    if (round == settings.rounds && validate) record("val_accuracy_after_prune", val_accuracy());
    if (settings.finetune.epochs > 0) {
      TrainHooks hooks = gradual ? gradual->hooks() : TrainHooks();
      if (settings.unstructured() && !gradual) {
        hooks.after_step = [&] { apply_masks(model, masks); };
        hooks.device_state = masks.masks;
      }
      if (!settings.unstructured()) hold_zero_weights(model, context, hooks);  // zeros of an earlier prune stage
      hooks.loss = distillation;
      const TrainConfig finetune = in_trial_span(
          settings.finetune, context, static_cast<double>((round - 1) * settings.finetune.epochs));
      record_epochs(train_model(model, data, finetune, context.trial.data.augment,
                                stage_seed(context) + static_cast<uint64_t>(round), {}, hooks),
                    context);
      if (gradual) gradual->finish();
    }
  }
  if (validate) record("val_accuracy_after_finetune", val_accuracy());

  const std::vector<LayerSparsity> layers = measure_sparsity(model);
  int64_t zeros = 0, total = 0;
  for (const LayerSparsity& layer : layers) {
    zeros += layer.zeros;
    total += layer.total;
    record("sparsity/" + layer.name, layer.percent());
  }
  record("sparsity", LayerSparsity{"", zeros, total}.percent());
  if (settings.unstructured()) context.keep_zero_weights = true;
  record("params_after", static_cast<double>(count_params(model->graph())));
  record("macs_after", static_cast<double>(count_macs(model->graph())));
  return model;
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
      {"prune", prune_stage},
      {"distill", distill_stage},
      {"sensitivity", sensitivity_stage},
      {"quantize", quantize_stage},
  };
  auto it = stages.find(name);
  if (it == stages.end()) stage_spec(name);  // throws InputError listing the known stages
  check_input(it != stages.end(), "stage '{}' has a schema but no implementation", name);
  return it->second;
}

}  // namespace edgesweep
