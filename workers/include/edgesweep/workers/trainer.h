// The training loop (SGD with momentum/Nesterov or Adam, weight decay, constant/step/cosine learning rate)
// and top-1 evaluation.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "edgesweep/common/trial_config.h"
#include "edgesweep/workers/dataset.h"
#include "edgesweep/workers/graph_module.h"

namespace edgesweep {

/// What one epoch produced.
struct EpochRecord {
  int64_t epoch = 0;  ///< 1-based
  double train_loss = 0;
  double train_accuracy = 0;  ///< percent, on the training batches as seen (augmented, in training mode)
  double val_accuracy = -1;   ///< percent; -1 when there is no validation split
  double lr = 0;              ///< learning rate at the epoch's start
  double seconds = 0;
  double images_per_second = 0;
  bool channels_last = false;   ///< trained in channels-last layout
  int64_t skipped_steps = 0;    ///< fp16: steps skipped for inf or NaN gradients (loss scaling)
  double input_wait_seconds = 0;  ///< time the steps waited for the input pipeline's next batch
};

/// A training loss computed from the model's logits, the labels and the normalised inputs of a batch.
using TrainLoss =
    std::function<torch::Tensor(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& inputs)>;

/// Calls into the training loop, for stages that constrain the weights (pruning masks), score them from their
/// gradients, or train against another objective (distillation).
struct TrainHooks {
  std::function<void()> after_step;      ///< after every optimizer step
  std::function<void()> after_backward;  ///< after the gradients are computed, before the optimizer step
  TrainLoss loss;                        ///< replaces cross-entropy of logits and labels when set
  std::vector<torch::Tensor> extra_parameters;  ///< trained with the model's own (e.g. a hint regressor)
  /// What the hooks compute with besides the model, moved with it to the task's device for the training and back
  /// to the CPU after: modules (a distillation teacher) and tensors (pruning masks, movement scores), in place.
  std::vector<torch::nn::Module*> modules;
  std::vector<torch::Tensor> device_state;
};

/// Learning rate at `step` of `total_steps` (steps are batches; `steps_per_epoch` for the step schedule).
double learning_rate_at(const TrainConfig& config, int64_t step, int64_t steps_per_epoch, int64_t total_steps);

/// Trains `model` in place on `data.train`, validating on `data.val` after each epoch; `on_epoch` sees each record.
/// Deterministic in `seed` (shuffling, augmentation, dropout). Throws Error when the loss becomes NaN or infinite.
/// Runs on task_device::current(): the model and the hooks' state go there for the training and come back to the
/// CPU after.
std::vector<EpochRecord> train_model(GraphModule& model, const DataSplits& data, const TrainConfig& config,
                                     bool augment, uint64_t seed,
                                     const std::function<void(const EpochRecord&)>& on_epoch = {},
                                     const TrainHooks& hooks = {});

/// Top-1 accuracy in percent of `model` (in eval mode) on `dataset`, computed on task_device::current().
double evaluate_accuracy(GraphModule& model, const Dataset& dataset, const std::vector<double>& mean,
                         const std::vector<double>& std, int64_t batch_size);

}  // namespace edgesweep
