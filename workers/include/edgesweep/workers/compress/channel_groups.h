// Channel-group analysis of the layer-graph IR: which output channels of which layers are coupled (a residual add,
// a depthwise conv) and so can only be removed together. Structured pruning reads this; no LibTorch here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edgesweep/workers/graph.h"

namespace edgesweep {

/// Output channel `channel` of the conv or linear node `node` (or of the input node).
struct ChannelRef {
  int node = 0;
  int64_t channel = 0;
};

/// Coupled channels: the units of one group are removed or kept as a whole, each unit with every producer channel
/// in it, the batch-norm entries and depthwise filters on its path and the input slices of every consumer.
struct ChannelGroup {
  std::vector<int> producers;                  ///< conv/linear nodes (or the input) whose outputs are in the group
  std::vector<std::vector<ChannelRef>> units;  ///< one entry per channel of the group: the producer channels tied
  std::vector<int> unit_ids;                   ///< the units' indices in ChannelAnalysis (same order as `units`)
  bool prunable = true;                        ///< false: holds the network's input or output, or feeds a grouped conv
  std::string fixed_reason;                    ///< why it is not prunable
  int64_t size() const { return static_cast<int64_t>(units.size()); }
  /// Filter pruning applies: prunable and one producer with one channel per unit (nothing coupled).
  bool single_producer() const;
};

/// Where every channel of every node's output goes.
struct ChannelAnalysis {
  std::vector<ChannelGroup> groups;       ///< ordered by their first producer
  std::vector<std::vector<int>> node_units;  ///< per node: the unit of each output channel (flat: of each span)
  std::vector<int64_t> span;              ///< per node: features per channel entry (flatten gives H*W, otherwise 1)
  std::vector<int> unit_group;            ///< per unit: its group
  /// The unit of output feature (or channel) `position` of node `node`.
  int unit_of(int node, int64_t position) const {
    return node_units[node][static_cast<size_t>(position / span[node])];
  }
};

/// Computes the channel groups of a graph with inferred shapes. Convs and linears start new channel spaces;
/// batch norm, activations, pools and dropout pass them through; a depthwise conv ties its output to its input; add
/// ties its inputs; concat concatenates; flatten spreads channel c over features [c*H*W, (c+1)*H*W).
ChannelAnalysis analyze_channel_groups(const Graph& graph);

/// True for a depthwise conv: groups == input channels == output channels (> 1).
bool is_depthwise(const Graph& graph, const Node& node);

/// Output positions (channels, or features of a flat output) of each node that survive when the units marked in
/// `removed` (indexed by unit) are taken out.
std::vector<std::vector<int64_t>> surviving_positions(const Graph& graph, const ChannelAnalysis& analysis,
                                                      const std::vector<bool>& removed);

/// The graph after removing the units marked in `removed`: conv/linear widths and depthwise groups shrunk, shapes
/// inferred again. Throws Error when a removal would empty a layer.
Graph shrink_graph(const Graph& graph, const ChannelAnalysis& analysis, const std::vector<bool>& removed);

}  // namespace edgesweep
