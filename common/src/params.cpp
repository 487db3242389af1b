// The schema of every experiment section and pipeline stage.
#include "edgesweep/common/params.h"

#include <map>

#include "edgesweep/common/benchmark_request.h"
#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

ParamSpec integer(std::string name, Json def, std::optional<double> min, std::optional<double> max,
                  bool sweepable, std::string doc) {
  ParamSpec p;
  p.name = std::move(name);
  p.type = ParamType::Integer;
  p.default_value = std::move(def);
  p.min = min;
  p.max = max;
  p.sweepable = sweepable;
  p.doc = std::move(doc);
  return p;
}

ParamSpec real(std::string name, Json def, std::optional<double> min, std::optional<double> max, bool sweepable,
               std::string doc, bool min_exclusive = false) {
  ParamSpec p = integer(std::move(name), std::move(def), min, max, sweepable, std::move(doc));
  p.type = ParamType::Float;
  p.min_exclusive = min_exclusive;
  return p;
}

ParamSpec text(std::string name, Json def, std::vector<std::string> choices, bool sweepable, std::string doc) {
  ParamSpec p;
  p.name = std::move(name);
  p.type = ParamType::String;
  p.default_value = std::move(def);
  p.choices = std::move(choices);
  p.sweepable = sweepable;
  p.doc = std::move(doc);
  return p;
}

ParamSpec boolean(std::string name, bool def, bool sweepable, std::string doc) {
  ParamSpec p;
  p.name = std::move(name);
  p.type = ParamType::Boolean;
  p.default_value = def;
  p.sweepable = sweepable;
  p.doc = std::move(doc);
  return p;
}

ParamSpec list(std::string name, ParamType type, Json def, std::string doc) {
  ParamSpec p;
  p.name = std::move(name);
  p.type = type;
  p.default_value = std::move(def);
  p.doc = std::move(doc);
  return p;
}

/// A training's precision; absent: [run] precision, which the spec writes in where it is not fp32.
ParamSpec precision_param(bool sweepable) {
  ParamSpec p = text("precision", "fp32", {"fp32", "bf16", "fp16"}, sweepable,
                     "autocast of the forward pass and the loss: fp32; bf16 (CPUs with AVX-512 BF16 or AMX, and "
                     "GPUs); fp16 (GPUs, with a loss scaler). Weights, optimizer state, batch norm and the loss stay "
                     "fp32; evaluation, calibration and export are unchanged. Default: [run] precision");
  p.fill_default = false;
  return p;
}

/// A training's warm-up; absent from the config (and its hash) when 0.
ParamSpec warmup_param(bool sweepable) {
  ParamSpec p = real("warmup_epochs", 0.0, 0.0, 1000.0, sweepable,
                     "epochs (fractions allowed) of linear warm-up from lr / steps to lr before the schedule; "
                     "one-cycle: the length of its rising phase");
  p.fill_default = false;
  return p;
}

/// Whether a training's schedule is its own or the trial's; absent from the config (and its hash) when "stage".
ParamSpec span_param(bool sweepable) {
  ParamSpec p = text("lr_span", "stage", {"stage", "trial"}, sweepable,
                     "stage: the schedule (and warm-up) runs over this training alone; trial: one schedule runs over "
                     "the trainings of every stage of the trial that says trial, in pipeline order (a prune stage's "
                     "rounds of fine-tuning, distillation, QAT), each at its own lr times the schedule's factor at "
                     "its place, so a cosine anneals once over them all");
  p.fill_default = false;
  return p;
}

