// Graph interpreter module and its parameter initialisation.
#include "edgesweep/workers/graph_module.h"

#include <cmath>

#include <torch/torch.h>

namespace edgesweep {

std::string GraphModuleImpl::tensor_name(const Node& node, const char* role) { return node.name + "_" + role; }

GraphModuleImpl::GraphModuleImpl(Graph graph) : graph_(std::move(graph)) {
  const size_t n = graph_.nodes.size();
  weights_.resize(n);
  biases_.resize(n);
  running_means_.resize(n);
  running_vars_.resize(n);
  last_use_.assign(n, -1);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < n; ++i) {
    const Node& node = graph_.nodes[i];
    for (int in : node.inputs) last_use_[in] = static_cast<int>(i);
    switch (node.op) {
      case OpKind::Conv: {
        const int64_t in_per_group = input_channels(graph_, node) / node.groups;
        auto w = torch::empty({node.out, in_per_group, node.kernel, node.kernel});
        torch::nn::init::kaiming_normal_(w, 0.0, torch::kFanOut, torch::kReLU);
        weights_[i] = register_parameter(tensor_name(node, "weight"), w);
        if (node.bias) biases_[i] = register_parameter(tensor_name(node, "bias"), torch::zeros({node.out}));
        break;
      }
      case OpKind::Linear: {
        const int64_t in = input_channels(graph_, node);
        auto w = torch::empty({node.out, in});
        torch::nn::init::kaiming_uniform_(w, std::sqrt(5.0));
        weights_[i] = register_parameter(tensor_name(node, "weight"), w);
        if (node.bias) {
          const double bound = 1.0 / std::sqrt(static_cast<double>(in));
          biases_[i] = register_parameter(tensor_name(node, "bias"), torch::empty({node.out}).uniform_(-bound, bound));
        }
        break;
      }
      case OpKind::BatchNorm: {
        const int64_t c = node.shape.channels;
        weights_[i] = register_parameter(tensor_name(node, "weight"), torch::ones({c}));
        biases_[i] = register_parameter(tensor_name(node, "bias"), torch::zeros({c}));
        running_means_[i] = register_buffer(tensor_name(node, "running_mean"), torch::zeros({c}));
        running_vars_[i] = register_buffer(tensor_name(node, "running_var"), torch::ones({c}));
        break;
      }
      default:
        break;
    }
  }
}

torch::Tensor GraphModuleImpl::forward(const torch::Tensor& input) {
  const size_t n = graph_.nodes.size();
  std::vector<torch::Tensor> values(n);
  values[0] = output_transform ? output_transform(0, input) : input;
  const auto weight = [&](size_t i) {
    return weight_transform ? weight_transform(static_cast<int>(i), weights_[i]) : weights_[i];
  };
  const bool training = is_training();
  for (size_t i = 1; i < n; ++i) {
    const Node& node = graph_.nodes[i];
    const torch::Tensor& x = values[node.inputs[0]];
    torch::Tensor y;
    switch (node.op) {
      case OpKind::Input:
        break;
      case OpKind::Conv:
        y = torch::conv2d(x, weight(i), biases_[i], {node.stride, node.stride}, {node.padding, node.padding},
                          {node.dilation, node.dilation}, node.groups);
        break;
      case OpKind::BatchNorm:
        y = torch::batch_norm(x, weights_[i], biases_[i], running_means_[i], running_vars_[i], training,
                              node.momentum, node.eps, false);
        break;
      case OpKind::Relu:
        y = torch::relu(x);
        break;
      case OpKind::Relu6:
        y = torch::hardtanh(x, 0.0, 6.0);
        break;
      case OpKind::MaxPool:
        y = torch::max_pool2d(x, {node.kernel, node.kernel}, {node.stride, node.stride}, {node.padding, node.padding},
                              {1, 1}, node.ceil_mode);
        break;
      case OpKind::AvgPool:
        y = torch::avg_pool2d(x, {node.kernel, node.kernel}, {node.stride, node.stride}, {node.padding, node.padding},
                              node.ceil_mode, node.count_include_pad);
        break;
      case OpKind::Hardswish:
        y = torch::hardswish(x);
        break;
      case OpKind::Hardsigmoid:
        y = torch::hardsigmoid(x);
        break;
      case OpKind::Silu:
        y = torch::silu(x);
        break;
      case OpKind::Sigmoid:
        y = torch::sigmoid(x);
        break;
      case OpKind::Tanh:
        y = torch::tanh(x);
        break;
      case OpKind::Gelu:
        y = torch::gelu(x);
        break;
      case OpKind::LeakyRelu:
        y = torch::leaky_relu(x, node.alpha);
        break;
      case OpKind::Mul:
        y = x;
        for (size_t k = 1; k < node.inputs.size(); ++k) y = y * values[node.inputs[k]];
        break;
      case OpKind::Slice:
        y = x.narrow(1, node.offset, node.out);
        break;
      case OpKind::ChannelShuffle: {
        const Shape& s = node.shape;
        y = x.reshape({-1, node.groups, s.channels / node.groups, s.height, s.width})
                .transpose(1, 2)
                .reshape({-1, s.channels, s.height, s.width});
        break;
      }
      case OpKind::AdaptiveAvgPool:
        y = torch::adaptive_avg_pool2d(x, {node.output_size, node.output_size});
        break;
      case OpKind::Linear:
        y = torch::linear(x, weight(i), biases_[i]);
        break;
      case OpKind::Add:
        y = x;
        for (size_t k = 1; k < node.inputs.size(); ++k) y = y + values[node.inputs[k]];
        break;
      case OpKind::Concat: {
        std::vector<torch::Tensor> parts;
        for (int in : node.inputs) parts.push_back(values[in]);
        y = torch::cat(parts, 1);
        break;
      }
      case OpKind::Flatten:
        y = torch::flatten(x, 1);
        break;
      case OpKind::Unflatten:
        y = x.reshape({-1, node.shape.channels, 1, 1});
        break;
      case OpKind::Dropout:
        y = torch::dropout(x, node.p, training);
        break;
    }
    if (output_transform) y = output_transform(static_cast<int>(i), y);
    values[i] = std::move(y);
    for (int in : node.inputs) {
      if (last_use_[in] == static_cast<int>(i)) values[in] = torch::Tensor();
    }
  }
  return values[n - 1];
}

GraphModule clone_graph_module(const GraphModule& model) {
  GraphModule copy(model->graph());
  torch::NoGradGuard no_grad;
  const auto parameters = model->named_parameters();
  for (auto& p : copy->named_parameters()) p.value().copy_(parameters[p.key()]);
  const auto buffers = model->named_buffers();
  for (auto& b : copy->named_buffers()) b.value().copy_(buffers[b.key()]);
  copy->train(model->is_training());
  return copy;
}

}  // namespace edgesweep
