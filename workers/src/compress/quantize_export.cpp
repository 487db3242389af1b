// Export of quantized models as TorchScript: generated source compiled with a resolver that knows
// torch.ops.quantized.* and the quantized dtypes, weights prepacked through the dispatcher for the chosen engine and
// registered as module attributes; saving with the IR and quantization parameters; evaluation.
#include <map>
#include <set>
#include <sstream>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/file_io.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/gradient_sync.h"
#include "edgesweep/workers/torchscript.h"

namespace edgesweep {
namespace {

namespace jit = torch::jit;

/// `torch.ops.<namespace>`: every attribute is that namespace's builtin operators.
struct OpsNamespaces : jit::SugaredValue {
  std::string kind() const override { return "torch.ops"; }
  std::shared_ptr<jit::SugaredValue> attr(const jit::SourceRange&, jit::GraphFunction&,
                                          const std::string& field) override {
    return std::make_shared<jit::BuiltinModule>(field);
  }
};

/// `torch`: aten operators, plus `torch.ops` and the quantized dtypes as constants.
struct TorchNamespace : jit::SugaredValue {
  std::string kind() const override { return "torch"; }
  std::shared_ptr<jit::SugaredValue> attr(const jit::SourceRange& loc, jit::GraphFunction& m,
                                          const std::string& field) override {
    if (field == "ops") return std::make_shared<OpsNamespaces>();
    if (field == "quint8") return std::make_shared<jit::SimpleValue>(m.graph()->insertConstant(c10::kQUInt8, loc));
    if (field == "qint8") return std::make_shared<jit::SimpleValue>(m.graph()->insertConstant(c10::kQInt8, loc));
    return jit::BuiltinModule("aten").attr(loc, m, field);
  }
};

struct QuantizedResolver : jit::Resolver {
  std::shared_ptr<jit::SugaredValue> resolveValue(const std::string& name, jit::GraphFunction&,
                                                  const jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<TorchNamespace>();
    return nullptr;
  }
  c10::TypePtr resolveType(const std::string&, const jit::SourceRange&) override { return nullptr; }
};

/// Calls a registered operator by name through the dispatcher and returns its single result.
c10::IValue call_operator(const char* name, std::vector<c10::IValue> args) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  jit::Stack stack(std::make_move_iterator(args.begin()), std::make_move_iterator(args.end()));
  op.callBoxed(&stack);
  return stack.at(0);
}

std::string literal(double v) {
  std::ostringstream out;
  out.precision(17);
  out << v;
  std::string s = out.str();
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

std::string value_name(const Node& node) { return "v_" + node.name; }

std::vector<std::string> input_names(const Graph& graph, const Node& node) {
  std::vector<std::string> names;
  for (int in : node.inputs) names.push_back(value_name(graph.nodes[in]));
  return names;
}

jit::Module new_module() {
  jit::Module module("__torch__.edgesweep.QuantizedModel");
  module.register_attribute("training", c10::BoolType::get(), false);
  return module;
}

void define_forward(jit::Module& module, const std::string& source) {
  try {
    module.define(source, std::make_shared<QuantizedResolver>());
  } catch (const c10::Error& e) {
    throw Error(fmt::format("quantize: the generated TorchScript does not compile: {}\n{}",
                            e.what_without_backtrace(), source));
  }
  module.eval();
}

std::string engine_name(at::QEngine engine) { return engine == at::QEngine::QNNPACK ? "qnnpack" : "onednn"; }

Json qparams_json(const QuantParams& p) { return Json{{"scale", p.scale}, {"zero_point", p.zero_point}}; }

}  // namespace

at::QEngine engine_from_name(const std::string& name) {
  const at::QEngine engine = name == "onednn" ? at::QEngine::ONEDNN
                             : name == "qnnpack" ? at::QEngine::QNNPACK
                                                 : at::QEngine::NoQEngine;
  std::vector<std::string> available;
  bool supported = false;
  for (const at::QEngine e : at::globalContext().supportedQEngines()) {
    if (e == at::QEngine::ONEDNN || e == at::QEngine::QNNPACK) available.push_back(engine_name(e));
    supported = supported || (e == engine && engine != at::QEngine::NoQEngine);
  }
  check_input(supported, "quantize: 'engine' is \"{}\", which this LibTorch does not provide (available: {})", name,
              fmt::to_string(fmt::join(available, ", ")));
  return engine;
}

QEngineGuard::QEngineGuard(at::QEngine engine) : previous_(at::globalContext().qEngine()) {
  at::globalContext().setQEngine(engine);
}

QEngineGuard::~QEngineGuard() { at::globalContext().setQEngine(previous_); }

torch::Tensor ScriptedModel::forward(const torch::Tensor& input) {
  if (engine == "none") return module.forward({input}).toTensor();
  QEngineGuard guard(engine_from_name(engine));
  return module.forward({input}).toTensor();
}

ScriptedModel export_static_int8(const GraphModule& folded, const QuantizationPlan& plan,
                                 const std::vector<QuantParams>& activations, const QuantizeOptions& options) {
  const Graph& graph = folded->graph();
  const size_t n = graph.nodes.size();
  QEngineGuard guard(engine_from_name(options.engine));
  torch::NoGradGuard no_grad;
  jit::Module module = new_module();
  Json values = Json::object();
  const auto params_of = [&](int node) {
    EDGESWEEP_ASSERT(plan.params_source[node] >= 0 && plan.observed[plan.params_source[node]]);
    return activations[plan.params_source[node]];
  };
  std::ostringstream src;
  src << "def forward(self, x):\n";
  std::set<int> quantized_copies, float_copies;
  // The quantized form of value `k`, quantizing a float value where it is first read.
  const auto as_quantized = [&](int k) {
    const Node& node = graph.nodes[k];
    if (plan.quantized[k]) return value_name(node);
    const std::string name = "q_" + node.name;
    if (quantized_copies.insert(k).second) {
      const QuantParams p = params_of(k);
      src << "    " << name << " = torch.quantize_per_tensor(" << value_name(node) << ", " << literal(p.scale) << ", "
          << p.zero_point << ", torch.quint8)\n";
    }
    return name;
  };
  const auto as_float = [&](int k) {
    const Node& node = graph.nodes[k];
    if (!plan.quantized[k]) return value_name(node);
    const std::string name = "f_" + node.name;
    if (float_copies.insert(k).second) src << "    " << name << " = " << value_name(node) << ".dequantize()\n";
    return name;
  };
  std::vector<bool> relu_fused(n, false);
  for (size_t j = 0; j < n; ++j) {
    if (plan.fused_into[j] >= 0 && graph.nodes[j].op == OpKind::Relu) relu_fused[plan.fused_into[j]] = true;
  }
  for (int node : plan.observed_nodes()) values[graph.nodes[node].name] = qparams_json(activations[node]);
  src << "    " << value_name(graph.nodes[0]) << " = x\n";
  for (size_t i = 1; i < n; ++i) {
    const Node& node = graph.nodes[i];
    const int index = static_cast<int>(i);
    std::string expression;
    if (node.op == OpKind::Conv || node.op == OpKind::Linear) {
      const std::string input = as_quantized(node.inputs[0]);
      const torch::Tensor weight = quantize_weight(folded->weight(index), options.per_channel);
      const c10::optional<torch::Tensor> bias =
          node.bias ? c10::optional<torch::Tensor>(folded->bias(index).detach().to(torch::kFloat32))
                    : c10::nullopt;
      c10::IValue packed;
      if (node.op == OpKind::Conv) {
        packed = call_operator("quantized::conv2d_prepack",
                               {weight, bias, std::vector<int64_t>{node.stride, node.stride},
                                std::vector<int64_t>{node.padding, node.padding},
                                std::vector<int64_t>{node.dilation, node.dilation}, node.groups});
      } else {
        packed = call_operator("quantized::linear_prepack", {weight, bias});
      }
      const std::string attribute = node.name + "_packed";
      module.register_attribute(attribute, packed.type(), packed);
      const QuantParams p = params_of(index);
      const char* op = node.op == OpKind::Conv ? (relu_fused[i] ? "conv2d_relu" : "conv2d")
                                               : (relu_fused[i] ? "linear_relu" : "linear");
      expression = fmt::format("torch.ops.quantized.{}({}, self.{}, {}, {})", op, input, attribute,
                               literal(p.scale), p.zero_point);
    } else if (node.op == OpKind::Add) {
      const QuantParams p = params_of(index);
      expression = as_quantized(node.inputs[0]);
      for (size_t k = 1; k < node.inputs.size(); ++k) {
        const bool last = k + 1 == node.inputs.size();
        expression = fmt::format("torch.ops.quantized.{}({}, {}, {}, {})", last && relu_fused[i] ? "add_relu" : "add",
                                 expression, as_quantized(node.inputs[k]), literal(p.scale), p.zero_point);
      }
    } else if (node.op == OpKind::Concat) {
      const QuantParams p = params_of(index);
      std::vector<std::string> parts;
      for (int in : node.inputs) parts.push_back(as_quantized(in));
      expression = fmt::format("torch.ops.quantized.{}([{}], 1, {}, {})", relu_fused[i] ? "cat_relu" : "cat",
                               fmt::join(parts, ", "), literal(p.scale), p.zero_point);
    } else if (plan.fused_into[i] >= 0) {
      expression = value_name(graph.nodes[plan.fused_into[i]]);  // computed by the op it is fused into
    } else if (node.op == OpKind::BatchNorm) {
      for (const char* role : {"weight", "bias", "running_mean", "running_var"}) {
        const torch::Tensor t = role[0] == 'w'   ? folded->weight(index)
                                : role[0] == 'b' ? folded->bias(index)
                                : role[8] == 'm' ? folded->running_mean(index)
                                                 : folded->running_var(index);
        module.register_buffer(GraphModuleImpl::tensor_name(node, role), t.detach().clone());
      }
      expression = float_expression(graph, node, {as_float(node.inputs[0])}, [&](const char* role) {
        return "self." + GraphModuleImpl::tensor_name(node, role);
      });
    } else if (plan.quantized[i]) {  // an op that works on quantized values as they are (relu, pools, flatten)
      expression = float_expression(graph, node, input_names(graph, node), [](const char*) { return std::string(); });
    } else {  // an fp32 op (sigmoid, hardswish, mul, slice, ...): its inputs dequantized
      std::vector<std::string> inputs;
      for (int in : node.inputs) inputs.push_back(as_float(in));
      expression = float_expression(graph, node, inputs, [](const char*) { return std::string(); });
    }
    src << "    " << value_name(node) << " = " << expression << "\n";
  }
  const std::string output = as_float(static_cast<int>(n) - 1);  // may emit the dequantize line first
  src << "    return " << output << "\n";
  define_forward(module, src.str());
  ScriptedModel result;
  result.module = module;
  result.graph = graph;
  result.precision = "int8";
  result.engine = options.engine;
  result.quantization = Json{{"mode", options.mode},
                             {"engine", options.engine},
                             {"per_channel", options.per_channel},
                             {"activation_dtype", "quint8"},
                             {"weight_dtype", "qint8 symmetric"},
                             {"values", values}};
  return result;
}

ScriptedModel export_dynamic_int8(const GraphModule& model, const QuantizeOptions& options) {
  const Graph& graph = model->graph();
  QEngineGuard guard(engine_from_name(options.engine));
  torch::NoGradGuard no_grad;
  jit::Module module = new_module();
  std::set<std::string> packed_tensors;  // linear weights and biases live in the packed params only
  for (const Node& node : graph.nodes) {
    if (node.op != OpKind::Linear) continue;
    packed_tensors.insert(GraphModuleImpl::tensor_name(node, "weight"));
    packed_tensors.insert(GraphModuleImpl::tensor_name(node, "bias"));
  }
  for (const auto& p : model->named_parameters(false)) {
    if (packed_tensors.count(p.key()) == 0) module.register_buffer(p.key(), p.value().detach().clone());
  }
  for (const auto& b : model->named_buffers(false)) module.register_buffer(b.key(), b.value().detach().clone());
  std::ostringstream src;
  src << "def forward(self, x):\n    " << value_name(graph.nodes[0]) << " = x\n";
  for (size_t i = 1; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    std::string expression;
    if (node.op == OpKind::Linear) {
      const int index = static_cast<int>(i);
      const c10::optional<torch::Tensor> bias =
          node.bias ? c10::optional<torch::Tensor>(model->bias(index).detach().clone()) : c10::nullopt;
      const c10::IValue packed = call_operator(
          "quantized::linear_prepack", {quantize_weight(model->weight(index), options.per_channel), bias});
      const std::string attribute = node.name + "_packed";
      module.register_attribute(attribute, packed.type(), packed);
      expression = fmt::format("torch.ops.quantized.linear_dynamic({}, self.{})",
                               value_name(graph.nodes[node.inputs[0]]), attribute);
    } else {
      expression = float_expression(graph, node, input_names(graph, node), [&](const char* role) {
        return "self." + GraphModuleImpl::tensor_name(node, role);
      });
    }
    src << "    " << value_name(node) << " = " << expression << "\n";
  }
  src << "    return " << value_name(graph.nodes.back()) << "\n";
  define_forward(module, src.str());
  ScriptedModel result;
  result.module = module;
  result.graph = graph;
  result.precision = "int8-dynamic";
  result.engine = options.engine;
  result.quantization = Json{{"mode", "dynamic-int8"},
                             {"engine", options.engine},
                             {"per_channel", options.per_channel},
                             {"weight_dtype", "qint8 symmetric (linear layers only)"},
                             {"activation_dtype", "float32, quantized per batch inside each linear"}};
  return result;
}

ScriptedModel export_dynamic_fp16(const GraphModule& model) {
  const Graph& graph = model->graph();
  torch::NoGradGuard no_grad;
  jit::Module module = new_module();
  for (const auto& p : model->named_parameters(false)) {
    module.register_buffer(p.key(), p.value().detach().to(torch::kFloat16));
  }
  for (const auto& b : model->named_buffers(false)) module.register_buffer(b.key(), b.value().detach().to(torch::kFloat16));
  std::ostringstream src;
  src << "def forward(self, x):\n    " << value_name(graph.nodes[0]) << " = x\n";
  for (size_t i = 1; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    src << "    " << value_name(node) << " = "
        << float_expression(graph, node, input_names(graph, node),
                            [&](const char* role) {
                              return "self." + GraphModuleImpl::tensor_name(node, role) + ".float()";
                            })
        << "\n";
  }
  src << "    return " << value_name(graph.nodes.back()) << "\n";
  define_forward(module, src.str());
  ScriptedModel result;
  result.module = module;
  result.graph = graph;
  result.precision = "fp16-weights";
  result.engine = "none";
  result.quantization = Json{{"mode", "dynamic-fp16"},
                             {"engine", "none"},
                             {"weight_dtype", "float16 storage, cast to float32 when used"}};
  return result;
}

void save_scripted_model(const ScriptedModel& model, const Json& metadata, const std::filesystem::path& path) {
  Json meta = metadata;
  meta["precision"] = model.precision;
  meta["quantized_engine"] = model.engine;
  jit::ExtraFilesMap extra;
  extra[kGraphFile] = Json(model.graph).dump();
  extra[kMetadataFile] = meta.dump();
  extra[kQuantizationFile] = model.quantization.dump();
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  std::ostringstream archive;  // in memory first, as save_torchscript does
  try {
    model.module.save(archive, extra);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("cannot save model to '{}': {}", path.string(), e.what_without_backtrace()));
  }
  write_file_atomically(path, archive.str());
}

double evaluate_scripted_accuracy(ScriptedModel& model, const Dataset& dataset, const std::vector<double>& mean,
                                  const std::vector<double>& std, int64_t batch_size) {
  check(dataset.size() > 0, "cannot evaluate on an empty dataset");
  // In a data-parallel group the leader evaluates and the others take its figure.
  return group_task::computed_by_leader([&] {
    torch::NoGradGuard no_grad;
    int64_t correct = 0;
    for (const auto& batch : make_batches(dataset.size(), batch_size, false, nullptr)) {
      const auto logits = model.forward(normalize_images(dataset.images.index_select(0, batch), mean, std));
      correct += logits.argmax(1).eq(dataset.labels.index_select(0, batch)).sum().item<int64_t>();
      task_progress::check_deadline();
    }
    return 100.0 * static_cast<double>(correct) / static_cast<double>(dataset.size());
  });
}

}  // namespace edgesweep