/// Training settings shared by [baseline] and the train/finetune stages; defaults differ per use.
std::vector<ParamSpec> training_params(int epochs, double lr, bool sweepable) {
  return {
      integer("epochs", epochs, 0, 1000, sweepable, "passes over the training split"),
      real("lr", lr, 0.0, 10.0, sweepable, "initial learning rate", true),
      text("optimizer", "sgd", {"sgd", "adam"}, sweepable, "sgd (with momentum) or adam"),
      real("momentum", 0.9, 0.0, 0.999, sweepable, "SGD momentum"),
      boolean("nesterov", false, sweepable, "Nesterov momentum for SGD"),
      real("weight_decay", 5e-4, 0.0, 1.0, sweepable, "L2 weight decay"),
      integer("batch_size", 128, 1, 65536, sweepable, "training batch size"),
      text("lr_schedule", "cosine", {"constant", "step", "cosine", "one-cycle"}, sweepable,
           "learning rate per optimizer step: constant; step (x gamma every step_size epochs); cosine (half a cosine "
           "from lr to 0 over the steps after the warm-up); one-cycle (Smith & Topin: a cosine rise from lr/25 to lr "
           "over the warm-up, 30 % of the steps when warmup_epochs is 0, then a cosine fall to lr/250000; the "
           "momentum is not cycled)"),
      integer("step_size", 1, 1, 1000, sweepable, "epochs between decays for the step schedule"),
      real("gamma", 0.1, 0.0, 1.0, sweepable, "decay factor for the step schedule", true),
      precision_param(sweepable),
      warmup_param(sweepable),
      span_param(sweepable),
  };
}

/// The knowledge-distillation settings shared by the distill stage and the fine-tuning of the prune stage.
std::vector<ParamSpec> distillation_params() {
  return {
      real("temperature", 4.0, 0.0, 100.0, true,
           "distillation: softmax temperature T applied to the teacher's and the student's logits", true),
      real("alpha", 0.7, 0.0, 1.0, true,
           "distillation: weight of the T^2-scaled KL term; 1 - alpha weighs cross-entropy on the labels"),
  };
}

/// The distill stage: Hinton knowledge distillation from the baseline or an archive, an optional hint loss, and
/// its training keys.
std::vector<ParamSpec> distill_params() {
  std::vector<ParamSpec> params = {
      text("teacher", "baseline", {}, true,
           "baseline: the trial's trained baseline; or the path of an edgesweep TorchScript archive (any earlier "
           "artifact, e.g. results/<name>/artifacts/<sha256>.pt) whose classes match; run in eval mode without "
           "gradients"),
      text("hint_layer", "", {}, true,
           "name of a layer present in teacher and student whose outputs feed a feature (hint) loss; empty: none. "
           "Spatial sizes must match; when channel counts differ a 1x1 conv regressor maps the student's to the "
           "teacher's (trained with the student, not exported)"),
      real("hint_weight", 1.0, 0.0, 1000.0, true,
           "weight beta of the hint loss beta * mean squared error(regressor(student feature), teacher feature)"),
  };
  for (ParamSpec& p : distillation_params()) params.push_back(std::move(p));
  for (ParamSpec& p : training_params(1, 0.01, true)) params.push_back(std::move(p));
  return params;
}

