// Training loop and evaluation.
#include "edgesweep/workers/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include <torch/torch.h>

#include "edgesweep/common/collective.h"
#include "edgesweep/common/error.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/workers/device.h"
#include "edgesweep/workers/gradient_sync.h"
#include "edgesweep/workers/input_pipeline.h"
#include "edgesweep/workers/mixed_precision.h"

namespace edgesweep {
namespace {
/// Batches the input pipeline prepares ahead of the step: one computing and one ready covers a step's variation.
constexpr int64_t kPrefetchedBatches = 2;

/// Top-1 accuracy on this rank.
double evaluate_here(GraphModule& model, const Dataset& dataset, const std::vector<double>& mean,
                     const std::vector<double>& std, int64_t batch_size);
}  // namespace

double learning_rate_at(const TrainConfig& config, int64_t step, int64_t steps_per_epoch, int64_t total_steps) {
  // In steps of this training: where the step lies in its span and the span's length (the trial's span when the
  // training is part of one, measured in this training's steps per epoch), and the warm-up's length.
  const double per_epoch = static_cast<double>(std::max<int64_t>(steps_per_epoch, 1));
  double position = static_cast<double>(step);
  double length = static_cast<double>(total_steps);
  if (config.span_total_epochs > 0) {
    position += config.span_offset_epochs * per_epoch;
    length = config.span_total_epochs * per_epoch;
  }
  const double warmup = std::min(config.warmup_epochs * per_epoch, length);
  if (config.lr_schedule == "one-cycle") {
    // PyTorch's OneCycleLR shape (div_factor 25, final_div_factor 1e4, cosine phases); the rise is the warm-up, or
    // 30 % of the span.
    if (length <= 0) return config.lr;
    const double rise = warmup > 0 ? warmup : 0.3 * length;
    const double low = config.lr / 25.0, lowest = low / 1e4;
    const auto cosine_between = [](double from, double to, double share) {
      return to + 0.5 * (from - to) * (1.0 + std::cos(M_PI * std::clamp(share, 0.0, 1.0)));
    };
    if (position < rise) return cosine_between(low, config.lr, position / rise);
    return length > rise ? cosine_between(config.lr, lowest, (position - rise) / (length - rise)) : config.lr;
  }
  // Linear warm-up: the k-th step (from 0) runs at lr * (k + 1) / warm-up steps.
  if (warmup > 0 && position < warmup) return config.lr * std::min(1.0, (position + 1.0) / warmup);
  if (config.lr_schedule == "step") {
    const auto epoch = static_cast<int64_t>(std::floor(position / per_epoch));
    return config.lr * std::pow(config.gamma, static_cast<double>(epoch / config.step_size));
  }
  if (config.lr_schedule == "cosine") {
    if (length - warmup <= 0) return config.lr;
    const double progress = std::min(1.0, (position - warmup) / (length - warmup));
    return 0.5 * config.lr * (1.0 + std::cos(M_PI * progress));
  }
  return config.lr;
}

std::vector<EpochRecord> train_model(GraphModule& model, const DataSplits& data, const TrainConfig& config,
                                     bool augment, uint64_t seed,
                                     const std::function<void(const EpochRecord&)>& on_epoch,
                                     const TrainHooks& hooks) {
  check_input(!(config.nesterov && config.optimizer == "sgd" && config.momentum <= 0),
              "nesterov = true needs momentum > 0");
  // The model, the extra parameters and the hooks' state move to the task's device (in place, so the optimizer made
  // below and the hooks' closures hold the moved tensors) and come back to the CPU at the end.
  const torch::Device device = task_device::current();
  std::vector<torch::nn::Module*> modules{model.get()};
  modules.insert(modules.end(), hooks.modules.begin(), hooks.modules.end());
  std::vector<torch::Tensor> moved = hooks.extra_parameters;
  moved.insert(moved.end(), hooks.device_state.begin(), hooks.device_state.end());
  const DevicePlacement placement(device, std::move(modules), std::move(moved));
  check_precision_usable(config.precision, device, "precision");
  std::vector<torch::Tensor> parameters = model->parameters();
  parameters.insert(parameters.end(), hooks.extra_parameters.begin(), hooks.extra_parameters.end());
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (config.optimizer == "adam") {
    optimizer = std::make_unique<torch::optim::Adam>(
        parameters, torch::optim::AdamOptions(config.lr).weight_decay(config.weight_decay));
  } else {
    optimizer = std::make_unique<torch::optim::SGD>(parameters, torch::optim::SGDOptions(config.lr)
                                                                             .momentum(config.momentum)
                                                                             .nesterov(config.nesterov)
                                                                             .weight_decay(config.weight_decay));
  }
  // Data-parallel (a group is current): every rank draws the same global batches and augmentations from the same
  // generator and trains on its own contiguous shard of each; the shards' gradients are summed weighted by their
  // share of the batch, so the step is the global batch's. The leader's parameters and buffers are copied to the
  // others at the start and at every epoch, and its buffers (batch-norm statistics, fake-quant observers) before every
  // step, as DistributedDataParallel does. Only the leader's past_deadline() stops the group, at a step's exchange.
  // Tensors go through the group's tensor collective (NCCL on device buffers when the worker has it), the step's
  // small totals through the group's own (MPI, host memory).
  Collective* group = task_group::current();
  Collective* tensor_group = task_group::tensors();
  const int64_t ranks = group != nullptr ? group->size() : 1;
  const int64_t rank = group != nullptr ? group->rank() : 0;
  std::unique_ptr<GradientAverager> averager;
  std::vector<torch::Tensor> buffers;
  std::vector<torch::Tensor> state;  // parameters, then buffers
  if (group != nullptr) {
    averager = std::make_unique<GradientAverager>(*tensor_group, parameters);
    buffers = model->buffers();
    state = parameters;
    state.insert(state.end(), buffers.begin(), buffers.end());
  }
  // Channels-last where it is faster (or where the run asks for it); a group follows its leader's choice. The
  // layout is undone at the end, whatever happens, so the model leaves as it came.
  const std::string format = task_device::memory_format();
  const int64_t shard_batch = (config.batch_size + ranks - 1) / ranks;
  bool channels_last = false;
  if (format == "channels-last") {
    channels_last = has_convolutions(model) && !data.input_shape.flat;
  } else if (format == "auto" && group_task::leader()) {
    channels_last = channels_last_is_faster(model, data.input_shape, shard_batch, config.precision, device);
  }
  channels_last = group_task::leader_value(channels_last ? 1 : 0) != 0;
  struct LayoutRestorer {
    GraphModule& model;
    bool active;
    ~LayoutRestorer() {
      if (active) set_memory_format(model, torch::MemoryFormat::Contiguous);
    }
  } restore_layout{model, channels_last};
  if (channels_last) set_memory_format(model, torch::MemoryFormat::ChannelsLast);
  // Mixed precision: autocast around the forward pass and the loss; fp16 scales the loss.
  LossScaler scaler(config.precision == "fp16");
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  // Dropout draws from the global generator; the ranks of a group draw different masks for their different shards.
  torch::manual_seed(seed + static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ULL);
  const int64_t steps_per_epoch = (data.train.size() + config.batch_size - 1) / config.batch_size;
  const int64_t total_steps = steps_per_epoch * config.epochs;
  // The input pipeline: a background thread draws each epoch's order and each batch's augmentation from `generator`
  // (in the order the loop would) and prepares this rank's shard of the next batches while the step computes.
  const Dataset train{data.train.images.contiguous(), data.train.labels};
  BatchRecipe recipe;
  recipe.mean = data.mean;
  recipe.std = data.std;
  recipe.augment = augment;
  recipe.padding = data.input_shape.height <= 28 ? 2 : 4;
  recipe.layout = channels_last && train.images.size(1) > 1 ? torch::MemoryFormat::ChannelsLast
                                                            : torch::MemoryFormat::Contiguous;
  recipe.pinned = device.is_cuda();
  std::vector<torch::Tensor> epoch_batches;
  BatchPipeline pipeline(
      total_steps,
      [&, ranks, rank](int64_t k) {
        if (k % steps_per_epoch == 0) epoch_batches = make_batches(train.size(), config.batch_size, true, &generator);
        const torch::Tensor& batch = epoch_batches[static_cast<size_t>(k % steps_per_epoch)];
        const int64_t global = batch.size(0);
        // This rank's shard: rows [global * rank / ranks, global * (rank + 1) / ranks).
        const int64_t first = global * rank / ranks;
        return prepare_batch(train, batch, first, global * (rank + 1) / ranks - first, recipe, &generator);
      },
      kPrefetchedBatches);
  std::vector<EpochRecord> records;
  int64_t step = 0;
  for (int64_t epoch = 1; epoch <= config.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const double waited_before = pipeline.wait_seconds();
    if (group != nullptr) GradientAverager::broadcast_from_leader(*tensor_group, state);
    model->train();
    EpochRecord record;
    record.epoch = epoch;
    record.lr = learning_rate_at(config, step, steps_per_epoch, total_steps);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t in_epoch = 0; in_epoch < steps_per_epoch; ++in_epoch) {
      const double lr = learning_rate_at(config, step, steps_per_epoch, total_steps);
      for (auto& param_group : optimizer->param_groups()) param_group.options().set_lr(lr);
      PreparedBatch batch = pipeline.next();
      const int64_t global = batch.global;
      const int64_t mine = batch.count;
      if (group != nullptr) GradientAverager::broadcast_from_leader(*tensor_group, buffers);
      torch::Tensor inputs = batch.inputs.to(device, /*non_blocking=*/recipe.pinned);
      if (channels_last) inputs = in_memory_format(inputs, torch::MemoryFormat::ChannelsLast);
      const torch::Tensor labels = batch.labels.to(device, /*non_blocking=*/recipe.pinned);
      optimizer->zero_grad();
      torch::Tensor logits, loss;
      double loss_value = 0;
      int64_t right = 0;
      if (mine > 0) {
        {
          // The loss sees fp32 logits; a distillation teacher runs under the same autocast.
          const AutocastScope autocast(config.precision, device);
          logits = at_least_fp32(model->forward(inputs));
          loss = hooks.loss ? hooks.loss(logits, labels, inputs)
                            : torch::nn::functional::cross_entropy(logits, labels);
        }
        loss = at_least_fp32(loss);
        loss_value = loss.item<double>();
        right = logits.argmax(1).eq(labels).sum().item<int64_t>();
      }
      if (group != nullptr) {
        // The batch's loss and correct answers over the group, and whether the leader is past the task's limit.
        float totals[3] = {static_cast<float>(loss_value * static_cast<double>(mine)), static_cast<float>(right),
                           rank == 0 && task_progress::past_deadline() ? 1.0f : 0.0f};
        group->allreduce_sum(totals, 3);
        if (totals[2] > 0) throw TrialTimeout(task_progress::limit_seconds());
        loss_value = static_cast<double>(totals[0]) / static_cast<double>(global);
        right = static_cast<int64_t>(std::lround(totals[1]));
      }
      check(std::isfinite(loss_value), "loss became {} at epoch {}, batch {} (learning rate {}); training diverged",
            loss_value, epoch, step - (epoch - 1) * steps_per_epoch + 1, lr);
      if (mine > 0) scaler.scaled(loss).backward();
      if (averager) averager->sum_weighted_gradients(static_cast<double>(mine) / static_cast<double>(global));
      // The group's summed gradients are the same on every rank, so every rank skips the same steps.
      const bool take_step = scaler.unscale_and_update(parameters);
      if (hooks.after_backward) hooks.after_backward();
      if (take_step) optimizer->step();
      if (hooks.after_step) hooks.after_step();
      loss_sum += loss_value * static_cast<double>(global);
      correct += right;
      seen += global;
      ++step;
      task_progress::step(epoch, config.epochs, step - (epoch - 1) * steps_per_epoch, steps_per_epoch);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    record.train_loss = loss_sum / static_cast<double>(std::max<int64_t>(seen, 1));
    record.train_accuracy = 100.0 * static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(seen, 1));
    record.seconds = seconds;
    record.images_per_second = static_cast<double>(seen) / std::max(seconds, 1e-9);
    record.channels_last = channels_last;
    record.skipped_steps = scaler.skipped_steps();
    record.input_wait_seconds = pipeline.wait_seconds() - waited_before;
    if (data.val.size() > 0) record.val_accuracy = evaluate_accuracy(model, data.val, data.mean, data.std, 256);
    records.push_back(record);
    if (on_epoch) on_epoch(record);
  }
  model->eval();
  return records;
}

