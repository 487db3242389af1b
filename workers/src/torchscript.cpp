// TorchScript source generation, export and loading back.
#include "edgesweep/workers/torchscript.h"

#include <sstream>

#include <caffe2/serialize/inline_container.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"

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

std::string torchscript_source(const Graph& graph) {
  std::ostringstream src;
  src << "def forward(self, x):\n";
  src << "    " << value_name(graph.nodes[0]) << " = x\n";
  for (size_t i = 1; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    const std::string x = value_name(graph.nodes[node.inputs[0]]);
    const auto attr = [&](const char* role) { return "self." + GraphModuleImpl::tensor_name(node, role); };
    src << "    " << value_name(node) << " = ";
    switch (node.op) {
      case OpKind::Input:
        break;
      case OpKind::Conv:
        src << "torch.conv2d(" << x << ", " << attr("weight") << ", " << (node.bias ? attr("bias") : "None") << ", "
            << pair(node.stride) << ", " << pair(node.padding) << ", [1, 1], " << node.groups << ")";
        break;
      case OpKind::BatchNorm:
        src << "torch.batch_norm(" << x << ", " << attr("weight") << ", " << attr("bias") << ", "
            << attr("running_mean") << ", " << attr("running_var") << ", False, " << float_literal(node.momentum)
            << ", " << float_literal(node.eps) << ", False)";
        break;
      case OpKind::Relu:
        src << "torch.relu(" << x << ")";
        break;
      case OpKind::Relu6:
        src << "torch.hardtanh(" << x << ", 0.0, 6.0)";
        break;
      case OpKind::MaxPool:
        src << "torch.max_pool2d(" << x << ", " << pair(node.kernel) << ", " << pair(node.stride) << ", "
            << pair(node.padding) << ")";
        break;
      case OpKind::AvgPool:
        src << "torch.avg_pool2d(" << x << ", " << pair(node.kernel) << ", " << pair(node.stride) << ", "
            << pair(node.padding) << ")";
        break;
      case OpKind::AdaptiveAvgPool:
        src << "torch.adaptive_avg_pool2d(" << x << ", " << pair(node.output_size) << ")";
        break;
      case OpKind::Linear:
        src << "torch.linear(" << x << ", " << attr("weight") << ", " << (node.bias ? attr("bias") : "None") << ")";
        break;
      case OpKind::Add: {
        std::string sum = x;
        for (size_t k = 1; k < node.inputs.size(); ++k) {
          sum = (k > 1 ? "(" + sum + ")" : sum) + " + " + value_name(graph.nodes[node.inputs[k]]);
        }
        src << sum;
        break;
      }
      case OpKind::Concat: {
        src << "torch.cat([";
        for (size_t k = 0; k < node.inputs.size(); ++k) {
          src << (k ? ", " : "") << value_name(graph.nodes[node.inputs[k]]);
        }
        src << "], 1)";
        break;
      }
      case OpKind::Flatten:
        src << "torch.flatten(" << x << ", 1)";
        break;
      case OpKind::Dropout:
        src << x;  // identity at inference
        break;
    }
    src << "\n";
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
  const std::filesystem::path partial = path.string() + ".partial";
  try {
    module.save(partial.string(), extra);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("cannot save model to '{}': {}", path.string(), e.what_without_backtrace()));
  }
  std::filesystem::rename(partial, path);  // a crash never leaves a half-written archive under the final name
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