/// The prune stage: what to remove, how much, on which schedule, and the fine-tuning in between. Fine-tuning takes
/// the finetune stage's training keys with `finetune_epochs` in place of `epochs` (one name for one meaning).
std::vector<ParamSpec> prune_params() {
  ParamSpec sparsity = real("sparsity", nullptr, 0.0, 1.0, true,
                            "share removed: of prunable weights (magnitude-*), of the channels of each prunable group "
                            "(filter/block, local allocation) or of all prunable channels (global allocation)");
  sparsity.max_exclusive = true;
  ParamSpec agp_initial = real("agp_initial_sparsity", 0.0, 0.0, 1.0, true,
                               "agp: sparsity s_i applied before the first step (0 for movement)");
  agp_initial.max_exclusive = true;
  std::vector<ParamSpec> params = {
      text("method", nullptr,
           {"magnitude-local", "magnitude-global", "movement", "l1-filter", "l2-filter", "fpgm-filter", "block",
            "node"},
           true,
           "magnitude-local/-global: zero the smallest conv and linear weights per layer or under one threshold; "
           "movement: zero the conv and linear weights with the lowest movement score -sum(grad * weight) gathered "
           "during fine-tuning (schedule = \"agp\"; meant for transfer learning, where weights move from "
           "pretrained values; `allocation` picks per layer or one threshold); "
           "l1-filter/l2-filter: remove whole filters of uncoupled convs by norm; fpgm-filter: remove the filters "
           "nearest the layer's geometric median (smallest summed distance to the others); block: remove coupled "
           "channel groups (residual adds, concats, depthwise convs) by average weight magnitude; node: remove "
           "whole neurons of hidden linear layers by the L2 norm of their incoming weights (the next layer shrinks "
           "too)"),
      sparsity,
      text("allocation", "local", {"local", "global"}, true,
           "filter/block/node: the same share in every group (local) or one ranking of all channels (global); "
           "movement: per layer (local) or one threshold (global); ignored by magnitude-* (their name says it)"),
      integer("round_to", 1, 1, 4096, true,
              "filter/block: channels kept per group are rounded up to a multiple of this (8 for hardware-friendly "
              "shapes), never above the original count"),
      text("schedule", "one-shot", {"one-shot", "iterative", "agp"}, true,
           "one-shot: prune once, then fine-tune; iterative: `steps` rounds of pruning and fine-tuning; agp "
           "(magnitude-*, movement): masks grow during fine-tuning on Zhu & Gupta's cubic schedule "
           "s_t = s_f + (s_i - s_f)(1 - t / (n dt))^3, s_i = agp_initial_sparsity, s_f = sparsity"),
      integer("steps", 3, 1, 100, true,
              "iterative: rounds; the share grows linearly to `sparsity` for filter/block and geometrically "
              "(the same share of the remaining weights each round) for magnitude-*"),
      integer("finetune_epochs", 1, 0, 1000, true, "fine-tuning epochs after each pruning round (masks held)"),
      agp_initial,
      integer("agp_frequency", 10, 1, 1000000, true, "agp: optimizer steps dt between mask updates"),
      real("agp_ramp", 0.75, 0.0, 1.0, true,
           "agp: share of the fine-tuning steps over which sparsity rises to s_f (n = ramp steps / dt); the rest "
           "fine-tunes with the final masks", true),
  };
  for (ParamSpec& p : training_params(1, 0.01, true)) {
    if (p.name != "epochs") params.push_back(std::move(p));
  }
  params.push_back(real("from_sensitivity", -1.0, -1.0, 100.0, true,
                        "per-layer ratios from an earlier sensitivity stage: each layer (magnitude-local) or group "
                        "(block) gets the largest analysed ratio whose accuracy drop is at most this many points, "
                        "capped at `sparsity` (one-shot only); negative: off"));
  const auto optional = [&params](ParamSpec p) {  // absent from the config (and its hash) when at its default
    p.fill_default = false;
    params.push_back(std::move(p));
  };
  optional(text("criterion", "magnitude", {"magnitude", "group-norm", "taylor", "bn-scale"}, true,
                "block: how channels are ranked. magnitude: mean |w| of every weight tied to the channel; group-norm: "
                "L2 norm of the whole coupled group's weights including the batch-norm scales (DepGraph); taylor: "
                "first-order Taylor, (sum of weight x gradient of the parameters producing the channel)^2 averaged "
                "over criterion_batches training batches (Molchanov et al. 2019); bn-scale: |gamma| of the batch "
                "norms on the channel's path after slimming_epochs of training with an L1 penalty on gamma "
                "(network slimming, Liu et al. 2017)"));
  optional(integer("recalibrate_batches", 0, 0, 100000, true,
                   "filter/block: training batches over which every batch norm's running statistics are estimated "
                   "again after each pruning round, before fine-tuning (the removed channels change what every later "
                   "layer sees); 0: off"));
  optional(integer("criterion_batches", 32, 1, 100000, true,
                   "taylor: training batches the importance is averaged over"));
  optional(integer("slimming_epochs", 1, 0, 1000, true,
                   "bn-scale: epochs of sparsity training (the fine-tuning settings plus slimming_penalty * |gamma|) "
                   "before the first pruning round"));
  optional(real("slimming_penalty", 1e-4, 0.0, 1.0, true,
                "bn-scale: weight of the L1 penalty on the batch-norm scales during the sparsity training"));
  ParamSpec regrow = boolean("regrow", false, true,
                              "movement: pruned weights keep their values, masked in the forward pass, and their "
                              "scores keep moving (straight-through), so a weight comes back when its score rises "
                              "(Sanh et al. 2020); the masks are made permanent when fine-tuning ends. false: a "
                              "pruned weight is zeroed at each mask update and never returns");
  regrow.fill_default = false;
  params.push_back(std::move(regrow));
  params.push_back(boolean("distill", false, true,
                           "fine-tune with knowledge distillation from the baseline (temperature, alpha) instead of "
                           "cross-entropy alone"));
  for (ParamSpec& p : distillation_params()) params.push_back(std::move(p));
  return params;
}

