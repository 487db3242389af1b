// Graph work for quantization: batch-norm folding, the plan of quantized values and fused activations, and
// calibration of activation observers.
#include <algorithm>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/device.h"

namespace edgesweep {
namespace {

/// Conv, linear, concat, and add of equal shapes (quantized::add does not broadcast) run on quantized values.
bool is_quantized_op(const Graph& graph, const Node& node) {
  if (node.op == OpKind::Add) {
    for (int in : node.inputs) {
      if (!(graph.nodes[in].shape == node.shape)) return false;
    }
    return true;
  }
  return node.op == OpKind::Conv || node.op == OpKind::Linear || node.op == OpKind::Concat;
}

bool passes_through(OpKind op) {
  return op == OpKind::Relu || op == OpKind::Relu6 || op == OpKind::MaxPool || op == OpKind::AvgPool ||
         op == OpKind::AdaptiveAvgPool || op == OpKind::Flatten || op == OpKind::Dropout;
}

}  // namespace

GraphModule fold_batchnorm(const GraphModule& model) {
  const Graph& graph = model->graph();
  const size_t n = graph.nodes.size();
  // folded_into[j] = the conv/linear batch norm j folds into, or -1.
  std::vector<int> folded_into(n, -1);
  for (size_t j = 1; j < n; ++j) {
    const Node& node = graph.nodes[j];
    if (node.op != OpKind::BatchNorm) continue;
    const int producer = node.inputs[0];
    const OpKind op = graph.nodes[producer].op;
    if ((op == OpKind::Conv || op == OpKind::Linear) && graph.consumers(producer).size() == 1) {
      folded_into[j] = producer;
    }
  }
  Graph smaller;
  smaller.num_classes = graph.num_classes;
  std::vector<int> new_index(n, -1);
  for (size_t i = 0; i < n; ++i) {
    if (folded_into[i] >= 0) {
      new_index[i] = new_index[folded_into[i]];
      smaller.nodes[new_index[i]].bias = true;
      continue;
    }
    Node node = graph.nodes[i];
    for (int& in : node.inputs) in = new_index[in];
    new_index[i] = static_cast<int>(smaller.nodes.size());
    smaller.nodes.push_back(std::move(node));
  }
  infer_shapes(smaller);
  GraphModule result(smaller);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < n; ++i) {
    const Node& node = graph.nodes[i];
    const int from = static_cast<int>(i);
    const int to = new_index[i];
    if (folded_into[i] >= 0) {
      // Batch norm in eval: y = (x - mean) * gamma / sqrt(var + eps) + beta, applied to the layer's output.
      const int layer = folded_into[i];
      const auto factor = model->weight(from).to(torch::kFloat64) /
                          (model->running_var(from).to(torch::kFloat64) + node.eps).sqrt();
      const auto weight = model->weight(layer).to(torch::kFloat64);
      std::vector<int64_t> shape(static_cast<size_t>(weight.dim()), 1);
      shape[0] = -1;
      result->weight(to).copy_(weight * factor.view(shape));
      const auto bias = model->bias(layer).defined() ? model->bias(layer).to(torch::kFloat64)
                                                     : torch::zeros_like(factor);
      result->bias(to).copy_((bias - model->running_mean(from).to(torch::kFloat64)) * factor +
                             model->bias(from).to(torch::kFloat64));
      continue;
    }
    const bool folded_layer = std::find(folded_into.begin(), folded_into.end(), from) != folded_into.end();
    if (folded_layer) continue;  // written with its batch norm above
    if (model->weight(from).defined()) result->weight(to).copy_(model->weight(from));
    if (model->bias(from).defined()) result->bias(to).copy_(model->bias(from));
    if (model->running_mean(from).defined()) result->running_mean(to).copy_(model->running_mean(from));
    if (model->running_var(from).defined()) result->running_var(to).copy_(model->running_var(from));
  }
  result->train(model->is_training());
  return result;
}

std::vector<int> QuantizationPlan::observed_nodes() const {
  std::vector<int> nodes;
  for (size_t i = 0; i < observed.size(); ++i) {
    if (observed[i]) nodes.push_back(static_cast<int>(i));
  }
  return nodes;
}

QuantizationPlan plan_quantization(const Graph& graph) {
  const size_t n = graph.nodes.size();
  QuantizationPlan plan;
  plan.quantized.assign(n, false);
  plan.observed.assign(n, false);
  plan.fused_into.assign(n, -1);
  plan.params_source.assign(n, -1);
  for (size_t i = 1; i < n; ++i) {
    const Node& node = graph.nodes[i];
    const int index = static_cast<int>(i);
    if (is_quantized_op(graph, node)) {
      plan.quantized[i] = true;
      const std::vector<int> consumers = graph.consumers(index);
      const bool fuse = consumers.size() == 1 && (graph.nodes[consumers[0]].op == OpKind::Relu ||
                                                  graph.nodes[consumers[0]].op == OpKind::Relu6);
      if (fuse) {
        plan.fused_into[consumers[0]] = index;
        plan.params_source[i] = consumers[0];
      } else {
        plan.observed[i] = true;
        plan.params_source[i] = index;
      }
    } else if (plan.fused_into[i] >= 0) {
      plan.quantized[i] = true;
      plan.observed[i] = true;
      plan.params_source[i] = index;
    } else if (passes_through(node.op)) {
      plan.quantized[i] = plan.quantized[node.inputs[0]];
      plan.params_source[i] = plan.params_source[node.inputs[0]];
    }
  }
  // A float value read by a quantized op is quantized where it is read, with its own observer.
  for (size_t i = 1; i < n; ++i) {
    if (!is_quantized_op(graph, graph.nodes[i])) continue;
    for (int in : graph.nodes[i].inputs) {
      if (plan.quantized[in]) continue;
      plan.observed[in] = true;
      plan.params_source[in] = in;
    }
  }
  return plan;
}

void calibrate(GraphModule& model, const DataSplits& data, const QuantizationPlan& plan, int64_t batches,
               int64_t batch_size, std::vector<ActivationObserver>& observers) {
  check(data.train.size() > 0, "quantize: calibration needs training images, the training split is empty");
  EDGESWEEP_ASSERT(observers.size() == plan.observed.size());
  const bool was_training = model->is_training();
  const torch::Device device = task_device::current();
  const DevicePlacement placement(device, {model.get()});  // observers take their figures to the host
  auto previous = model->output_transform;
  model->eval();
  model->output_transform = [&](int node, const torch::Tensor& value) {
    if (plan.observed[node]) observers[node].observe(value);
    return value;
  };
  torch::NoGradGuard no_grad;
  int64_t done = 0;
  for (const auto& batch : make_batches(data.train.size(), batch_size, false, nullptr)) {
    if (done++ == batches) break;
    model->forward(normalize_images(data.train.images.index_select(0, batch), data.mean, data.std).to(device));
  }
  model->output_transform = previous;
  model->train(was_training);
}

}  // namespace edgesweep
