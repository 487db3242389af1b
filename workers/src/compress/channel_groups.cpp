// Channel-group analysis and the graph rewrite that removes channel units.
//
// Every output channel of a producer (a conv that is not depthwise, a linear, or the network input) is an element.
// Walking the graph in order, each node's output is described as a list of elements, one per channel, and a span:
// how many consecutive features of a flat output come from one element (a flatten of a C x H x W map gives C
// elements with span H*W). Operators that keep channels in place (batch norm, activations, pools, dropout) copy the
// list; a depthwise conv copies it too, because its filter c reads and writes channel c only; concat appends its
// inputs' lists; add joins its inputs position by position in a union-find over elements, because a residual sum is
// only well formed if every branch keeps the same channels.
//
// The union-find classes are the units of pruning: removing a unit removes every producer channel in it, and with
// them the batch-norm entries and depthwise filters that carry these channels and the input slices of every conv or
// linear that reads them. Units that share a producer form a group (a ResNet stage's residual stream is one group of
// 16, 32 or 64 units with the stem or downsample conv and every block's last conv as producers). Groups that touch the
// network's input or output, or a grouped conv that is not depthwise, are fixed.
#include "edgesweep/workers/compress/channel_groups.h"

#include <algorithm>
#include <map>
#include <numeric>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

/// Union-find over integers with path halving.
class DisjointSets {
 public:
  int add() {
    parent_.push_back(static_cast<int>(parent_.size()));
    return parent_.back();
  }
  int find(int x) {
    while (parent_[x] != x) {
      parent_[x] = parent_[parent_[x]];
      x = parent_[x];
    }
    return x;
  }
  void join(int a, int b) {
    a = find(a);
    b = find(b);
    if (a != b) parent_[std::max(a, b)] = std::min(a, b);
  }
  size_t size() const { return parent_.size(); }

 private:
  std::vector<int> parent_;
};

}  // namespace

bool ChannelGroup::single_producer() const {
  if (!prunable || producers.size() != 1) return false;
  for (const auto& unit : units) {
    if (unit.size() != 1) return false;
  }
  return true;
}

bool is_depthwise(const Graph& graph, const Node& node) {
  return node.op == OpKind::Conv && node.groups > 1 && node.groups == input_channels(graph, node) &&
         node.groups == node.out;
}