/// The quantize stage: what is quantized (mode), for which engine, how activation ranges are found, and the
/// fine-tuning of quantization-aware training (the finetune stage's training keys with `qat_epochs` for `epochs`).
std::vector<ParamSpec> quantize_params() {
  std::vector<ParamSpec> params = {
      text("mode", nullptr, {"none", "dynamic-fp16", "dynamic-int8", "static-int8", "qat-int8"}, true,
           "none: the model passes through unchanged; dynamic-fp16: weights stored in fp16 and cast to fp32 when "
           "used (half the file, same speed); dynamic-int8: linear layers run int8 with activations quantized per "
           "batch, convs stay fp32; static-int8: batch norms folded, activations calibrated, every conv and linear "
           "runs int8; qat-int8: static-int8 after fine-tuning with fake quantization"),
      text("engine", "onednn", {"onednn", "qnnpack"}, true,
           "quantized kernels the weights are packed for: onednn (x86) or qnnpack (ARM); recorded in the artifact, "
           "whose outputs differ slightly between engines"),
      text("observer", "minmax", {"minmax", "moving-average", "histogram"}, true,
           "static/qat: activation range from the min and max seen, their moving average over batches, or the "
           "[100 - percentile, percentile] percentiles of a histogram of every value (clips outliers)"),
      real("percentile", 99.99, 50.0, 100.0, true, "observer = histogram: the percentile kept", true),
      boolean("per_channel", true, true,
              "int8 weights with one scale per output channel (true) or one per tensor (false); symmetric either way"),
      integer("calibration_batches", 16, 1, 100000, true,
              "static/qat: training batches of `batch_size` images run through the model to set activation ranges"),
      integer("qat_epochs", 2, 0, 1000, true,
              "qat-int8: fine-tuning epochs with fake-quantized weights and activations (batch norms are folded into "
              "the convs before)"),
      integer("freeze_observers_epoch", 2, 1, 1000, true,
              "qat-int8: activation observers keep updating on training batches before this epoch (1-based) and are "
              "frozen from it on; 1 keeps the calibrated ranges throughout"),
  };
  for (ParamSpec& p : training_params(1, 0.005, true)) {
    if (p.name != "epochs") params.push_back(std::move(p));
  }
  params.push_back(boolean("distill", false, true,
                           "qat-int8: fine-tune with knowledge distillation from the baseline (temperature, alpha) "
                           "instead of cross-entropy alone"));
  for (ParamSpec& p : distillation_params()) params.push_back(std::move(p));
  return params;
}

