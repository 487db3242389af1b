// Sensitivity analysis of pruning, one layer or channel group at a time, and per-layer ratios derived from it.
#include "edgesweep/workers/compress/sensitivity.h"

#include <algorithm>
#include <set>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/trainer.h"

namespace edgesweep {
namespace {

constexpr const char* kPrefix = "sensitivity/";


std::string group_name(const Graph& graph, const ChannelGroup& group) {
  return graph.nodes[group.producers.front()].name;
}

std::vector<double> read_ratios(const Json& params) {
  std::vector<double> ratios;
  for (const Json& r : params.at("ratios")) {
    const double ratio = r.get<double>();
    check_input(ratio > 0 && ratio < 1, "sensitivity: 'ratios' holds {}; every ratio must be > 0 and < 1", ratio);
    ratios.push_back(ratio);
  }
  check_input(!ratios.empty(), "sensitivity: 'ratios' is empty; give at least one ratio, e.g. [0.25, 0.5, 0.75]");
  std::sort(ratios.begin(), ratios.end());
  return ratios;
}

}  // namespace

GraphModule sensitivity_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  const std::string method = stage.params.at("method").get<std::string>();
  check_input(method == "magnitude" || method == "block",
              "sensitivity: 'method' is \"{}\", expected magnitude or block", method);
  const std::vector<double> ratios = read_ratios(stage.params);
  const DataSplits& data = context.data;
  check_input(data.val.size() > 0,
              "sensitivity: the accuracy drops are measured on the validation split, which is empty; hint: set "
              "[data] val_fraction > 0");
  const Graph& graph = model->graph();
  const auto accuracy = [&](GraphModule& m) { return evaluate_accuracy(m, data.val, data.mean, data.std, 256); };
  const double reference = accuracy(model);
  context.metrics->push_back({-1, "sensitivity_val_accuracy", reference});
  const auto record = [&](const std::string& name, double ratio, double value) {
    context.metrics->push_back({-1, fmt::format("{}{}/{}", kPrefix, name, ratio), reference - value});
  };
  if (method == "magnitude") {
    for (int node : prunable_layers(graph)) {
      for (double ratio : ratios) {
        GraphModule pruned = clone_graph_module(model);
        pruned->eval();
        apply_masks(pruned, magnitude_masks_per_layer(pruned, {{graph.nodes[node].name, ratio}}));
        record(graph.nodes[node].name, ratio, accuracy(pruned));
      }
    }
  } else {
    const ChannelAnalysis analysis = analyze_channel_groups(graph);
    for (const ChannelGroup& group : analysis.groups) {
      if (!group.prunable || group.size() < 2) continue;
      for (double ratio : ratios) {
        GraphModule pruned =
            rebuild_without(model, analysis, select_units_per_group(model, analysis, {{group_name(graph, group), ratio}}));
        record(group_name(graph, group), ratio, accuracy(pruned));
      }
    }
  }
  return model;
}

std::map<std::string, double> ratios_from_sensitivity(const std::vector<Metric>& metrics, double max_drop,
                                                      double cap) {
  std::map<std::string, std::map<double, double>> drops;  // name -> ratio -> drop (the latest record wins)
  for (const Metric& m : metrics) {
    if (m.step != -1 || m.name.rfind(kPrefix, 0) != 0) continue;
    const std::string rest = m.name.substr(std::string(kPrefix).size());
    const size_t slash = rest.rfind('/');
    if (slash == std::string::npos) continue;
    drops[rest.substr(0, slash)][std::stod(rest.substr(slash + 1))] = m.value;
  }
  check_input(!drops.empty(),
              "prune: 'from_sensitivity' needs an earlier sensitivity stage in the pipeline, and none recorded drops");
  std::map<std::string, double> ratios;
  for (const auto& [name, by_ratio] : drops) {
    double chosen = 0;
    for (const auto& [ratio, drop] : by_ratio) {
      if (drop <= max_drop) chosen = std::max(chosen, ratio);
    }
    ratios[name] = std::min(chosen, cap);
  }
  return ratios;
}

WeightMasks magnitude_masks_per_layer(const GraphModule& model, const std::map<std::string, double>& ratios) {
  const Graph& graph = model->graph();
  WeightMasks result = magnitude_masks(model, 0.0, false);
  std::set<double> distinct;
  for (const auto& [name, ratio] : ratios) distinct.insert(ratio);
  for (double ratio : distinct) {
    if (ratio <= 0) continue;
    const WeightMasks at_ratio = magnitude_masks(model, ratio, false);
    for (size_t k = 0; k < result.nodes.size(); ++k) {
      auto it = ratios.find(graph.nodes[result.nodes[k]].name);
      if (it != ratios.end() && it->second == ratio) result.masks[k] = at_ratio.masks[k];
    }
  }
  return result;
}

std::vector<bool> select_units_per_group(const GraphModule& model, const ChannelAnalysis& analysis,
                                         const std::map<std::string, double>& ratios) {
  const Graph& graph = model->graph();
  const std::vector<double> importance = channel_importance(model, analysis, ChannelImportance::Block);
  std::vector<bool> removed(analysis.unit_group.size(), false);
  std::set<double> distinct;
  for (const auto& [name, ratio] : ratios) distinct.insert(ratio);
  for (double ratio : distinct) {
    if (ratio <= 0) continue;
    ChannelSelection selection;
    selection.sparsity = ratio;
    const std::vector<bool> at_ratio = select_units(analysis, importance, selection);
    for (const ChannelGroup& group : analysis.groups) {
      if (!group.prunable) continue;
      auto it = ratios.find(group_name(graph, group));
      if (it == ratios.end() || it->second != ratio) continue;
      for (int u : group.unit_ids) removed[u] = at_ratio[u];
    }
  }
  return removed;
}

}  // namespace edgesweep
