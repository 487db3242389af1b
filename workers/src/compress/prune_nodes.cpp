// Node pruning: whole neurons of linear layers, ranked by the L2 norm of their incoming weights and removed
// physically through the channel-group rewrite (the consumer's input features shrink with them).
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/prune.h"

namespace edgesweep {

ChannelAnalysis restrict_to_linear_groups(const Graph& graph, ChannelAnalysis analysis) {
  for (ChannelGroup& group : analysis.groups) {
    if (!group.single_producer()) continue;
    const Node& producer = graph.nodes[group.producers.front()];
    if (producer.op == OpKind::Linear) continue;
    group.prunable = false;
    group.fixed_reason = fmt::format("node pruning removes neurons of linear layers; '{}' is a {}", producer.name,
                                     op_name(producer.op));
  }
  return analysis;
}

GraphModule prune_nodes(const GraphModule& model, const ChannelSelection& selection) {
  const ChannelAnalysis analysis = restrict_to_linear_groups(model->graph(), analyze_channel_groups(model->graph()));
  ChannelSelection nodes = selection;
  nodes.coupled = false;
  const std::vector<double> scores = channel_importance(model, analysis, ChannelImportance::L2);
  return rebuild_without(model, analysis, select_units(analysis, scores, nodes));
}

}  // namespace edgesweep