std::map<std::string, SectionSpec> make_sections() {
  std::map<std::string, SectionSpec> sections;
  sections["experiment"] = {"experiment",
                            {
                                text("name", nullptr, {}, false, "experiment name; also names its results folder"),
                                integer("seed", 0, 0, 4294967295.0, false, "seed of every random choice"),
                                text("description", "", {}, false, "free text kept with the experiment"),
                            }};
  sections["data"] = {
      "data",
      {
          text("dataset", "fashion-mnist", {"fashion-mnist", "cifar10", "imagefolder"}, false, "dataset format"),
          text("path", "", {}, false,
               "folder of the dataset; empty means the Debian package's copy (fashion-mnist only)"),
          integer("train_subset", 0, 0, std::nullopt, false, "use this many training images (0 = all)"),
          integer("test_subset", 0, 0, std::nullopt, false, "use this many test images (0 = all)"),
          real("val_fraction", 0.1, 0.0, 0.5, false, "share of the training images held out for validation"),
          boolean("augment", false, false, "random crop (pad 2 for 28 px, 4 otherwise) and horizontal flip"),
          integer("image_size", 32, 8, 1024, false, "imagefolder: images are resized to this square size"),
          integer("channels", 3, 1, 3, false, "imagefolder: 1 (grey) or 3 (RGB)"),
          real("test_fraction", 0.2, 0.05, 0.5, false, "imagefolder: share of images kept for the test split"),
          list("classes", ParamType::IntegerList, Json::array(),
               "keep only these classes (indices into the dataset's classes, at least 2, each once) in the train, "
               "validation and test splits, relabelled by their position in the list (e.g. [5, 6]: 5 -> 0, "
               "6 -> 1); the model gets one output per listed class. Applied first: val_fraction, train_subset and "
               "test_subset then take their share of the kept images. Leave out for all classes"),
          integer("resize", 0, 0, 1024, false,
                  "images resized to this square size (bilinear), e.g. for a network made for another resolution; "
                  "0: as the dataset has them"),
          boolean("rgb", false, false, "grey images replicated to three channels (for networks that take RGB)"),
          list("mean", ParamType::FloatList, Json::array(),
               "normalisation mean per channel in [0, 1] units (e.g. ImageNet's [0.485, 0.456, 0.406] for a network "
               "trained with it); empty: the training split's own"),
          list("std", ParamType::FloatList, Json::array(),
               "normalisation standard deviation per channel, with mean; empty: the training split's own"),
      }};
  ParamSpec split_seed = integer("split_seed", -1, -1, 4294967295.0, false,
                                 "seed of the train/validation/test splits and subsets; -1: [experiment] seed. Set, "
                                 "runs of several seeds train and validate on the same images");
  split_seed.fill_default = false;
  sections["data"].params.push_back(std::move(split_seed));
  sections["model"] = {
      "model",
      {
          text("arch", "small-cnn",
               {"small-cnn", "vgg", "resnet8", "resnet20", "mobilenetv2", "custom", "torchscript"}, true,
               "zoo architecture, custom with [[model.layers]], or torchscript: your own network from `path`"),
          real("width", 1.0, 0.125, 8.0, true, "channel width multiplier for zoo architectures"),
          list("layers", ParamType::TableList, Json::array(), "inline layers for arch = \"custom\""),
          text("path", "", {}, false,
               "arch = \"torchscript\": a TorchScript archive (torch.jit.script or torch.jit.trace, saved from Python "
               "or C++) imported with its weights; relative paths are read from the working folder; its sha256 "
               "enters the baseline hash"),
          list("input_shape", ParamType::IntegerList, Json::array(),
               "arch = \"torchscript\": [C, H, W] of one input image, as the data gives it"),
      }};
  sections["baseline"] = {"baseline", {}};
  for (ParamSpec& p : training_params(3, 0.05, true)) {
    if (p.name != "lr_span") sections["baseline"].params.push_back(std::move(p));  // the baseline is no stage
  }
  sections["baseline"].params.push_back(
      text("init", "", {}, false,
           "path of an edgesweep float archive (e.g. results/cache/<baseline hash>.pt) whose weights the baseline "
           "starts from before its training (fine-tuning on this experiment's data); its graph must be the one "
           "[model] builds except for the outputs of the last linear layer, which is freshly initialised when the "
           "class count or the classes differ. Relative paths are read from the working folder; its sha256 enters the baseline "
           "hash. Empty: fresh weights"));
  sections["search"] = {"search",
                        {
                            text("strategy", "grid", {"grid", "random"}, false, "grid: every combination; random: a sample"),
                            integer("max_trials", 0, 0, std::nullopt, false,
                                    "random: how many combinations (0 = all); grid: an upper bound (0 = none)"),
                        }};
  sections["run"] = {"run",
                     {
                         integer("threads", 0, 0, 256, false, "LibTorch threads per worker (0 = cores / busy workers)"),
                         text("results_dir", "", {}, false, "where the database and artifacts go (default results/<name>)"),
                         integer("eval_batch_size", 256, 1, 65536, false, "batch size of evaluation passes"),
                         integer("max_attempts", 1, 1, 100, false, "attempts of a trial in one run before it stays failed"),
                         real("latency_seconds", 0.5, 0.0, 60.0, false,
                              "in-process latency of every artifact: about this long per batch size (1 and 32), a "
                              "quarter warm-up; 0 disables"),
                         real("trial_timeout_seconds", 0.0, 0.0, 31536000.0, false,
                              "wall-clock limit of each task (baseline or trial): past it the task stops at its next "
                              "step and is recorded failed as 'timeout after N s'; 0 = none"),
                         real("heartbeat_seconds", 10.0, 0.05, 3600.0, false,
                              "a worker rank reports its progress (stage, epoch, step) to rank 0 this often"),
                         real("heartbeat_timeout_seconds", 120.0, 1.0, 86400.0, false,
                              "a worker rank silent this long while it holds a task is reported lost with its task, "
                              "which fails; the run ends once the other ranks are done"),
                         integer("ranks_per_trial", 1, 1, 4096, false,
                                 "worker ranks that train one task together, data-parallel (each on its shard of every "
                                 "batch, gradients averaged); must divide the worker ranks"),
                         text("precision", "fp32", {"fp32", "bf16", "fp16"}, false,
                              "precision of every training (baseline and stages) that does not set its own: fp32, "
                              "bf16 (autocast; CPUs with AVX-512 BF16 or AMX, GPUs) or fp16 (GPUs, loss scaling)"),
                         text("memory_format", "auto", {"auto", "contiguous", "channels-last"}, false,
                              "layout of convolutional networks' tensors in training and evaluation: auto (a short "
                              "timed probe per network and batch picks the faster), contiguous (NCHW) or "
                              "channels-last (NHWC); archives are exported unchanged"),
                         text("device", "cpu", {"cpu", "cuda"}, false,
                              "where tasks train and evaluate: cpu, or cuda (each worker rank on the GPU local rank % "
                              "GPUs of its node; needs a LibTorch built with CUDA)"),
                     }};
  sections["objectives"] = {
      "objectives",
      {
          list("maximize", ParamType::StringList, Json::array({"accuracy"}),
               "metrics to maximise in `edgesweep pareto` (accuracy, fps, ...)"),
          list("minimize", ParamType::StringList, Json::array({"latency_p50_ms", "peak_rss_mb", "model_bytes"}),
               "metrics to minimise (latency_p50_ms, latency_p90_ms, latency_p99_ms, peak_rss_mb, model_bytes, "
               "compressed_bytes, params, macs, accuracy_drop, ...)"),
          list("constraints", ParamType::StringList, Json::array(),
               "conditions every chosen candidate meets, \"<metric> <op> <number>\" with op <=, <, >=, >, ==, e.g. "
               "\"accuracy_drop <= 1.0\""),
      }};
  sections["measure"] = {
      "measure",
      {
          list("batch_sizes", ParamType::FloatList, Json(default_benchmark_batch_sizes()),
               "batch sizes every artifact is benchmarked at on every device (whole numbers >= 1)"),
          integer("warmup_runs", 5, 0, 100000, false, "untimed runs before timing, per batch size"),
          real("warmup_seconds", 0.5, 0.0, 3600.0, false, "and at least this long of untimed runs"),
          integer("min_runs", 20, 1, 1000000, false, "timed runs per batch size, at least"),
          real("min_seconds", 1.0, 0.0, 3600.0, false, "and at least this long of timed runs"),
          integer("accuracy_images", 0, 0, std::nullopt, false,
                  "test images the device classifies for its own accuracy (0 = the whole test split)"),
          text("dataset_path", "", {}, false,
               "the evaluation set's folder on the devices (empty: [data] path, else the packaged location)"),
          integer("max_attempts", 3, 1, 100, false, "attempts of a measurement before it stays failed"),
          real("retry_seconds", 2.0, 0.0, 3600.0, false, "wait before the first retry; doubles with every attempt"),
          real("heartbeat_seconds", 5.0, 0.1, 3600.0, false, "an idle device is pinged this often"),
          integer("offline_after", 3, 1, 1000, false, "missed heartbeats after which a device is marked offline"),
          real("benchmark_timeout_seconds", 600.0, 1.0, 86400.0, false,
               "longest wait for one benchmark's result (queueing on the agent included)"),
          real("timeout_seconds", 1800.0, 0.0, 604800.0, false,
               "once the trials are over, how long the run waits for the remaining measurements"),
          boolean("during_training", true, false,
                  "measure while trials still train (false: only once every trial is over, so a device that "
                  "shares the host's cores is measured undisturbed)"),
      }};
  return sections;
}

