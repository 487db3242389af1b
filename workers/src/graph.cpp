// Layer-graph IR: validation, shape inference, counting and JSON form.
#include "edgesweep/workers/graph.h"

#include <algorithm>
#include <cctype>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

struct OpEntry {
  OpKind op;
  const char* name;
};

constexpr OpEntry kOps[] = {
    {OpKind::Input, "input"},       {OpKind::Conv, "conv"},         {OpKind::BatchNorm, "batchnorm"},
    {OpKind::Relu, "relu"},         {OpKind::Relu6, "relu6"},       {OpKind::MaxPool, "maxpool"},
    {OpKind::AvgPool, "avgpool"},   {OpKind::AdaptiveAvgPool, "adaptive_avgpool"},
    {OpKind::Linear, "linear"},     {OpKind::Add, "add"},           {OpKind::Concat, "concat"},
    {OpKind::Flatten, "flatten"},   {OpKind::Dropout, "dropout"},   {OpKind::Hardswish, "hardswish"},
    {OpKind::Hardsigmoid, "hardsigmoid"}, {OpKind::Silu, "silu"},   {OpKind::Sigmoid, "sigmoid"},
    {OpKind::Tanh, "tanh"},         {OpKind::Gelu, "gelu"},         {OpKind::LeakyRelu, "leaky_relu"},
    {OpKind::Mul, "mul"},           {OpKind::Slice, "slice"},       {OpKind::ChannelShuffle, "channel_shuffle"},
    {OpKind::Unflatten, "unflatten"},
};

bool is_identifier(const std::string& name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

/// Output size of a convolution or pooling window along one axis, as torch computes it (ceil mode: a last window
/// may start in the padding on the right, but not past it).
int64_t pooled_size(int64_t size, int64_t kernel, int64_t stride, int64_t padding, int64_t dilation = 1,
                    bool ceil_mode = false) {
  const int64_t span = size + 2 * padding - dilation * (kernel - 1) - 1;
  if (span < 0) return 0;  // a kernel larger than the padded input gives no output, as in torch
  int64_t out = (span + (ceil_mode ? stride - 1 : 0)) / stride + 1;
  if (ceil_mode && (out - 1) * stride >= size + padding) --out;
  return out;
}

/// The shape of an element-wise op over `node`'s inputs: equal shapes, or spatial inputs whose channels, height
/// and width are each equal or 1 (broadcast).
Shape broadcast_shape(const Graph& graph, const Node& node) {
  Shape out = graph.nodes[node.inputs[0]].shape;
  for (int k : node.inputs) {
    const Shape& s = graph.nodes[k].shape;
    const auto fits = [](int64_t a, int64_t b) { return a == b || a == 1 || b == 1; };
    const bool ok = s == out || (!s.flat && !out.flat && fits(s.channels, out.channels) &&
                                 fits(s.height, out.height) && fits(s.width, out.width));
    check_input(ok, "layer '{}' ({}): input '{}' has shape {}, which does not broadcast with {} of '{}'", node.name,
                op_name(node.op), graph.nodes[k].name, s.to_string(), out.to_string(),
                graph.nodes[node.inputs[0]].name);
    out.channels = std::max(out.channels, s.channels);
    out.height = std::max(out.height, s.height);
    out.width = std::max(out.width, s.width);
  }
  return out;
}

void require_spatial(const Node& node, const Shape& in) {
  check_input(!in.flat, "layer '{}' ({}) needs a spatial input, got flat {}", node.name, op_name(node.op),
              in.to_string());
}

}  // namespace

const char* op_name(OpKind op) {
  for (const auto& e : kOps) {
    if (e.op == op) return e.name;
  }
  return "?";
}

OpKind op_from_name(const std::string& name) {
  for (const auto& e : kOps) {
    if (name == e.name) return e.op;
  }
  throw InputError(fmt::format("unknown layer op '{}'", name));
}

bool Shape::operator==(const Shape& other) const {
  return channels == other.channels && height == other.height && width == other.width && flat == other.flat;
}

std::string Shape::to_string() const {
  if (flat) return fmt::format("[{}]", channels);
  return fmt::format("[{}x{}x{}]", channels, height, width);
}

bool is_activation(OpKind op) {
  switch (op) {
    case OpKind::Relu:
    case OpKind::Relu6:
    case OpKind::Hardswish:
    case OpKind::Hardsigmoid:
    case OpKind::Silu:
    case OpKind::Sigmoid:
    case OpKind::Tanh:
    case OpKind::Gelu:
    case OpKind::LeakyRelu:
      return true;
    default:
      return false;
  }
}