double evaluate_accuracy(GraphModule& model, const Dataset& dataset, const std::vector<double>& mean,
                         const std::vector<double>& std, int64_t batch_size) {
  check(dataset.size() > 0, "cannot evaluate on an empty dataset");
  // In a data-parallel group the leader evaluates and the others take its figure.
  return group_task::computed_by_leader([&] { return evaluate_here(model, dataset, mean, std, batch_size); });
}

namespace {

double evaluate_here(GraphModule& model, const Dataset& dataset, const std::vector<double>& mean,
                     const std::vector<double>& std, int64_t batch_size) {
  const bool was_training = model->is_training();
  const torch::Device device = task_device::current();
  const DevicePlacement placement(device, {model.get()});
  model->eval();
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  const Dataset samples{dataset.images.contiguous(), dataset.labels};
  BatchRecipe recipe;
  recipe.mean = mean;
  recipe.std = std;
  for (const auto& batch : make_batches(samples.size(), batch_size, false, nullptr)) {
    const PreparedBatch prepared = prepare_batch(samples, batch, 0, batch.size(0), recipe, nullptr);
    const auto logits = model->forward(prepared.inputs.to(device));
    correct += logits.argmax(1).eq(prepared.labels.to(device)).sum().item<int64_t>();
    task_progress::check_deadline();
  }
  if (was_training) model->train();
  return 100.0 * static_cast<double>(correct) / static_cast<double>(dataset.size());
}

}  // namespace
}  // namespace edgesweep
