// Structured pruning: rank channel units (filter norms or block magnitude), select the weakest per group or
// globally, and rebuild a dense smaller GraphModule with the surviving weights.
#include <algorithm>
#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/prune.h"

namespace edgesweep {
namespace {

torch::Tensor index_tensor(const std::vector<int64_t>& positions) {
  return torch::tensor(positions, torch::TensorOptions().dtype(torch::kInt64));
}

bool eligible(const ChannelGroup& group, bool coupled) {
  return coupled ? group.prunable : group.single_producer();
}

/// Units of a group (positions in the group) from weakest to strongest; ties keep the group's order.
std::vector<size_t> weakest_first(const ChannelGroup& group, const std::vector<double>& importance) {
  std::vector<size_t> order(group.units.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return importance[group.unit_ids[a]] < importance[group.unit_ids[b]];
  });
  return order;
}

/// `keep` rounded to the nearest multiple of `multiple` (halves round up), at least one multiple, at most `size`.
int64_t round_kept(double keep, int64_t multiple, int64_t size) {
  if (multiple <= 1) return std::clamp<int64_t>(std::llround(keep), 1, size);
  const auto multiples = std::max<int64_t>(1, std::llround(keep / static_cast<double>(multiple)));
  return std::clamp<int64_t>(multiples * multiple, 1, size);
}

}  // namespace

std::vector<double> channel_importance(const GraphModule& model, const ChannelAnalysis& analysis,
                                       ChannelImportance importance) {
  torch::NoGradGuard no_grad;
  const Graph& graph = model->graph();
  const size_t units = analysis.unit_group.size();
  std::vector<double> result(units, 0.0);
  if (importance != ChannelImportance::Block) {
    for (const ChannelGroup& group : analysis.groups) {
      if (!group.single_producer()) continue;
      const int producer = group.producers.front();
      const auto& weight = model->weight(producer);
      const auto filters = weight.flatten(1).to(torch::kFloat64);
      // Geometric median (He et al. 2019, FPGM): a filter whose distances to the others sum to little lies near
      // the layer's geometric median, and the others can stand in for it.
      const auto norms = importance == ChannelImportance::L1   ? filters.abs().sum(1)
                         : importance == ChannelImportance::L2 ? filters.pow(2).sum(1).sqrt()
                                                               : torch::cdist(filters, filters).sum(1);
      const auto values = norms.contiguous();
      for (size_t k = 0; k < group.units.size(); ++k) {
        result[group.unit_ids[k]] = values[group.units[k].front().channel].item<double>();
      }
    }
    return result;
  }
  // Block: sum of |w| and number of weights tied to each unit, over every conv and linear.
  std::vector<double> sums(units, 0.0), counts(units, 0.0);
  const auto add = [&](int node, const torch::Tensor& per_position, double weights_each) {
    const auto values = per_position.to(torch::kFloat64).contiguous();
    const double* data = values.data_ptr<double>();
    for (int64_t p = 0; p < values.numel(); ++p) {
      const int unit = analysis.unit_of(node, p);
      sums[unit] += data[p];
      counts[unit] += weights_each;
    }
  };
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    if (node.op != OpKind::Conv && node.op != OpKind::Linear) continue;
    const auto magnitude = model->weight(static_cast<int>(i)).abs();
    const double per_filter = static_cast<double>(magnitude[0].numel());
    add(static_cast<int>(i), magnitude.flatten(1).sum(1), per_filter);  // own output channels (filters)
    if (node.op == OpKind::Conv && node.groups > 1) continue;           // depthwise: filter c is channel c already
    const double per_slice = static_cast<double>(magnitude.numel() / magnitude.size(1));
    add(node.inputs[0], magnitude.transpose(0, 1).flatten(1).sum(1), per_slice);  // consumed input slices
  }
  for (size_t u = 0; u < units; ++u) result[u] = counts[u] > 0 ? sums[u] / counts[u] : 0.0;
  return result;
}