ChannelAnalysis analyze_channel_groups(const Graph& graph) {
  const size_t n = graph.nodes.size();
  DisjointSets elements;
  std::vector<ChannelRef> element_ref;
  std::vector<std::string> element_fixed;  // why an element cannot be removed ("" when it can)
  std::vector<std::vector<int>> node_elements(n);
  ChannelAnalysis analysis;
  analysis.span.assign(n, 1);

  const auto fresh = [&](int node, int64_t count, const std::string& fixed) {
    std::vector<int> list;
    for (int64_t c = 0; c < count; ++c) {
      list.push_back(elements.add());
      element_ref.push_back({node, c});
      element_fixed.push_back(fixed);
    }
    return list;
  };
  const auto fix_all = [&](const std::vector<int>& list, const std::string& reason) {
    for (int e : list) {
      if (element_fixed[e].empty()) element_fixed[e] = reason;
    }
  };

  for (size_t i = 0; i < n; ++i) {
    const Node& node = graph.nodes[i];
    const int index = static_cast<int>(i);
    const int first = node.inputs.empty() ? -1 : node.inputs[0];
    if (keeps_channels(node.op)) {  // batch norm, activations, pools, dropout
      node_elements[i] = node_elements[first];
      analysis.span[i] = analysis.span[first];
      continue;
    }
    switch (node.op) {
      case OpKind::Input:
        node_elements[i] = fresh(index, node.shape.channels, "it holds the network's input channels");
        break;
      case OpKind::Conv:
        if (is_depthwise(graph, node)) {
          node_elements[i] = node_elements[first];
        } else {
          node_elements[i] = fresh(index, node.out, "");
          if (node.groups > 1) {
            const std::string reason = fmt::format("grouped conv '{}' (groups = {}) reads or writes it", node.name,
                                                   node.groups);
            fix_all(node_elements[first], reason);
            fix_all(node_elements[i], reason);
          }
        }
        break;
      case OpKind::Linear:
        node_elements[i] = fresh(index, node.out, "");
        break;
      case OpKind::Slice:
        EDGESWEEP_ASSERT(analysis.span[first] == 1);
        node_elements[i].assign(node_elements[first].begin() + node.offset,
                                node_elements[first].begin() + node.offset + node.out);
        break;
      case OpKind::ChannelShuffle: {
        // Output channel a * groups + b is input channel b * (C / groups) + a. Pruning would have to keep every
        // group of the shuffle equally large and in step; no analysis here proves that, so the channels stay.
        const int64_t channels = node.shape.channels;
        const int64_t per_group = channels / node.groups;
        for (int64_t c = 0; c < channels; ++c) {
          node_elements[i].push_back(node_elements[first][(c % node.groups) * per_group + c / node.groups]);
        }
        fix_all(node_elements[i], fmt::format("channel_shuffle '{}' permutes it across {} groups", node.name,
                                              node.groups));
        break;
      }
      case OpKind::Unflatten:  // feature f becomes channel f: the element feature f came from
        for (int64_t f = 0; f < node.shape.channels; ++f) {
          node_elements[i].push_back(node_elements[first][f / analysis.span[first]]);
        }
        break;
      case OpKind::Flatten: {
        const Shape& in = graph.nodes[first].shape;
        node_elements[i] = node_elements[first];
        analysis.span[i] = analysis.span[first] * in.height * in.width;
        break;
      }
      case OpKind::Add:
      case OpKind::Mul: {
        // The output's channels are those of an input with as many channels; every input with that many is
        // joined position by position, and one input of a single broadcast channel joins nothing.
        int widest = first;
        for (int in : node.inputs) {
          if (graph.nodes[in].shape.channels == node.shape.channels) {
            widest = in;
            break;
          }
        }
        node_elements[i] = node_elements[widest];
        analysis.span[i] = analysis.span[widest];
        const int64_t features = node.shape.channels;
        for (int other : node.inputs) {
          if (other == widest || graph.nodes[other].shape.channels != features) continue;
          for (int64_t f = 0; f < features; ++f) {
            elements.join(node_elements[widest][f / analysis.span[widest]],
                          node_elements[other][f / analysis.span[other]]);
          }
        }
        break;
      }
      case OpKind::Concat:
        for (int in : node.inputs) {
          EDGESWEEP_ASSERT(analysis.span[in] == 1);
          node_elements[i].insert(node_elements[i].end(), node_elements[in].begin(), node_elements[in].end());
        }
        break;
      default:  // the operators that keep channels, handled above
        EDGESWEEP_ASSERT(keeps_channels(node.op));
        break;
    }
  }
  fix_all(node_elements[n - 1], fmt::format("it holds the network's outputs ('{}')", graph.nodes[n - 1].name));

  // Units: the union-find classes, numbered in order of their first element.
  std::map<int, int> unit_of_root;
  std::vector<int> element_unit(element_ref.size());
  std::vector<std::vector<ChannelRef>> unit_members;
  std::vector<std::string> unit_fixed;
  for (size_t e = 0; e < element_ref.size(); ++e) {
    const int root = elements.find(static_cast<int>(e));
    auto it = unit_of_root.find(root);
    if (it == unit_of_root.end()) {
      it = unit_of_root.emplace(root, static_cast<int>(unit_members.size())).first;
      unit_members.emplace_back();
      unit_fixed.emplace_back();
    }
    element_unit[e] = it->second;
    unit_members[it->second].push_back(element_ref[e]);
    if (unit_fixed[it->second].empty()) unit_fixed[it->second] = element_fixed[e];
  }
  analysis.node_units.resize(n);
  for (size_t i = 0; i < n; ++i) {
    for (int e : node_elements[i]) analysis.node_units[i].push_back(element_unit[e]);
  }

  // Groups: units joined through a shared producer.
  const int unit_count = static_cast<int>(unit_members.size());
  DisjointSets groups;
  for (int u = 0; u < unit_count; ++u) groups.add();
  std::map<int, int> first_unit_of_producer;
  for (int u = 0; u < unit_count; ++u) {
    for (const ChannelRef& ref : unit_members[u]) {
      auto [it, inserted] = first_unit_of_producer.emplace(ref.node, u);
      if (!inserted) groups.join(it->second, u);
    }
  }
  std::map<int, int> group_of_root;
  analysis.unit_group.assign(unit_count, -1);
  for (int u = 0; u < unit_count; ++u) {
    const int root = groups.find(u);
    auto it = group_of_root.find(root);
    if (it == group_of_root.end()) {
      it = group_of_root.emplace(root, static_cast<int>(analysis.groups.size())).first;
      analysis.groups.emplace_back();
    }
    ChannelGroup& group = analysis.groups[it->second];
    analysis.unit_group[u] = it->second;
    group.units.push_back(unit_members[u]);
    group.unit_ids.push_back(u);
    for (const ChannelRef& ref : unit_members[u]) group.producers.push_back(ref.node);
    if (!unit_fixed[u].empty() && group.prunable) {
      group.prunable = false;
      group.fixed_reason = unit_fixed[u];
    }
  }
  for (ChannelGroup& group : analysis.groups) {
    std::sort(group.producers.begin(), group.producers.end());
    group.producers.erase(std::unique(group.producers.begin(), group.producers.end()), group.producers.end());
  }
  return analysis;
}

std::vector<std::vector<int64_t>> surviving_positions(const Graph& graph, const ChannelAnalysis& analysis,
                                                      const std::vector<bool>& removed) {
  std::vector<std::vector<int64_t>> positions(graph.nodes.size());
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const int64_t count = static_cast<int64_t>(analysis.node_units[i].size()) * analysis.span[i];
    EDGESWEEP_ASSERT(count == graph.nodes[i].shape.channels);
    for (int64_t f = 0; f < count; ++f) {
      if (!removed[analysis.unit_of(static_cast<int>(i), f)]) positions[i].push_back(f);
    }
  }
  return positions;
}

Graph shrink_graph(const Graph& graph, const ChannelAnalysis& analysis, const std::vector<bool>& removed) {
  const auto positions = surviving_positions(graph, analysis, removed);
  Graph result = graph;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    Node& target = result.nodes[i];
    check(!positions[i].empty(), "pruning would remove every channel of layer '{}' ({})", node.name, op_name(node.op));
    if (node.op == OpKind::Conv || node.op == OpKind::Linear) {
      target.out = static_cast<int64_t>(positions[i].size());
      if (is_depthwise(graph, node)) target.groups = target.out;
    } else if (node.op == OpKind::Slice) {  // the surviving input channels before and within the range
      const auto& kept = positions[node.inputs[0]];
      const auto begin = std::lower_bound(kept.begin(), kept.end(), node.offset);
      target.offset = begin - kept.begin();
      target.out = std::lower_bound(kept.begin(), kept.end(), node.offset + node.out) - begin;
    }
  }
  infer_shapes(result);
  return result;
}

}  // namespace edgesweep