bool keeps_channels(OpKind op) {
  return is_activation(op) || op == OpKind::BatchNorm || op == OpKind::MaxPool || op == OpKind::AvgPool ||
         op == OpKind::AdaptiveAvgPool || op == OpKind::Dropout;
}

int Graph::find(const std::string& name) const {
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

std::vector<int> Graph::consumers(int index) const {
  std::vector<int> result;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (int in : nodes[i].inputs) {
      if (in == index) {
        result.push_back(static_cast<int>(i));
        break;
      }
    }
  }
  return result;
}

int64_t input_channels(const Graph& graph, const Node& node) {
  EDGESWEEP_ASSERT(!node.inputs.empty());
  return graph.nodes[node.inputs[0]].shape.channels;
}

void infer_shapes(Graph& graph) {
  check_input(!graph.nodes.empty() && graph.nodes[0].op == OpKind::Input, "a model graph must start with its input");
  check_input(graph.nodes.size() >= 2, "a model graph needs at least one layer");
  const Shape& in0 = graph.nodes[0].shape;
  check_input(in0.channels > 0 && in0.height > 0 && in0.width > 0 && !in0.flat, "bad input shape {}",
              in0.to_string());
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    Node& node = graph.nodes[i];
    check_input(is_identifier(node.name), "layer {} has an invalid name '{}' (letters, digits and _ only)", i,
                node.name);
    for (size_t j = 0; j < i; ++j) {
      check_input(graph.nodes[j].name != node.name, "two layers are called '{}' ({} and {})", node.name, j, i);
    }
    if (i == 0) continue;
    check_input(node.op != OpKind::Input, "layer '{}': only the first node may be the input", node.name);
    check_input(!node.inputs.empty(), "layer '{}' has no input", node.name);
    for (int in : node.inputs) {
      check_input(in >= 0 && static_cast<size_t>(in) < i, "layer '{}' reads a layer that is not before it", node.name);
    }
    const bool multi = node.op == OpKind::Add || node.op == OpKind::Mul || node.op == OpKind::Concat;
    check_input(multi ? node.inputs.size() >= 2 : node.inputs.size() == 1, "layer '{}' ({}) takes {} input(s), got {}",
                node.name, op_name(node.op), multi ? "2 or more" : "exactly 1", node.inputs.size());
    const Shape in = graph.nodes[node.inputs[0]].shape;
    Shape out = in;
    switch (node.op) {
      case OpKind::Input:
        break;
      case OpKind::Conv: {
        require_spatial(node, in);
        check_input(node.out > 0, "layer '{}' (conv) needs out > 0", node.name);
        check_input(node.kernel > 0 && node.stride > 0 && node.padding >= 0 && node.groups > 0 && node.dilation > 0,
                    "layer '{}' (conv) has a bad kernel/stride/padding/groups/dilation", node.name);
        check_input(in.channels % node.groups == 0 && node.out % node.groups == 0,
                    "layer '{}' (conv): groups = {} must divide input channels {} and output channels {}", node.name,
                    node.groups, in.channels, node.out);
        out.channels = node.out;
        out.height = pooled_size(in.height, node.kernel, node.stride, node.padding, node.dilation);
        out.width = pooled_size(in.width, node.kernel, node.stride, node.padding, node.dilation);
        break;
      }
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        require_spatial(node, in);
        check_input(node.kernel > 0 && node.stride > 0 && node.padding >= 0 && 2 * node.padding <= node.kernel,
                    "layer '{}' ({}): bad kernel {}, stride {} or padding {} (padding at most half the kernel)",
                    node.name, op_name(node.op), node.kernel, node.stride, node.padding);
        out.height = pooled_size(in.height, node.kernel, node.stride, node.padding, 1, node.ceil_mode);
        out.width = pooled_size(in.width, node.kernel, node.stride, node.padding, 1, node.ceil_mode);
        break;
      case OpKind::AdaptiveAvgPool:
        require_spatial(node, in);
        check_input(node.output_size > 0, "layer '{}': output_size must be > 0", node.name);
        out.height = out.width = node.output_size;
        break;
      case OpKind::BatchNorm:
      case OpKind::Relu:
      case OpKind::Relu6:
      case OpKind::Dropout:
      case OpKind::Hardswish:
      case OpKind::Hardsigmoid:
      case OpKind::Silu:
      case OpKind::Sigmoid:
      case OpKind::Tanh:
      case OpKind::Gelu:
      case OpKind::LeakyRelu:
        break;
      case OpKind::Slice:
        require_spatial(node, in);
        check_input(node.offset >= 0 && node.out > 0 && node.offset + node.out <= in.channels,
                    "layer '{}' (slice): channels [{}, {}) are not within the {} of its input", node.name,
                    node.offset, node.offset + node.out, in.channels);
        out.channels = node.out;
        break;
      case OpKind::ChannelShuffle:
        require_spatial(node, in);
        check_input(node.groups > 0 && in.channels % node.groups == 0,
                    "layer '{}' (channel_shuffle): groups = {} must divide its {} channels", node.name, node.groups,
                    in.channels);
        break;
      case OpKind::Mul:
        out = broadcast_shape(graph, node);
        break;
      case OpKind::Linear:
        check_input(in.flat, "layer '{}' (linear) needs a flat input (add a flatten layer before it), got {}",
                    node.name, in.to_string());
        check_input(node.out > 0, "layer '{}' (linear) needs out > 0", node.name);
        out = Shape{node.out, 1, 1, true};
        break;
      case OpKind::Flatten:
        out = Shape{in.numel(), 1, 1, true};
        break;
      case OpKind::Unflatten:
        check_input(in.flat, "layer '{}' (unflatten) needs a flat input, got {}", node.name, in.to_string());
        out = Shape{in.channels, 1, 1, false};
        break;
      case OpKind::Add:
        out = broadcast_shape(graph, node);
        break;
      case OpKind::Concat:
        require_spatial(node, in);
        out.channels = 0;
        for (int k : node.inputs) {
          const Shape& s = graph.nodes[k].shape;
          check_input(!s.flat && s.height == in.height && s.width == in.width,
                      "layer '{}' (concat): input '{}' has shape {}, spatial size must match {}", node.name,
                      graph.nodes[k].name, s.to_string(), in.to_string());
          out.channels += s.channels;
        }
        break;
    }
    check_input(out.channels > 0 && out.height > 0 && out.width > 0,
                "layer '{}' ({}) gives an empty output {} from input {}", node.name, op_name(node.op),
                out.to_string(), in.to_string());
    node.shape = out;
  }
  const Shape& last = graph.nodes.back().shape;
  check_input(last.flat, "the last layer '{}' must give flat class scores, got {}", graph.nodes.back().name,
              last.to_string());
  if (graph.num_classes > 0) {
    check_input(last.channels == graph.num_classes, "the last layer '{}' gives {} outputs, but the data has {} classes",
                graph.nodes.back().name, last.channels, graph.num_classes);
  }
}

