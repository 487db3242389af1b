// Training loop and evaluation.
#include "edgesweep/workers/trainer.h"

#include <chrono>
#include <cmath>
#include <memory>

#include <torch/torch.h>

#include "edgesweep/common/collective.h"
#include "edgesweep/common/error.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/workers/device.h"
#include "edgesweep/workers/gradient_sync.h"
#include "edgesweep/workers/mixed_precision.h"

namespace edgesweep {
namespace {
/// Top-1 accuracy on this rank.
double evaluate_here(GraphModule& model, const Dataset& dataset, const std::vector<double>& mean,
                     const std::vector<double>& std, int64_t batch_size);
}  // namespace

double learning_rate_at(const TrainConfig& config, int64_t step, int64_t steps_per_epoch, int64_t total_steps) {
  if (config.lr_schedule == "step") {
    const int64_t epoch = steps_per_epoch > 0 ? step / steps_per_epoch : 0;
    return config.lr * std::pow(config.gamma, static_cast<double>(epoch / config.step_size));
  }
  if (config.lr_schedule == "cosine") {
    if (total_steps <= 0) return config.lr;
    const double progress = static_cast<double>(step) / static_cast<double>(total_steps);
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
  const int64_t padding = data.input_shape.height <= 28 ? 2 : 4;
  std::vector<EpochRecord> records;
  int64_t step = 0;
  for (int64_t epoch = 1; epoch <= config.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    if (group != nullptr) GradientAverager::broadcast_from_leader(*tensor_group, state);
    model->train();
    EpochRecord record;
    record.epoch = epoch;
    record.lr = learning_rate_at(config, step, steps_per_epoch, total_steps);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (const auto& batch : make_batches(data.train.size(), config.batch_size, true, &generator)) {
      const double lr = learning_rate_at(config, step, steps_per_epoch, total_steps);
      for (auto& param_group : optimizer->param_groups()) param_group.options().set_lr(lr);
      auto images = data.train.images.index_select(0, batch);
      if (augment) images = augment_images(images, padding, generator);
      auto inputs = normalize_images(images, data.mean, data.std);
      auto labels = data.train.labels.index_select(0, batch);
      const int64_t global = batch.size(0);
      int64_t mine = global;
      if (group != nullptr) {  // this rank's shard: rows [global * rank / ranks, global * (rank + 1) / ranks)
        const int64_t first = global * rank / ranks;
        mine = global * (rank + 1) / ranks - first;
        inputs = inputs.narrow(0, first, mine);
        labels = labels.narrow(0, first, mine);
        GradientAverager::broadcast_from_leader(*tensor_group, buffers);
      }
      inputs = inputs.to(device);
      if (channels_last) inputs = in_memory_format(inputs, torch::MemoryFormat::ChannelsLast);
      labels = labels.to(device);
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
  for (const auto& batch : make_batches(dataset.size(), batch_size, false, nullptr)) {
    const auto inputs = normalize_images(dataset.images.index_select(0, batch), mean, std).to(device);
    const auto logits = model->forward(inputs);
    correct += logits.argmax(1).eq(dataset.labels.index_select(0, batch).to(device)).sum().item<int64_t>();
    task_progress::check_deadline();
  }
  if (was_training) model->train();
  return 100.0 * static_cast<double>(correct) / static_cast<double>(dataset.size());
}

}  // namespace
}  // namespace edgesweep
