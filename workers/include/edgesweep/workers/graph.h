// The layer-graph IR: a network as a list of nodes in topological order, with shape inference and
// parameter/MAC counting. Compression reads and rewrites this; training and export are built from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"

namespace edgesweep {

enum class OpKind {
  Input,
  Conv,             ///< 2-D convolution; groups == in channels is depthwise
  BatchNorm,        ///< 2-D batch normalisation (1-D on flat input)
  Relu,
  Relu6,
  MaxPool,
  AvgPool,
  AdaptiveAvgPool,  ///< to output_size x output_size
  Linear,
  Add,              ///< element-wise sum of equal shapes (residual joins)
  Concat,           ///< channel concatenation
  Flatten,
  Dropout,
  Hardswish,
  Hardsigmoid,
  Silu,             ///< x * sigmoid(x), also called swish
  Sigmoid,
  Tanh,
  Gelu,             ///< the exact (erf) form
  LeakyRelu,        ///< slope `alpha` below zero
  Mul,              ///< element-wise product, broadcasting size-1 dimensions (squeeze-excitation gates)
  Slice,            ///< channels [offset, offset + out) of its input (a channel split)
  ChannelShuffle,   ///< channels regrouped: [groups, C / groups] transposed (ShuffleNet)
  Unflatten,        ///< flat features back to channels of 1 x 1 (a gate computed by linear layers)
};

/// Operator name as written in TOML and JSON ("conv", "batchnorm", ...).
const char* op_name(OpKind op);
/// Inverse of op_name; throws InputError for an unknown name.
OpKind op_from_name(const std::string& name);

/// Activation shape of one sample. After Flatten (or a Linear) the shape is flat: `channels` features.
struct Shape {
  int64_t channels = 0;
  int64_t height = 1;
  int64_t width = 1;
  bool flat = false;
  int64_t numel() const { return channels * height * width; }
  bool operator==(const Shape& other) const;
  std::string to_string() const;
};

struct Node {
  std::string name;          ///< identifier: [A-Za-z_][A-Za-z0-9_]*
  OpKind op = OpKind::Input;
  std::vector<int> inputs;   ///< indices of earlier nodes
  int64_t out = 0;           ///< Conv: output channels; Linear: output features; Slice: channels
  int64_t kernel = 1;        ///< Conv, pools
  int64_t stride = 1;        ///< Conv, pools
  int64_t padding = 0;       ///< Conv, pools
  int64_t groups = 1;        ///< Conv; ChannelShuffle
  int64_t dilation = 1;      ///< Conv
  bool ceil_mode = false;    ///< pools: round the output size up
  bool count_include_pad = true;  ///< AvgPool: padded zeros count in the divisor
  int64_t offset = 0;        ///< Slice: first channel (and `out` channels)
  double alpha = 0.01;       ///< LeakyRelu: slope below zero
  bool bias = true;          ///< Conv, Linear
  int64_t output_size = 1;   ///< AdaptiveAvgPool
  double p = 0.5;            ///< Dropout
  double eps = 1e-5;         ///< BatchNorm
  double momentum = 0.1;     ///< BatchNorm
  Shape shape;               ///< output shape, set by infer_shapes
};

struct Graph {
  std::vector<Node> nodes;  ///< nodes[0] is the Input; the last node is the output
  int64_t num_classes = 0;

  const Node& input() const { return nodes.front(); }
  const Node& output() const { return nodes.back(); }
  /// Index of the node called `name`, or -1.
  int find(const std::string& name) const;
  /// Indices of the nodes that read node `index`.
  std::vector<int> consumers(int index) const;
};

/// Whether an operator keeps its input's channels in place, one output channel per input channel (batch norm,
/// activations, pools, dropout).
bool keeps_channels(OpKind op);
/// Whether an operator is an element-wise activation function.
bool is_activation(OpKind op);

/// Input channels of a node (the shape of its first input).
int64_t input_channels(const Graph& graph, const Node& node);

/// Checks the graph (names, input indices, attributes) and sets every node's output shape.
/// Throws InputError naming the layer when a shape does not fit.
void infer_shapes(Graph& graph);

/// Learnable parameters (conv and linear weights and biases, batch-norm scale and shift).
int64_t count_params(const Graph& graph);
/// Multiply-accumulates of one forward pass for one sample (conv and linear).
int64_t count_macs(const Graph& graph);
/// Parameters of one node.
int64_t node_params(const Graph& graph, const Node& node);
/// MACs of one node for one sample.
int64_t node_macs(const Graph& graph, const Node& node);

void to_json(Json& j, const Graph& graph);
/// Reads a graph and infers its shapes.
void from_json(const Json& j, Graph& graph);

/// Builds a graph from inline TOML layers (each a filled-in layer object, see layer_spec()) for an input of
/// `input` shape; layers without `inputs` read the previous layer. Throws InputError naming the layer.
Graph graph_from_layers(const Json& layers, const Shape& input, int64_t num_classes);

}  // namespace edgesweep
