// TorchScript source generation, export and loading back.
#include "edgesweep/workers/torchscript.h"

#include <sstream>

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/file_io.h"

namespace edgesweep {
namespace {

std::string value_name(const Node& node) { return "v_" + node.name; }

std::string pair(int64_t v) { return fmt::format("[{}, {}]", v, v); }

std::string float_literal(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  std::string s = out.str();
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

}  // namespace

std::string float_expression(const Graph& graph, const Node& node, const std::vector<std::string>& inputs,
                             const std::function<std::string(const char*)>& tensor) {
  const std::string& x = inputs[0];
  const auto chain = [&](const char* op) {  // a + b + c as ((a + b) + c)
    std::string result = x;
    for (size_t k = 1; k < inputs.size(); ++k) result = (k > 1 ? "(" + result + ")" : result) + op + inputs[k];
    return result;
  };
  switch (node.op) {
    case OpKind::Conv:
      return fmt::format("torch.conv2d({}, {}, {}, {}, {}, {}, {})", x, tensor("weight"),
                         node.bias ? tensor("bias") : "None", pair(node.stride), pair(node.padding),
                         pair(node.dilation), node.groups);
    case OpKind::BatchNorm:
      return fmt::format("torch.batch_norm({}, {}, {}, {}, {}, False, {}, {}, False)", x, tensor("weight"),
                         tensor("bias"), tensor("running_mean"), tensor("running_var"), float_literal(node.momentum),
                         float_literal(node.eps));
    case OpKind::Relu:
      return "torch.relu(" + x + ")";
    case OpKind::Relu6:
      return "torch.hardtanh(" + x + ", 0.0, 6.0)";
    case OpKind::Hardswish:
      return "torch.hardswish(" + x + ")";
    case OpKind::Hardsigmoid:
      return "torch.hardsigmoid(" + x + ")";
    case OpKind::Silu:
      return "torch.silu(" + x + ")";
    case OpKind::Sigmoid:
      return "torch.sigmoid(" + x + ")";
    case OpKind::Tanh:
      return "torch.tanh(" + x + ")";
    case OpKind::Gelu:
      return "torch.gelu(" + x + ")";
    case OpKind::LeakyRelu:
      return fmt::format("torch.leaky_relu({}, {})", x, float_literal(node.alpha));
    case OpKind::MaxPool:
      return fmt::format("torch.max_pool2d({}, {}, {}, {}, [1, 1], {})", x, pair(node.kernel), pair(node.stride),
                         pair(node.padding), node.ceil_mode ? "True" : "False");
    case OpKind::AvgPool:
      return fmt::format("torch.avg_pool2d({}, {}, {}, {}, {}, {})", x, pair(node.kernel), pair(node.stride),
                         pair(node.padding), node.ceil_mode ? "True" : "False",
                         node.count_include_pad ? "True" : "False");
    case OpKind::AdaptiveAvgPool:
      return fmt::format("torch.adaptive_avg_pool2d({}, {})", x, pair(node.output_size));
    case OpKind::Linear:
      return fmt::format("torch.linear({}, {}, {})", x, tensor("weight"), node.bias ? tensor("bias") : "None");
    case OpKind::Add:
      return chain(" + ");
    case OpKind::Mul:
      return chain(" * ");
    case OpKind::Concat:
      return "torch.cat([" + fmt::to_string(fmt::join(inputs, ", ")) + "], 1)";
    case OpKind::Slice:
      return fmt::format("torch.narrow({}, 1, {}, {})", x, node.offset, node.out);
    case OpKind::ChannelShuffle: {
      const Shape& s = node.shape;
      return fmt::format("torch.reshape(torch.transpose(torch.reshape({}, [-1, {}, {}, {}, {}]), 1, 2), [-1, {}, {}, {}])",
                         x, node.groups, s.channels / node.groups, s.height, s.width, s.channels, s.height, s.width);
    }
    case OpKind::Flatten:
      return "torch.flatten(" + x + ", 1)";
    case OpKind::Unflatten:
      return fmt::format("torch.reshape({}, [-1, {}, 1, 1])", x, node.shape.channels);
    case OpKind::Dropout:  // identity at inference
    case OpKind::Input:
      return x;
  }
  return x;
}

std::string torchscript_source(const Graph& graph) {
  std::ostringstream src;
  src << "def forward(self, x):\n";
  src << "    " << value_name(graph.nodes[0]) << " = x\n";
  for (size_t i = 1; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    std::vector<std::string> inputs;
    for (int in : node.inputs) inputs.push_back(value_name(graph.nodes[in]));
    src << "    " << value_name(node) << " = "
        << float_expression(graph, node, inputs,
                            [&](const char* role) { return "self." + GraphModuleImpl::tensor_name(node, role); })
        << "\n";
  }
  src << "    return " << value_name(graph.nodes.back()) << "\n";
  return src.str();
}

torch::jit::Module export_torchscript(const GraphModule& model) {
  torch::jit::Module module("__torch__.edgesweep.Model");
  module.register_attribute("training", c10::BoolType::get(), false);
  torch::NoGradGuard no_grad;
  for (const auto& p : model->named_parameters(/*recurse=*/false)) {
    module.register_parameter(p.key(), p.value().detach().clone(), /*is_buffer=*/false);
  }
  for (const auto& b : model->named_buffers(/*recurse=*/false)) {
    module.register_buffer(b.key(), b.value().detach().clone());
  }
  module.define(torchscript_source(model->graph()));
  module.eval();
  return module;
}

void save_torchscript(const GraphModule& model, const Json& metadata, const std::filesystem::path& path) {
  torch::jit::Module module = export_torchscript(model);
  torch::jit::ExtraFilesMap extra;
  extra[kGraphFile] = Json(model->graph()).dump();
  extra[kMetadataFile] = metadata.dump();
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  // Serialised in memory, then written by code that checks every write: LibTorch's file writer throws from its
  // destructor when the disk fills up, which ends the process.
  std::ostringstream archive;
  try {
    module.save(archive, extra);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("cannot save model to '{}': {}", path.string(), e.what_without_backtrace()));
  }
  write_file_atomically(path, archive.str());  // never a half-written archive under the final name
}

Json read_archive_metadata(const std::filesystem::path& path) {
  try {
    caffe2::serialize::PyTorchStreamReader reader(path.string());
    const std::string record = std::string("extra/") + kMetadataFile;
    if (!reader.hasRecord(record)) return Json::object();
    const auto [data, size] = reader.getRecord(record);
    const std::string text(static_cast<const char*>(data.get()), size);
    return text.empty() ? Json::object() : Json::parse(text);
  } catch (const c10::Error& e) {
    throw InputError(
        fmt::format("'{}' is not a TorchScript archive ({})", path.string(), e.what_without_backtrace()));
  } catch (const Json::exception& e) {
    throw InputError(fmt::format("'{}' holds a malformed {} ({})", path.string(), kMetadataFile, e.what()));
  }
}

LoadedModel load_graph_module(const std::filesystem::path& path) {
  check(std::filesystem::exists(path), "model file '{}' does not exist", path.string());
  torch::jit::ExtraFilesMap extra{{kGraphFile, ""}, {kMetadataFile, ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(path.string(), c10::nullopt, extra);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("cannot load model '{}': {}", path.string(), e.what_without_backtrace()));
  }
  check(!extra[kGraphFile].empty(), "'{}' is not an edgesweep model: it has no {}", path.string(), kGraphFile);
  LoadedModel loaded;
  Graph graph;
  try {
    from_json(Json::parse(extra[kGraphFile]), graph);
    loaded.metadata = extra[kMetadataFile].empty() ? Json::object() : Json::parse(extra[kMetadataFile]);
  } catch (const std::exception& e) {
    throw Error(fmt::format("'{}': broken model description: {}", path.string(), e.what()));
  }
  loaded.model = GraphModule(std::move(graph));
  torch::NoGradGuard no_grad;
  const auto copy_into = [&](const std::string& name, torch::Tensor& target) {
    check(module.hasattr(name), "'{}': model archive lacks tensor '{}'", path.string(), name);
    const torch::Tensor source = module.attr(name).toTensor();
    check(source.sizes() == target.sizes(), "'{}': tensor '{}' has shape {}, the graph needs {}", path.string(), name,
          fmt::to_string(fmt::join(source.sizes(), "x")), fmt::to_string(fmt::join(target.sizes(), "x")));
    target.copy_(source);
  };
  for (auto& p : loaded.model->named_parameters(false)) copy_into(p.key(), p.value());
  for (auto& b : loaded.model->named_buffers(false)) copy_into(b.key(), b.value());
  return loaded;
}

}  // namespace edgesweep