std::map<std::string, SectionSpec> make_stages() {
  std::map<std::string, SectionSpec> stages;
  stages["train"] = {"train", training_params(3, 0.05, true)};
  stages["train"].params.push_back(
      boolean("reinitialize", true, false, "start from fresh weights (false: continue from the incoming model)"));
  stages["finetune"] = {"finetune", training_params(1, 0.01, true)};
  stages["prune"] = {"prune", prune_params()};
  stages["quantize"] = {"quantize", quantize_params()};
  stages["distill"] = {"distill", distill_params()};
  stages["sensitivity"] = {
      "sensitivity",
      {
          text("method", "magnitude", {"magnitude", "block"}, false,
               "magnitude: zero the smallest weights of one conv or linear layer at a time; block: remove the "
               "weakest channels of one prunable channel group at a time"),
          list("ratios", ParamType::FloatList, Json::array({0.25, 0.5, 0.75}),
               "shares pruned, each in (0, 1); every layer or group is tried at each"),
      }};
  return stages;
}

SectionSpec make_device_spec() {
  return {"device",
          {
              text("name", nullptr, {}, false, "device name, unique in the experiment; labels its measurements"),
              text("address", nullptr, {}, false, "HOST:PORT of the device's agent (IPv6 hosts in brackets)"),
              text("token_file", "", {}, false,
                   "file holding the agent's shared token (empty: no token, loopback only); with it the connection "
                   "speaks TLS 1.3 on a key derived from the token"),
              text("tls_fingerprint", "", {}, false,
                   "SHA-256 fingerprint of the agent's TLS certificate (\"sha256:\" and 64 hex digits, colons "
                   "allowed): TLS pinned to that certificate instead of the token's key"),
              text("profile", "", {}, false, "agent profile to benchmark with (empty: the agent's default)"),
              boolean("spawn", false, false, "start a loopback agent at `address` when none answers"),
              integer("threads", 0, 0, 1024, false, "spawn: LibTorch threads of the agent's benchmarks (0: its default)"),
              integer("memory_mb", 0, 0, std::nullopt, false, "spawn: memory cap of each benchmark in MB (0: none)"),
              text("cpus", "", {}, false, "spawn: CPU list of the benchmarks, e.g. \"0\" or \"0,1\" (empty: all)"),
              text("engine", "", {}, false, "spawn: quantized engine (onednn, qnnpack; empty: the artifact's own)"),
          }};
}

