// Structured pruning: rank channel units (filter norms or block magnitude), select the weakest per group or
// globally, and rebuild a dense smaller GraphModule with the surviving weights.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/device.h"
#include "edgesweep/workers/gradient_sync.h"
#include "edgesweep/workers/input_pipeline.h"

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

/// Calls `use` with each of the first `batches` batches of one shuffled pass (seeded by `seed`) over `data`'s training
/// images, normalised and not augmented, prepared one at a time: what the Taylor criterion and the batch-norm
/// recalibration compute on. Returns how many batches there were.
int64_t for_training_batches(const DataSplits& data, int64_t batches, int64_t batch_size, uint64_t seed,
                             const std::function<void(const PreparedBatch&)>& use) {
  torch::Generator generator = at::detail::createCPUGenerator(seed);
  const Dataset train{data.train.images.contiguous(), data.train.labels};
  BatchRecipe recipe;
  recipe.mean = data.mean;
  recipe.std = data.std;
  const std::vector<torch::Tensor> order = make_batches(train.size(), batch_size, true, &generator);
  const int64_t used = std::min<int64_t>(batches, static_cast<int64_t>(order.size()));
  for (int64_t k = 0; k < used; ++k) {
    const torch::Tensor& indices = order[static_cast<size_t>(k)];
    use(prepare_batch(train, indices, 0, indices.size(0), recipe, nullptr));
    task_progress::check_deadline();
  }
  return used;
}

}  // namespace

std::vector<double> channel_importance(const GraphModule& model, const ChannelAnalysis& analysis,
                                       ChannelImportance importance) {
  torch::NoGradGuard no_grad;
  const Graph& graph = model->graph();
  const size_t units = analysis.unit_group.size();
  std::vector<double> result(units, 0.0);
  if (importance == ChannelImportance::GroupNorm) {
    // Sum of squares of every weight tied to each unit, then its square root.
    std::vector<double> squares(units, 0.0);
    const auto add = [&](int node, const torch::Tensor& per_position) {
      const auto values = per_position.to(torch::kFloat64).contiguous();
      const double* data = values.data_ptr<double>();
      for (int64_t p = 0; p < values.numel(); ++p) squares[analysis.unit_of(node, p)] += data[p];
    };
    for (size_t i = 0; i < graph.nodes.size(); ++i) {
      const Node& node = graph.nodes[i];
      const int index = static_cast<int>(i);
      if (node.op == OpKind::BatchNorm) {
        add(index, model->weight(index).square());
        continue;
      }
      if (node.op != OpKind::Conv && node.op != OpKind::Linear) continue;
      const auto squared = model->weight(index).square();
      add(index, squared.flatten(1).sum(1));
      if (node.op == OpKind::Conv && node.groups > 1) continue;
      add(node.inputs[0], squared.transpose(0, 1).flatten(1).sum(1));
    }
    for (size_t u = 0; u < units; ++u) result[u] = std::sqrt(squares[u]);
    return result;
  }
  if (importance == ChannelImportance::BatchNormScale) {
    std::vector<double> scales(units, 0.0);
    std::vector<bool> has_norm(units, false);
    for (size_t i = 0; i < graph.nodes.size(); ++i) {
      if (graph.nodes[i].op != OpKind::BatchNorm) continue;
      const auto gamma = model->weight(static_cast<int>(i)).abs().to(torch::kFloat64).contiguous();
      const double* data = gamma.data_ptr<double>();
      for (int64_t c = 0; c < gamma.numel(); ++c) {
        const int unit = analysis.unit_of(static_cast<int>(i), c);
        scales[unit] += data[c];
        has_norm[unit] = true;
      }
    }
    const std::vector<double> magnitude = channel_importance(model, analysis, ChannelImportance::Block);
    for (size_t u = 0; u < units; ++u) result[u] = has_norm[u] ? scales[u] : magnitude[u];
    return result;
  }
  if (importance == ChannelImportance::L1 || importance == ChannelImportance::L2 ||
      importance == ChannelImportance::GeometricMedian) {
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

std::vector<double> taylor_importance(GraphModule& model, const ChannelAnalysis& analysis, const DataSplits& data,
                                      int64_t batches, int64_t batch_size, uint64_t seed) {
  check_input(batches >= 1, "taylor importance needs at least one batch, got {}", batches);
  check(data.train.size() > 0, "taylor importance needs training images; the training split is empty");
  const Graph& graph = model->graph();
  const size_t units = analysis.unit_group.size();
  const torch::Device device = task_device::current();
  const DevicePlacement placement(device, {model.get()});
  const bool was_training = model->is_training();
  std::vector<torch::Tensor> buffers = model->buffers(), saved;
  for (const torch::Tensor& b : buffers) saved.push_back(b.detach().clone());
  std::vector<torch::Tensor> parameters = model->parameters();
  const auto clear_gradients = [&] {
    for (torch::Tensor& p : parameters) p.mutable_grad() = torch::Tensor();
  };
  clear_gradients();
  model->train();
  torch::manual_seed(seed);  // dropout's masks
  std::vector<double> scores(units, 0.0), gate(units, 0.0);
  const auto add = [&](int node, const torch::Tensor& per_channel) {
    const auto values = per_channel.to(torch::kFloat64).cpu().contiguous();
    const double* values_data = values.data_ptr<double>();
    for (int64_t c = 0; c < values.numel(); ++c) gate[analysis.unit_of(node, c)] += values_data[c];
  };
  const int64_t used = for_training_batches(data, batches, batch_size, seed, [&](const PreparedBatch& batch) {
    const torch::Tensor logits = model->forward(batch.inputs.to(device));
    torch::nn::functional::cross_entropy(logits, batch.labels.to(device)).backward();
    std::fill(gate.begin(), gate.end(), 0.0);
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < graph.nodes.size(); ++i) {
        const Node& node = graph.nodes[i];
        const int index = static_cast<int>(i);
        const bool norm = node.op == OpKind::BatchNorm;
        if (!norm && node.op != OpKind::Conv && node.op != OpKind::Linear) continue;
        const torch::Tensor& weight = model->weight(index);
        if (weight.grad().defined()) {
          const torch::Tensor product = weight * weight.grad();  // [out, ...] for convs and linears, [C] for norms
          add(index, product.dim() > 1 ? product.flatten(1).sum(1) : product);
        }
        const bool has_bias = norm || node.bias;
        if (has_bias && model->bias(index).grad().defined()) add(index, model->bias(index) * model->bias(index).grad());
      }
    }
    for (size_t u = 0; u < units; ++u) scores[u] += gate[u] * gate[u];
    clear_gradients();
  });
  {
    torch::NoGradGuard no_grad;
    for (size_t b = 0; b < buffers.size(); ++b) buffers[b].copy_(saved[b]);
  }
  model->train(was_training);
  for (double& score : scores) score /= static_cast<double>(std::max<int64_t>(used, 1));
  // In a data-parallel group every rank must remove the same channels: the leader's scores are everyone's.
  if (Collective* group = task_group::current()) group->broadcast(scores.data(), scores.size() * sizeof(double), 0);
  return scores;
}

