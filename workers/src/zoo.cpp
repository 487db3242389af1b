// Zoo architectures built node by node in the IR.
#include "edgesweep/workers/zoo.h"

#include <algorithm>
#include <cmath>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

/// Appends nodes to a graph; each call returns the new node's index.
class GraphBuilder {
 public:
  GraphBuilder(const Shape& input, int64_t num_classes) {
    graph_.num_classes = num_classes;
    Node in;
    in.name = "input";
    in.op = OpKind::Input;
    in.shape = input;
    graph_.nodes.push_back(in);
  }

  int conv(const std::string& name, int from, int64_t out, int64_t kernel, int64_t stride, int64_t groups = 1) {
    Node n = make(name, OpKind::Conv, {from});
    n.out = out;
    n.kernel = kernel;
    n.stride = stride;
    n.padding = kernel / 2;
    n.groups = groups;
    n.bias = false;  // every zoo conv is followed by batch norm
    return add(std::move(n));
  }
  int batchnorm(const std::string& name, int from) { return add(make(name, OpKind::BatchNorm, {from})); }
  int relu(const std::string& name, int from) { return add(make(name, OpKind::Relu, {from})); }
  int relu6(const std::string& name, int from) { return add(make(name, OpKind::Relu6, {from})); }
  int maxpool(const std::string& name, int from, int64_t kernel) {
    Node n = make(name, OpKind::MaxPool, {from});
    n.kernel = kernel;
    n.stride = kernel;
    return add(std::move(n));
  }
  int global_avgpool(const std::string& name, int from) {
    Node n = make(name, OpKind::AdaptiveAvgPool, {from});
    n.output_size = 1;
    return add(std::move(n));
  }
  int flatten(const std::string& name, int from) { return add(make(name, OpKind::Flatten, {from})); }
  int dropout(const std::string& name, int from, double p) {
    Node n = make(name, OpKind::Dropout, {from});
    n.p = p;
    return add(std::move(n));
  }
  int linear(const std::string& name, int from, int64_t out) {
    Node n = make(name, OpKind::Linear, {from});
    n.out = out;
    return add(std::move(n));
  }
  int sum(const std::string& name, std::vector<int> from) { return add(make(name, OpKind::Add, std::move(from))); }

  /// conv, batch norm and (optionally) an activation.
  int conv_bn(const std::string& name, int from, int64_t out, int64_t kernel, int64_t stride, const char* activation,
              int64_t groups = 1) {
    int x = conv(name + "_conv", from, out, kernel, stride, groups);
    x = batchnorm(name + "_bn", x);
    if (std::string(activation) == "relu") x = relu(name + "_relu", x);
    if (std::string(activation) == "relu6") x = relu6(name + "_relu6", x);
    return x;
  }

  int64_t channels(int index) {
    infer_shapes_so_far();
    return graph_.nodes[index].shape.channels;
  }
  int64_t height(int index) {
    infer_shapes_so_far();
    return graph_.nodes[index].shape.height;
  }

  Graph finish() {
    infer_shapes(graph_);
    return std::move(graph_);
  }

 private:
  Node make(const std::string& name, OpKind op, std::vector<int> inputs) {
    Node n;
    n.name = name;
    n.op = op;
    n.inputs = std::move(inputs);
    return n;
  }
  int add(Node node) {
    graph_.nodes.push_back(std::move(node));
    return static_cast<int>(graph_.nodes.size()) - 1;
  }
  /// Shapes of a partial graph: infer on a copy whose last node is treated as flat-free.
  void infer_shapes_so_far() {
    Graph partial = graph_;
    partial.num_classes = 0;
    Node fake;
    fake.name = "shape_probe_flatten";
    fake.op = OpKind::Flatten;
    fake.inputs = {static_cast<int>(partial.nodes.size()) - 1};
    partial.nodes.push_back(fake);
    infer_shapes(partial);
    for (size_t i = 0; i < graph_.nodes.size(); ++i) graph_.nodes[i].shape = partial.nodes[i].shape;
  }

  Graph graph_;
};

int64_t scaled(int64_t channels, double width) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::lround(static_cast<double>(channels) * width)));
}

Graph small_cnn(const Shape& input, int64_t classes, double width) {
  GraphBuilder b(input, classes);
  int x = b.conv_bn("conv1", 0, scaled(32, width), 3, 1, "relu");
  x = b.maxpool("pool1", x, 2);
  x = b.conv_bn("conv2", x, scaled(64, width), 3, 1, "relu");
  x = b.maxpool("pool2", x, 2);
  x = b.flatten("flatten", x);
  x = b.linear("fc1", x, scaled(128, width));
  x = b.relu("fc1_relu", x);
  x = b.dropout("dropout", x, 0.25);
  b.linear("fc2", x, classes);
  return b.finish();
}

