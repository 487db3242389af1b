// A trainable LibTorch module built from the layer-graph IR: one parameter set per node, a forward pass that
// interprets the graph with the same ATen operators the exported TorchScript calls.
#pragma once

#include <functional>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "edgesweep/workers/graph.h"

namespace edgesweep {

class GraphModuleImpl : public torch::nn::Module {
 public:
  /// Creates parameters for every node, initialised from LibTorch's global generator (seed it first).
  explicit GraphModuleImpl(Graph graph);

  /// Runs the graph on a batch [N, C, H, W]; returns the output node's value.
  torch::Tensor forward(const torch::Tensor& input);

  const Graph& graph() const { return graph_; }

  /// Parameter or buffer tensors of node `index` (undefined when the node has none).
  const torch::Tensor& weight(int index) const { return weights_[index]; }
  const torch::Tensor& bias(int index) const { return biases_[index]; }
  const torch::Tensor& running_mean(int index) const { return running_means_[index]; }
  const torch::Tensor& running_var(int index) const { return running_vars_[index]; }

  /// Name of a node's tensor as registered here and in exported TorchScript, e.g. "conv1_weight".
  static std::string tensor_name(const Node& node, const char* role);

  /// Optional transforms of the forward pass (calibration, quantization-aware training): `weight_transform` maps
  /// each conv and linear weight before use, `output_transform` each node's output, the input node's included.
  /// Empty functions are skipped.
  std::function<torch::Tensor(int node, const torch::Tensor& weight)> weight_transform;
  std::function<torch::Tensor(int node, const torch::Tensor& value)> output_transform;

 private:
  Graph graph_;
  std::vector<torch::Tensor> weights_, biases_, running_means_, running_vars_;
  std::vector<int> last_use_;  ///< index of the last node reading each value, to free activations early
};
TORCH_MODULE(GraphModule);

/// A deep copy of `model`: the same graph, its own copies of every parameter and buffer, the same training mode
/// (the transforms are not copied).
GraphModule clone_graph_module(const GraphModule& model);

}  // namespace edgesweep