void recalibrate_batch_norm(GraphModule& model, const DataSplits& data, int64_t batches, int64_t batch_size,
                            uint64_t seed) {
  check_input(batches >= 1, "batch-norm recalibration needs at least one batch, got {}", batches);
  const Graph& graph = model->graph();
  std::vector<int> norms;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    if (graph.nodes[i].op == OpKind::BatchNorm && graph.nodes[i].momentum > 0) norms.push_back(static_cast<int>(i));
  }
  if (norms.empty() || data.train.size() == 0) return;
  const torch::Device device = task_device::current();
  const DevicePlacement placement(device, {model.get()});
  const bool was_training = model->is_training();
  torch::NoGradGuard no_grad;
  model->train();
  // A forward pass in training mode moves each running value to (1 - m) * old + m * batch's; the batch's value is
  // read back from that, summed, and the average of the batches' values replaces the running one at the end.
  std::vector<torch::Tensor> mean_sums, var_sums;
  for (int n : norms) {
    mean_sums.push_back(torch::zeros_like(model->running_mean(n), torch::kFloat64));
    var_sums.push_back(torch::zeros_like(model->running_var(n), torch::kFloat64));
  }
  const int64_t used = for_training_batches(data, batches, batch_size, seed, [&](const PreparedBatch& batch) {
    std::vector<torch::Tensor> means_before, vars_before;
    for (int n : norms) {
      means_before.push_back(model->running_mean(n).to(torch::kFloat64));
      vars_before.push_back(model->running_var(n).to(torch::kFloat64));
    }
    model->forward(batch.inputs.to(device));
    for (size_t j = 0; j < norms.size(); ++j) {
      const double m = graph.nodes[norms[j]].momentum;
      mean_sums[j] += (model->running_mean(norms[j]).to(torch::kFloat64) - (1 - m) * means_before[j]) / m;
      var_sums[j] += (model->running_var(norms[j]).to(torch::kFloat64) - (1 - m) * vars_before[j]) / m;
    }
  });
  std::vector<torch::Tensor> statistics;
  for (size_t j = 0; j < norms.size(); ++j) {
    model->running_mean(norms[j]).copy_(mean_sums[j] / static_cast<double>(used));
    model->running_var(norms[j]).copy_(var_sums[j] / static_cast<double>(used));
    statistics.push_back(model->running_mean(norms[j]));
    statistics.push_back(model->running_var(norms[j]));
  }
  model->train(was_training);
  if (task_group::current() != nullptr) GradientAverager::broadcast_from_leader(*task_group::tensors(), statistics);
}

void add_batch_norm_sparsity(const GraphModule& model, double penalty, TrainHooks& hooks) {
  check_input(penalty >= 0, "the batch-norm sparsity penalty must be >= 0, got {}", penalty);
  std::vector<torch::Tensor> scales;
  const Graph& graph = model->graph();
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    if (graph.nodes[i].op == OpKind::BatchNorm) scales.push_back(model->weight(static_cast<int>(i)));
  }
  hooks.after_backward = [scales, penalty, next = std::move(hooks.after_backward)] {
    torch::NoGradGuard no_grad;
    for (const torch::Tensor& gamma : scales) {
      if (gamma.grad().defined()) gamma.mutable_grad().add_(gamma.sign(), penalty);
    }
    if (next) next();
  };
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
