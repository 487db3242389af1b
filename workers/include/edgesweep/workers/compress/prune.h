// Pruning of a GraphModule: unstructured magnitude masks (local or global) held through fine-tuning, and structured
// pruning (filter by L1/L2 norm, block by average magnitude of coupled channel groups) that rebuilds a dense,
// smaller network.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "edgesweep/workers/compress/channel_groups.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/trainer.h"

namespace edgesweep {

/// Nodes whose weights unstructured pruning may zero: every conv and linear (their weights, not biases).
std::vector<int> prunable_layers(const Graph& graph);

/// Keep-masks (1 keeps, 0 prunes) of the weights of `nodes`, one per node, shaped like the weight.
struct WeightMasks {
  std::vector<int> nodes;
  std::vector<torch::Tensor> masks;
};

/// Masks that zero the smallest |w|: round(sparsity * numel) per layer (local), or round(sparsity * total) across all
/// prunable layers under one threshold (global). Ties go to the earlier layer and the lower flat index. Weights
/// already zeroed by `previous` are pruned first, so a growing schedule never revives them.
WeightMasks magnitude_masks(const GraphModule& model, double sparsity, bool global,
                            const WeightMasks* previous = nullptr);

/// Masks that prune the weights with the lowest `importance` (one tensor per prunable layer, in node order, shaped
/// like its weight), with the counts, ties and `previous` rule of magnitude_masks.
WeightMasks lowest_score_masks(const GraphModule& model, const std::vector<torch::Tensor>& importance,
                               double sparsity, bool global, const WeightMasks* previous = nullptr);

/// Zhu & Gupta's (2017) gradual pruning schedule: the sparsity after `step` optimizer steps,
/// s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 for t0 <= t <= t0 + n dt, with `start` = t0,
/// `frequency` = dt (steps between mask updates) and `updates` = n; s_i before t0 and s_f after the end.
double agp_sparsity(double initial, double final_sparsity, int64_t step, int64_t start, int64_t frequency,
                    int64_t updates);

/// Movement pruning's importance (Sanh et al. 2020): per weight of each prunable layer, S = -sum over steps of
/// grad * weight, accumulated after each backward pass and before the optimizer step. A weight that moves away from
/// zero scores high, one that moves toward zero scores low, whatever its magnitude.
struct MovementScores {
  std::vector<int> nodes;             ///< prunable layers, in node order
  std::vector<torch::Tensor> scores;  ///< float64, shaped like each weight
  /// Zero scores for the prunable layers of `model`.
  explicit MovementScores(const GraphModule& model);
  /// Adds -grad * weight of every prunable weight; layers without a gradient add nothing.
  void accumulate(const GraphModule& model);
};

/// Multiplies each masked weight by its mask (in place, without autograd).
void apply_masks(const GraphModule& model, const WeightMasks& masks);

/// Adds to `hooks` (after any after_step already there) what holds the prunable weights of `model` that are exactly
/// zero now at zero after every optimizer step: what training after unstructured pruning does, so that later stages
/// (fine-tuning, distillation, QAT) keep the sparsity. Nothing is added when no prunable weight is zero.
void hold_zero_weights(const GraphModule& model, TrainHooks& hooks);

/// Zero weights of one prunable layer.
struct LayerSparsity {
  std::string name;
  int64_t zeros = 0;
  int64_t total = 0;
  double percent() const { return total > 0 ? 100.0 * static_cast<double>(zeros) / static_cast<double>(total) : 0; }
};

/// Sparsity of every prunable layer's weight, in node order.
std::vector<LayerSparsity> measure_sparsity(const GraphModule& model);

/// How channel units are ranked.
enum class ChannelImportance {
  L1,     ///< L1 norm of the producing filter
  L2,     ///< L2 norm of the producing filter
  GeometricMedian,  ///< sum of L2 distances from the filter to the layer's other filters (small: replaceable)
  Block,  ///< mean |w| of every weight tied to the unit: producers' filters, depthwise filters, consumers' slices
  /// L2 norm of everything tied to the unit (DepGraph, Fang et al. 2023): producers' filters, depthwise filters,
  /// consumers' input slices and the batch-norm scales on its path
  GroupNorm,
  /// sum of |gamma| of the batch norms on the unit's path (network slimming, Liu et al. 2017); units without one
  /// are ranked as Block ranks them
  BatchNormScale,
};

/// Importance of every unit of `analysis` (indexed by unit id). L1/L2/GeometricMedian are defined only for units of
/// single-producer groups; other units get 0 and must not be selected with them.
std::vector<double> channel_importance(const GraphModule& model, const ChannelAnalysis& analysis,
                                       ChannelImportance importance);

/// First-order Taylor importance (Molchanov et al. 2019) of every unit of `analysis`: on `batches` shuffled training
/// batches of `data` (cross-entropy, training mode), the square of the sum of weight x gradient over the parameters
/// that produce the unit's channels (producers' filters and biases, depthwise filters, the scales and shifts of the
/// batch norms on its path), averaged over the batches: the loss's first-order change when the unit is removed.
/// Runs on task_device::current(); the batch-norm statistics and the gradients are left as they were.
std::vector<double> taylor_importance(GraphModule& model, const ChannelAnalysis& analysis, const DataSplits& data,
                                      int64_t batches, int64_t batch_size, uint64_t seed);

/// Estimates every batch norm's running mean and variance again, as the average of their values on `batches`
/// shuffled training batches of `data` (training mode, no augmentation, no gradients), in place of the running
/// averages the model trained with. After channels are removed, every later layer sees other inputs than its
/// statistics were gathered on, which left a pruned ResNet-20 at chance before fine-tuning. Nothing but the
/// statistics changes; a model without batch norm is left as it is. In a data-parallel group the leader's statistics
/// are everyone's.
void recalibrate_batch_norm(GraphModule& model, const DataSplits& data, int64_t batches, int64_t batch_size,
                            uint64_t seed);

/// Adds to `hooks` (before any after_backward already there) an L1 penalty `penalty` * sum |gamma| on the scale of
/// every batch norm of `model`, added to the gradients after each backward pass: network slimming's sparsity
/// training, which drives the scales of unimportant channels toward zero.
void add_batch_norm_sparsity(const GraphModule& model, double penalty, TrainHooks& hooks);

struct ChannelSelection {
  double sparsity = 0;   ///< share of units removed: per group (local) or over all eligible groups (global)
  bool global = false;   ///< global: one ranking of all units by importance divided by their group's mean
  int64_t round_to = 1;  ///< units kept per group are rounded to the nearest multiple of this (at least one multiple,
                         ///< at most the group's size)
  bool coupled = true;   ///< true: every prunable group is eligible (block); false: single-producer groups (filter)
  /// Local only: per group of the analysis, the size `sparsity` refers to (the unpruned model's, when a model is
  /// pruned in rounds, so that rounding to `round_to` never compounds). Empty: the groups' current sizes.
  std::vector<int64_t> base_sizes;
};

/// Marks (by unit id) the weakest units to remove. Every eligible group keeps at least one unit.
std::vector<bool> select_units(const ChannelAnalysis& analysis, const std::vector<double>& importance,
                               const ChannelSelection& selection);

/// A new, dense GraphModule without the removed units, holding copies of the surviving weights and statistics.
GraphModule rebuild_without(const GraphModule& model, const ChannelAnalysis& analysis,
                            const std::vector<bool>& removed);

/// Structured pruning in one call: analyse, rank by `importance`, select and rebuild.
GraphModule prune_channels(const GraphModule& model, ChannelImportance importance, const ChannelSelection& selection);

/// `analysis` with every group not produced by a single linear layer marked fixed: the groups node pruning may
/// shrink (the neurons of hidden linear layers).
ChannelAnalysis restrict_to_linear_groups(const Graph& graph, ChannelAnalysis analysis);

/// Node pruning: removes the neurons of hidden linear layers with the smallest L2 norm of incoming weights (their
/// weight rows), per layer or globally as `selection` says, with the consumers' input features. `selection.coupled`
/// is ignored.
GraphModule prune_nodes(const GraphModule& model, const ChannelSelection& selection);

}  // namespace edgesweep