int64_t node_params(const Graph& graph, const Node& node) {
  switch (node.op) {
    case OpKind::Conv:
      return node.out * (input_channels(graph, node) / node.groups) * node.kernel * node.kernel +
             (node.bias ? node.out : 0);
    case OpKind::Linear:
      return node.out * input_channels(graph, node) + (node.bias ? node.out : 0);
    case OpKind::BatchNorm:
      return 2 * node.shape.channels;
    default:
      return 0;
  }
}

int64_t node_macs(const Graph& graph, const Node& node) {
  switch (node.op) {
    case OpKind::Conv:
      return node.shape.channels * node.shape.height * node.shape.width * (input_channels(graph, node) / node.groups) *
             node.kernel * node.kernel;
    case OpKind::Linear:
      return node.out * input_channels(graph, node);
    default:
      return 0;
  }
}

int64_t count_params(const Graph& graph) {
  int64_t total = 0;
  for (const Node& n : graph.nodes) total += node_params(graph, n);
  return total;
}

int64_t count_macs(const Graph& graph) {
  int64_t total = 0;
  for (const Node& n : graph.nodes) total += node_macs(graph, n);
  return total;
}

void to_json(Json& j, const Graph& graph) {
  Json nodes = Json::array();
  for (const Node& n : graph.nodes) {
    Json inputs = Json::array();
    for (int in : n.inputs) inputs.push_back(graph.nodes[in].name);
    Json node = {{"name", n.name}, {"op", op_name(n.op)}, {"inputs", inputs}};
    switch (n.op) {
      case OpKind::Input:
        node["shape"] = {n.shape.channels, n.shape.height, n.shape.width};
        break;
      case OpKind::Conv:
        node.update({{"out", n.out}, {"kernel", n.kernel}, {"stride", n.stride}, {"padding", n.padding},
                     {"groups", n.groups}, {"bias", n.bias}});
        if (n.dilation != 1) node["dilation"] = n.dilation;  // keys at their default are left out (stable hashes)
        break;
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        node.update({{"kernel", n.kernel}, {"stride", n.stride}, {"padding", n.padding}});
        if (n.ceil_mode) node["ceil_mode"] = true;
        if (n.op == OpKind::AvgPool && !n.count_include_pad) node["count_include_pad"] = false;
        break;
      case OpKind::Slice:
        node.update({{"offset", n.offset}, {"out", n.out}});
        break;
      case OpKind::ChannelShuffle:
        node["groups"] = n.groups;
        break;
      case OpKind::LeakyRelu:
        node["alpha"] = n.alpha;
        break;
      case OpKind::AdaptiveAvgPool:
        node["output_size"] = n.output_size;
        break;
      case OpKind::Linear:
        node.update({{"out", n.out}, {"bias", n.bias}});
        break;
      case OpKind::BatchNorm:
        node.update({{"eps", n.eps}, {"momentum", n.momentum}});
        break;
      case OpKind::Dropout:
        node["p"] = n.p;
        break;
      default:
        break;
    }
    nodes.push_back(node);
  }
  j = Json{{"num_classes", graph.num_classes}, {"nodes", nodes}};
}