SectionSpec make_layer_spec() {
  return {"layer",
          {
              text("op", nullptr,
                   {"conv", "batchnorm", "relu", "relu6", "maxpool", "avgpool", "adaptive_avgpool", "linear", "add",
                    "concat", "flatten", "dropout"},
                   false, "operator"),
              text("name", "", {}, false, "layer name (default: op and index)"),
              list("inputs", ParamType::StringList, Json::array(), "names of input layers (default: the previous)"),
              integer("out", 0, 0, 65536, false, "conv: output channels; linear: output features"),
              integer("kernel", 0, 0, 64, false, "conv and pool: kernel size (0 = 3 for conv, 2 for pools)"),
              integer("stride", 0, 0, 64, false, "conv and pool: stride (0 = 1 for conv, the kernel for pools)"),
              integer("padding", -1, -1, 64, false, "conv and pool: padding (-1 = kernel / 2 for conv, 0 for pool)"),
              integer("groups", 1, 1, 65536, false, "conv: groups (equal to channels = depthwise)"),
              boolean("bias", true, false, "conv and linear: with a bias"),
              integer("output_size", 1, 1, 1024, false, "adaptive_avgpool: output height and width"),
              real("p", 0.5, 0.0, 1.0, false, "dropout probability", false),
          }};
}

}  // namespace

const ParamSpec* SectionSpec::find(const std::string& key) const {
  for (const ParamSpec& p : params) {
    if (p.name == key) return &p;
  }
  return nullptr;
}

const SectionSpec& section_spec(const std::string& section) {
  static const std::map<std::string, SectionSpec> sections = make_sections();
  auto it = sections.find(section);
  EDGESWEEP_ASSERT(it != sections.end());
  return it->second;
}

const std::vector<std::string>& section_names() {
  static const std::vector<std::string> names = {"experiment", "data",  "model",     "baseline",
                                                 "search",     "run",   "objectives", "measure"};
  return names;
}

