// Data-parallel training's exchange between the ranks of one trial's group. After backward, each rank averages its
// gradients with the others' in buckets of at most `bucket_bytes`, packed flat in reverse parameter order (the last
// layers' gradients are ready first), as PyTorch's DistributedDataParallel buckets and Horovod's tensor fusion do: a
// network's many small tensors then cost a few collective calls. The leader's parameters and buffers are copied to
// the others at the start and whenever they may have drifted (batch-norm statistics, which DDP broadcasts too).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "edgesweep/common/collective.h"

namespace edgesweep {

class GradientAverager {
 public:
  /// PyTorch DDP's default bucket cap (bucket_cap_mb = 25).
  static constexpr size_t kDefaultBucketBytes = size_t{25} << 20;

  /// Buckets over the float32 `parameters` that require gradients (others are left out); every rank of `group`
  /// must pass the same parameters in the same order. Throws Error for a parameter of another dtype.
  GradientAverager(Collective& group, std::vector<torch::Tensor> parameters,
                   size_t bucket_bytes = kDefaultBucketBytes);

  /// Replaces every gradient by its mean over the group (a parameter without a gradient counts as zeros, and gets
  /// the mean). Every rank ends with the same gradients.
  void average_gradients() { sum_weighted_gradients(1.0 / static_cast<double>(group_.size())); }

  /// Replaces every gradient by the group's sum of `weight` times each rank's gradient; each rank gives its own
  /// weight (a shard's share of the global batch, so that unequal shards add up to the global batch's mean).
  void sum_weighted_gradients(double weight);

  /// How many buckets (collective calls) one average_gradients() makes.
  size_t buckets() const { return buckets_.size(); }

  /// Copies the group leader's values of `tensors` (any dtype; host buffers staged for MPI, the tensors' device for
  /// NCCL) to every rank, in place: packed into as few broadcasts as the byte cap allows.
  static void broadcast_from_leader(Collective& group, const std::vector<torch::Tensor>& tensors,
                                    size_t bucket_bytes = kDefaultBucketBytes);

 private:
  Collective& group_;
  std::vector<torch::Tensor> parameters_;
  std::vector<std::vector<size_t>> buckets_;  ///< indices into parameters_, each within the byte cap
  torch::Tensor flat_;                        ///< one bucket's values, packed
};

/// For code that runs on every rank of a data-parallel task (the group of task_group::current()): what only the
/// group's leader computes, and what it decides for all. Alone, each is the plain computation.
namespace group_task {
/// Whether this rank leads the current task's group (true when the task runs alone).
bool leader();
/// `compute` runs on the leader only and its value reaches every rank (an evaluation the others wait for). Past the
/// task's time limit (the leader's past_deadline) or when `compute` throws, every rank throws: the leader its own
/// error, the others TrialTimeout or an Error that names the leader's failure.
double computed_by_leader(const std::function<double()>& compute);
/// The leader's `value`, on every rank (a decision such as which kept stages to start from).
int64_t leader_value(int64_t value);
}  // namespace group_task

}  // namespace edgesweep