void from_json(const Json& j, Graph& graph) {
  graph = Graph{};
  graph.num_classes = j.at("num_classes").get<int64_t>();
  for (const Json& jn : j.at("nodes")) {
    Node n;
    n.name = jn.at("name").get<std::string>();
    n.op = op_from_name(jn.at("op").get<std::string>());
    for (const Json& in : jn.at("inputs")) {
      const int index = graph.find(in.get<std::string>());
      check_input(index >= 0, "layer '{}' reads unknown layer '{}'", n.name, in.get<std::string>());
      n.inputs.push_back(index);
    }
    if (n.op == OpKind::Input) {
      const Json& s = jn.at("shape");
      n.shape = Shape{s.at(0).get<int64_t>(), s.at(1).get<int64_t>(), s.at(2).get<int64_t>(), false};
    }
    n.out = jn.value("out", int64_t{0});
    n.kernel = jn.value("kernel", int64_t{1});
    n.stride = jn.value("stride", int64_t{1});
    n.padding = jn.value("padding", int64_t{0});
    n.groups = jn.value("groups", int64_t{1});
    n.bias = jn.value("bias", true);
    n.output_size = jn.value("output_size", int64_t{1});
    n.p = jn.value("p", 0.5);
    n.eps = jn.value("eps", 1e-5);
    n.momentum = jn.value("momentum", 0.1);
    n.dilation = jn.value("dilation", int64_t{1});
    n.ceil_mode = jn.value("ceil_mode", false);
    n.count_include_pad = jn.value("count_include_pad", true);
    n.offset = jn.value("offset", int64_t{0});
    n.alpha = jn.value("alpha", 0.01);
    graph.nodes.push_back(std::move(n));
  }
  infer_shapes(graph);
}

Graph graph_from_layers(const Json& layers, const Shape& input, int64_t num_classes) {
  Graph graph;
  graph.num_classes = num_classes;
  Node in;
  in.name = "input";
  in.op = OpKind::Input;
  in.shape = input;
  graph.nodes.push_back(in);
  check_input(layers.is_array() && !layers.empty(), "a custom model needs [[model.layers]]");
  for (size_t i = 0; i < layers.size(); ++i) {
    const Json& layer = layers[i];
    Node n;
    n.op = op_from_name(layer.at("op").get<std::string>());
    n.name = layer.value("name", std::string());
    if (n.name.empty()) n.name = fmt::format("{}{}", op_name(n.op), i + 1);
    const Json inputs = layer.value("inputs", Json::array());
    if (inputs.empty()) {
      n.inputs.push_back(static_cast<int>(graph.nodes.size()) - 1);
    } else {
      for (const Json& name : inputs) {
        const int index = graph.find(name.get<std::string>());
        check_input(index >= 0, "layer {} ('{}') reads '{}', which is not an earlier layer", i + 1, n.name,
                    name.get<std::string>());
        n.inputs.push_back(index);
      }
    }
    n.out = layer.value("out", int64_t{0});
    n.groups = layer.value("groups", int64_t{1});
    n.bias = layer.value("bias", true);
    n.output_size = layer.value("output_size", int64_t{1});
    n.p = layer.value("p", 0.5);
    const bool pool = n.op == OpKind::MaxPool || n.op == OpKind::AvgPool;
    const int64_t kernel = layer.value("kernel", int64_t{0});
    const int64_t stride = layer.value("stride", int64_t{0});
    const int64_t padding = layer.value("padding", int64_t{-1});
    n.kernel = kernel > 0 ? kernel : (pool ? 2 : 3);
    n.stride = stride > 0 ? stride : (pool ? n.kernel : 1);
    n.padding = padding >= 0 ? padding : (pool ? 0 : n.kernel / 2);
    graph.nodes.push_back(std::move(n));
  }
  infer_shapes(graph);
  return graph;
}

}  // namespace edgesweep
