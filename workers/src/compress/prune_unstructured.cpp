// Unstructured pruning: masks of the conv and linear weights with the smallest scores (magnitude, or any other
// per-weight importance), per layer or under one global threshold, and sparsity measurement.
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/prune.h"

namespace edgesweep {
namespace {

/// The flat indices of the `count` smallest scores; a stable sort breaks ties by position.
torch::Tensor smallest(const torch::Tensor& scores, int64_t count) {
  const auto order = std::get<1>(torch::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/false));
  return order.slice(0, 0, count);
}

int64_t rounded_count(double sparsity, int64_t total) {
  return std::min<int64_t>(total, static_cast<int64_t>(std::llround(sparsity * static_cast<double>(total))));
}

}  // namespace

std::vector<int> prunable_layers(const Graph& graph) {
  std::vector<int> nodes;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const OpKind op = graph.nodes[i].op;
    if (op == OpKind::Conv || op == OpKind::Linear) nodes.push_back(static_cast<int>(i));
  }
  return nodes;
}

WeightMasks magnitude_masks(const GraphModule& model, double sparsity, bool global, const WeightMasks* previous) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> magnitudes;
  for (int node : prunable_layers(model->graph())) magnitudes.push_back(model->weight(node).detach().abs());
  return lowest_score_masks(model, magnitudes, sparsity, global, previous);
}

WeightMasks lowest_score_masks(const GraphModule& model, const std::vector<torch::Tensor>& importance,
                               double sparsity, bool global, const WeightMasks* previous) {
  check_input(sparsity >= 0 && sparsity < 1, "sparsity must be in [0, 1), got {}", sparsity);
  torch::NoGradGuard no_grad;
  WeightMasks result;
  result.nodes = prunable_layers(model->graph());
  EDGESWEEP_ASSERT(importance.size() == result.nodes.size());
  std::vector<torch::Tensor> scores;
  for (size_t k = 0; k < result.nodes.size(); ++k) {
    EDGESWEEP_ASSERT(importance[k].sizes() == model->weight(result.nodes[k]).sizes());
    auto score = importance[k].detach().flatten().to(torch::kFloat64);
    if (previous != nullptr) {
      EDGESWEEP_ASSERT(previous->nodes == result.nodes);
      // Already pruned: first in line, below any score.
      score.masked_fill_(previous->masks[k].flatten().eq(0).to(score.device()),
                         -std::numeric_limits<double>::infinity());
    }
    scores.push_back(score);
  }
  if (global) {
    const auto all = torch::cat(scores);
    auto keep = torch::ones({all.numel()}, all.options().dtype(torch::kFloat32));
    keep.index_fill_(0, smallest(all, rounded_count(sparsity, all.numel())), 0.0);
    int64_t offset = 0;
    for (size_t k = 0; k < result.nodes.size(); ++k) {
      const auto& weight = model->weight(result.nodes[k]);
      result.masks.push_back(keep.slice(0, offset, offset + weight.numel()).view(weight.sizes()).clone());
      offset += weight.numel();
    }
  } else {
    for (size_t k = 0; k < result.nodes.size(); ++k) {
      const auto& weight = model->weight(result.nodes[k]);
      auto keep = torch::ones({weight.numel()}, scores[k].options().dtype(torch::kFloat32));
      keep.index_fill_(0, smallest(scores[k], rounded_count(sparsity, weight.numel())), 0.0);
      result.masks.push_back(keep.view(weight.sizes()));
    }
  }
  return result;
}

void apply_masks(const GraphModule& model, const WeightMasks& masks) {
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < masks.nodes.size(); ++k) {
    const torch::Tensor& weight = model->weight(masks.nodes[k]);
    EDGESWEEP_ASSERT(weight.sizes() == masks.masks[k].sizes());
    weight.mul_(masks.masks[k].to(weight.device()));  // no copy when both are on one device
  }
}

void hold_zero_weights(const GraphModule& model, TrainHooks& hooks) {
  torch::NoGradGuard no_grad;
  auto masks = std::make_shared<WeightMasks>();
  for (int node : prunable_layers(model->graph())) {
    const torch::Tensor& weight = model->weight(node);
    if (!weight.eq(0).any().item<bool>()) continue;
    masks->nodes.push_back(node);
    masks->masks.push_back(weight.ne(0).to(weight.scalar_type()));
  }
  if (masks->nodes.empty()) return;
  hooks.device_state.insert(hooks.device_state.end(), masks->masks.begin(), masks->masks.end());
  hooks.after_step = [model, masks, before = std::move(hooks.after_step)] {
    if (before) before();
    apply_masks(model, *masks);
  };
}

std::vector<LayerSparsity> measure_sparsity(const GraphModule& model) {
  torch::NoGradGuard no_grad;
  std::vector<LayerSparsity> layers;
  for (int node : prunable_layers(model->graph())) {
    const auto& weight = model->weight(node);
    layers.push_back({model->graph().nodes[node].name, weight.eq(0).sum().item<int64_t>(), weight.numel()});
  }
  return layers;
}

}  // namespace edgesweep