Graph vgg(const Shape& input, int64_t classes, double width) {
  // VGG-11's layout, narrowed for small images: numbers are conv widths, 0 is a 2x2 max-pool.
  const int64_t layout[] = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0};
  GraphBuilder b(input, classes);
  int x = 0;
  int conv_index = 0;
  int pool_index = 0;
  for (int64_t c : layout) {
    if (c == 0) {
      if (b.height(x) < 2) continue;  // small inputs: skip pools that would empty the map
      x = b.maxpool(fmt::format("pool{}", ++pool_index), x, 2);
    } else {
      x = b.conv_bn(fmt::format("conv{}", ++conv_index), x, scaled(c, width), 3, 1, "relu");
    }
  }
  x = b.global_avgpool("avgpool", x);
  x = b.flatten("flatten", x);
  b.linear("fc", x, classes);
  return b.finish();
}

Graph resnet(const Shape& input, int64_t classes, double width, int blocks_per_stage) {
  GraphBuilder b(input, classes);
  int x = b.conv_bn("stem", 0, scaled(16, width), 3, 1, "relu");
  const int64_t stage_channels[] = {16, 32, 64};
  for (int stage = 0; stage < 3; ++stage) {
    const int64_t out = scaled(stage_channels[stage], width);
    for (int block = 0; block < blocks_per_stage; ++block) {
      const std::string name = fmt::format("layer{}_{}", stage + 1, block);
      const int64_t stride = (stage > 0 && block == 0) ? 2 : 1;
      int y = b.conv_bn(name + "_a", x, out, 3, stride, "relu");
      y = b.conv_bn(name + "_b", y, out, 3, 1, "");
      int shortcut = x;
      if (stride != 1 || b.channels(x) != out) shortcut = b.conv_bn(name + "_down", x, out, 1, stride, "");
      x = b.sum(name + "_add", {y, shortcut});
      x = b.relu(name + "_relu", x);
    }
  }
  x = b.global_avgpool("avgpool", x);
  x = b.flatten("flatten", x);
  b.linear("fc", x, classes);
  return b.finish();
}

Graph mobilenet_v2(const Shape& input, int64_t classes, double width) {
  struct Stage {
    int64_t expand, channels, repeats, stride;
  };
  // MobileNetV2's inverted residual stages, shortened for 28-32 px inputs.
  const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 3, 2}, {6, 96, 2, 1}};
  GraphBuilder b(input, classes);
  int x = b.conv_bn("stem", 0, scaled(32, width), 3, 1, "relu6");
  int index = 0;
  for (const Stage& s : stages) {
    const int64_t out = scaled(s.channels, width);
    for (int64_t r = 0; r < s.repeats; ++r) {
      const std::string name = fmt::format("block{}", ++index);
      const int64_t stride = r == 0 ? s.stride : 1;
      const int64_t in = b.channels(x);
      const int64_t hidden = in * s.expand;
      int y = x;
      if (s.expand != 1) y = b.conv_bn(name + "_expand", y, hidden, 1, 1, "relu6");
      y = b.conv_bn(name + "_dw", y, hidden, 3, stride, "relu6", hidden);
      y = b.conv_bn(name + "_project", y, out, 1, 1, "");
      if (stride == 1 && in == out) y = b.sum(name + "_add", {y, x});
      x = y;
    }
  }
  x = b.conv_bn("head", x, scaled(320, width), 1, 1, "relu6");
  x = b.global_avgpool("avgpool", x);
  x = b.flatten("flatten", x);
  x = b.dropout("dropout", x, 0.2);
  b.linear("fc", x, classes);
  return b.finish();
}

}  // namespace

const std::vector<std::string>& zoo_names() {
  static const std::vector<std::string> names = {"small-cnn", "vgg", "resnet8", "resnet20", "mobilenetv2"};
  return names;
}

Graph build_zoo_model(const std::string& arch, const Shape& input, int64_t num_classes, double width) {
  check_input(input.height >= 8 && input.width >= 8, "model '{}' needs inputs of at least 8x8, got {}", arch,
              input.to_string());
  if (arch == "small-cnn") return small_cnn(input, num_classes, width);
  if (arch == "vgg") return vgg(input, num_classes, width);
  if (arch == "resnet8") return resnet(input, num_classes, width, 1);
  if (arch == "resnet20") return resnet(input, num_classes, width, 3);
  if (arch == "mobilenetv2") return mobilenet_v2(input, num_classes, width);
  throw InputError(fmt::format("unknown model architecture '{}'", arch));
}

Graph build_model(const ModelConfig& config, const Shape& input, int64_t num_classes) {
  if (config.arch == "custom") return graph_from_layers(config.layers, input, num_classes);
  return build_zoo_model(config.arch, input, num_classes, config.width);
}

}  // namespace edgesweep