namespace {
const std::map<std::string, SectionSpec>& stage_specs() {
  static const std::map<std::string, SectionSpec> stages = make_stages();
  return stages;
}
}  // namespace

const SectionSpec& stage_spec(const std::string& stage) {
  auto it = stage_specs().find(stage);
  if (it == stage_specs().end()) {
    std::string known;
    for (const std::string& name : stage_names()) known += (known.empty() ? "" : ", ") + name;
    throw InputError(fmt::format("unknown stage '{}' (known stages: {})", stage, known));
  }
  return it->second;
}

std::vector<std::string> stage_names() {
  std::vector<std::string> names;
  for (const auto& [name, spec] : stage_specs()) names.push_back(name);
  return names;
}

const SectionSpec& layer_spec() {
  static const SectionSpec spec = make_layer_spec();
  return spec;
}

const SectionSpec& device_spec() {
  static const SectionSpec spec = make_device_spec();
  return spec;
}

const char* type_name(ParamType type) {
  switch (type) {
    case ParamType::Integer: return "integer";
    case ParamType::Float: return "number";
    case ParamType::String: return "string";
    case ParamType::Boolean: return "boolean";
    case ParamType::StringList: return "array of strings";
    case ParamType::FloatList: return "array of numbers";
    case ParamType::IntegerList: return "array of integers";
    case ParamType::TableList: return "array of tables";
  }
  return "value";
}

std::string check_value(const ParamSpec& spec, Json& value) {
  switch (spec.type) {
    case ParamType::Integer:
      if (!value.is_number_integer()) return fmt::format("'{}' must be an integer, got {}", spec.name, value.dump());
      break;
    case ParamType::Float:
      if (!value.is_number()) return fmt::format("'{}' must be a number, got {}", spec.name, value.dump());
      value = value.get<double>();
      break;
    case ParamType::String:
      if (!value.is_string()) return fmt::format("'{}' must be a string, got {}", spec.name, value.dump());
      if (!spec.choices.empty()) {
        const auto s = value.get<std::string>();
        bool known = false;
        for (const auto& c : spec.choices) known = known || c == s;
        if (!known) {
          std::string all;
          for (const auto& c : spec.choices) all += (all.empty() ? "" : ", ") + c;
          return fmt::format("'{}' is \"{}\", expected one of: {}", spec.name, s, all);
        }
      }
      return "";
    case ParamType::Boolean:
      if (!value.is_boolean()) return fmt::format("'{}' must be true or false, got {}", spec.name, value.dump());
      return "";
    case ParamType::StringList:
      if (!value.is_array()) return fmt::format("'{}' must be an array of strings", spec.name);
      for (const auto& v : value) {
        if (!v.is_string()) return fmt::format("'{}' must be an array of strings, got {}", spec.name, v.dump());
      }
      return "";
    case ParamType::FloatList:
      if (!value.is_array()) return fmt::format("'{}' must be an array of numbers", spec.name);
      for (auto& v : value) {
        if (!v.is_number()) return fmt::format("'{}' must be an array of numbers, got {}", spec.name, v.dump());
        v = v.get<double>();
      }
      return "";
    case ParamType::IntegerList:
      if (!value.is_array()) return fmt::format("'{}' must be an array of integers", spec.name);
      for (const auto& v : value) {
        if (!v.is_number_integer()) {
          return fmt::format("'{}' must be an array of integers, got {}", spec.name, v.dump());
        }
      }
      return "";
    case ParamType::TableList:
      if (!value.is_array()) return fmt::format("'{}' must be an array of tables", spec.name);
      return "";
  }
  const double x = value.get<double>();
  if (spec.min && (spec.min_exclusive ? x <= *spec.min : x < *spec.min)) {
    return fmt::format("'{}' = {} is out of range: must be {} {}", spec.name, value.dump(),
                       spec.min_exclusive ? ">" : ">=", *spec.min);
  }
  if (spec.max && (spec.max_exclusive ? x >= *spec.max : x > *spec.max)) {
    return fmt::format("'{}' = {} is out of range: must be {} {}", spec.name, value.dump(),
                       spec.max_exclusive ? "<" : "<=", *spec.max);
  }
  return "";
}

}  // namespace edgesweep