std::vector<bool> select_units(const ChannelAnalysis& analysis, const std::vector<double>& importance,
                               const ChannelSelection& selection) {
  check_input(selection.sparsity >= 0 && selection.sparsity < 1, "sparsity must be in [0, 1), got {}",
              selection.sparsity);
  check_input(selection.round_to >= 1, "round_to must be >= 1, got {}", selection.round_to);
  std::vector<bool> removed(analysis.unit_group.size(), false);
  check_input(selection.base_sizes.empty() || selection.base_sizes.size() == analysis.groups.size(),
              "base_sizes has {} entries for {} channel groups", selection.base_sizes.size(), analysis.groups.size());
  check_input(selection.base_sizes.empty() || !selection.global, "base_sizes apply to local selection only");
  std::vector<int64_t> removed_in_group(analysis.groups.size(), 0);
  if (!selection.global) {
    for (size_t g = 0; g < analysis.groups.size(); ++g) {
      const ChannelGroup& group = analysis.groups[g];
      if (!eligible(group, selection.coupled)) continue;
      const int64_t size = group.size();
      const int64_t base = selection.base_sizes.empty() ? size : selection.base_sizes[g];
      // Whole units first (a share of a 16-channel group is 16 - round(16 * sparsity)), then the multiple.
      const int64_t kept = base - std::llround(selection.sparsity * static_cast<double>(base));
      removed_in_group[g] = size - std::min(size, round_kept(static_cast<double>(kept), selection.round_to, base));
    }
  } else {
    // One ranking of all eligible units by importance relative to their group's mean.
    struct Candidate {
      double score;
      size_t group;
    };
    std::vector<Candidate> candidates;
    std::vector<std::vector<size_t>> orders(analysis.groups.size());
    for (size_t g = 0; g < analysis.groups.size(); ++g) {
      const ChannelGroup& group = analysis.groups[g];
      if (!eligible(group, selection.coupled)) continue;
      double mean = 0;
      for (int u : group.unit_ids) mean += importance[u];
      mean /= static_cast<double>(group.size());
      for (int u : group.unit_ids) candidates.push_back({mean > 0 ? importance[u] / mean : 0.0, g});
    }
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const Candidate& a, const Candidate& b) { return a.score < b.score; });
    const int64_t target = std::llround(selection.sparsity * static_cast<double>(candidates.size()));
    int64_t taken = 0;
    for (const Candidate& c : candidates) {
      if (taken == target) break;
      if (removed_in_group[c.group] + 1 >= analysis.groups[c.group].size()) continue;  // keep one per group
      ++removed_in_group[c.group];
      ++taken;
    }
    // Within a group the weakest go first, so the count per group is all the ranking decides.
    for (size_t g = 0; g < analysis.groups.size(); ++g) {
      const int64_t size = analysis.groups[g].size();
      if (removed_in_group[g] == 0) continue;
      removed_in_group[g] =
          size - round_kept(static_cast<double>(size - removed_in_group[g]), selection.round_to, size);
    }
  }
  for (size_t g = 0; g < analysis.groups.size(); ++g) {
    if (removed_in_group[g] == 0) continue;
    const auto order = weakest_first(analysis.groups[g], importance);
    for (int64_t k = 0; k < removed_in_group[g]; ++k) removed[analysis.groups[g].unit_ids[order[k]]] = true;
  }
  return removed;
}

GraphModule rebuild_without(const GraphModule& model, const ChannelAnalysis& analysis,
                            const std::vector<bool>& removed) {
  const Graph& graph = model->graph();
  Graph smaller = shrink_graph(graph, analysis, removed);
  const auto positions = surviving_positions(graph, analysis, removed);
  GraphModule result(std::move(smaller));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    const int index = static_cast<int>(i);
    const auto out = index_tensor(positions[i]);
    switch (node.op) {
      case OpKind::Conv:
      case OpKind::Linear: {
        auto weight = model->weight(index).index_select(0, out);
        if (node.op == OpKind::Linear || node.groups == 1) {
          weight = weight.index_select(1, index_tensor(positions[node.inputs[0]]));
        } else if (!is_depthwise(graph, node)) {
          EDGESWEEP_ASSERT(static_cast<int64_t>(positions[i].size()) == node.out);  // grouped convs are fixed
        }
        result->weight(index).copy_(weight);
        if (node.bias) result->bias(index).copy_(model->bias(index).index_select(0, out));
        break;
      }
      case OpKind::BatchNorm:
        result->weight(index).copy_(model->weight(index).index_select(0, out));
        result->bias(index).copy_(model->bias(index).index_select(0, out));
        result->running_mean(index).copy_(model->running_mean(index).index_select(0, out));
        result->running_var(index).copy_(model->running_var(index).index_select(0, out));
        break;
      default:
        break;
    }
  }
  result->train(model->is_training());
  return result;
}

GraphModule prune_channels(const GraphModule& model, ChannelImportance importance, const ChannelSelection& selection) {
  const ChannelAnalysis analysis = analyze_channel_groups(model->graph());
  const std::vector<double> scores = channel_importance(model, analysis, importance);
  return rebuild_without(model, analysis, select_units(analysis, scores, selection));
}

}  // namespace edgesweep
