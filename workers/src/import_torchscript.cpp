// Import of TorchScript archives into the layer-graph IR.
//
// The archive is loaded in eval mode, frozen (attributes and weights become constants) and inlined into one graph.
// That graph is then walked as an interpreter would run it, on a real input of the declared shape (batch 2): every
// node is executed with LibTorch's own operator, so shape arithmetic, `if` guards and loops that depend on the input
// size or on constants are decided exactly as the network decides them for that input. Tensors that derive from the
// network's input (activations) are followed by identity (their TensorImpl); an operator that reads one must map
// onto the IR, which it does by emitting an IR node whose attributes come from the operator's concrete arguments and
// whose weights are the constant tensors it reads. Whatever does not touch activations (weights transposed, sizes,
// lists) just runs. Nothing is recognised by model: any network made of the mapped operators imports.
#include "edgesweep/workers/import_torchscript.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/workers/compress/channel_groups.h"

namespace edgesweep {
namespace {

namespace jit = torch::jit;
using c10::IValue;

/// The weights of one emitted node, as the archive holds them.
struct NodeTensors {
  torch::Tensor weight, bias, running_mean, running_var;
};

/// What an activation tensor stands for: an IR node's output, possibly seen through the 5-D view of a channel
/// shuffle ([N, groups, C / groups, H, W], then transposed to [N, C / groups, groups, H, W]).
struct Activation {
  enum class Form { Plain, Grouped, Shuffled };
  int node = 0;
  Form form = Form::Plain;
  int64_t groups = 0;
};

const std::vector<std::string> kMapped = {
    "aten::conv2d", "aten::_convolution", "aten::batch_norm", "aten::linear", "aten::addmm",
    "aten::relu", "aten::relu_", "aten::relu6", "aten::hardtanh", "aten::hardtanh_", "aten::hardswish",
    "aten::hardswish_", "aten::hardsigmoid", "aten::hardsigmoid_", "aten::silu", "aten::silu_", "aten::sigmoid",
    "aten::sigmoid_", "aten::tanh", "aten::tanh_", "aten::gelu", "aten::leaky_relu", "aten::leaky_relu_",
    "aten::max_pool2d", "aten::avg_pool2d", "aten::adaptive_avg_pool2d", "aten::mean", "aten::flatten",
    "aten::view", "aten::reshape", "aten::transpose", "aten::contiguous", "aten::detach", "aten::clone",
    "aten::chunk", "aten::unsafe_chunk", "aten::split", "aten::unsafe_split", "aten::split_with_sizes",
    "aten::slice", "aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::cat", "aten::dropout",
    "aten::dropout_", "aten::feature_dropout", "aten::feature_dropout_", "aten::alpha_dropout",
    "aten::alpha_dropout_", "aten::feature_alpha_dropout", "aten::feature_alpha_dropout_"};

std::string shape_text(const torch::Tensor& t) { return "[" + fmt::to_string(fmt::join(t.sizes(), ", ")) + "]"; }

/// Where a graph node comes from: "file:line:col: `source`", or the node's printed form when there is no source.
std::string source_of(const jit::Node* node) {
  const jit::SourceRange range = node->sourceRange();
  std::string text;
  if (range.source()) {
    text = range.text().str();
    const size_t newline = text.find('\n');
    if (newline != std::string::npos) text = text.substr(0, newline) + " ...";
    if (text.size() > 160) text = text.substr(0, 160) + " ...";
  }
  if (const auto location = range.file_line_col()) {
    const auto& [file, line, column] = *location;
    return fmt::format("{}:{}:{}: `{}`", file, line, column + 1, text);
  }
  if (!text.empty()) return "`" + text + "`";
  std::ostringstream printed;
  printed << *node;
  std::string s = printed.str();
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return "(no source) " + s;
}

std::string schema_of(const jit::Node* node) {
  if (const c10::FunctionSchema* schema = node->maybeSchema()) {
    std::ostringstream out;
    out << *schema;
    return out.str();
  }
  return node->kind().toQualString();
}

class Walker {
 public:
  Walker(std::filesystem::path path, const Shape& input) : path_(std::move(path)), input_(input) {}

  /// Walks `graph` (self, x) on `x` and returns the IR node index of its output.
  int run(const std::shared_ptr<jit::Graph>& graph, const IValue& self, const torch::Tensor& x) {
    const auto inputs = graph->inputs();
    check_input(inputs.size() == 2,
                "'{}': forward takes {} arguments; edgesweep imports networks of one input tensor", path_.string(),
                inputs.size() - 1);
    env_[inputs[0]] = self;
    Node in;
    in.name = "input";
    in.op = OpKind::Input;
    in.shape = input_;
    nodes_.push_back(in);
    tensors_.emplace_back();
    origins_.push_back(nullptr);
    concrete_.push_back(x.sizes().vec());
    env_[inputs[1]] = x;
    activations_[x.unsafeGetTensorImpl()] = Activation{0};
    walk(graph->block());
    const auto outputs = graph->outputs();
    check_input(outputs.size() == 1, "'{}': forward returns {} values; edgesweep imports networks with one output",
                path_.string(), outputs.size());
    const IValue& out = env_.at(outputs[0]);
    if (out.isTuple() || out.isList() || out.isGenericDict()) {
      const size_t count = out.isTuple() ? out.toTupleRef().elements().size()
                           : out.isList() ? out.toListRef().size()
                                          : out.toGenericDict().size();
      throw InputError(fmt::format("'{}': forward returns several outputs ({} of {} values); edgesweep imports "
                                   "networks with one output tensor (return the class scores alone)",
                                   path_.string(), out.tagKind(), count));
    }
    check_input(out.isTensor(), "'{}': forward returns a {}, not a tensor", path_.string(), out.tagKind());
    const Activation* a = find(out);
    check_input(a != nullptr, "'{}': the output does not depend on the input", path_.string());
    check_input(a->form == Activation::Form::Plain, "'{}': the output is a 5-D channel-shuffle view",
                path_.string());
    return a->node;
  }

  std::vector<Node> nodes_;
  std::vector<NodeTensors> tensors_;
  std::vector<const jit::Node*> origins_;
  std::vector<std::vector<int64_t>> concrete_;  ///< each node's output sizes on the walked input (batch included)

 private:
  void walk(jit::Block* block) {
    for (jit::Node* node : block->nodes()) step(node);
  }

  std::vector<IValue> values_of(at::ArrayRef<jit::Value*> values) {
    std::vector<IValue> result;
    for (jit::Value* v : values) result.push_back(env_.at(v));
    return result;
  }

  void bind(at::ArrayRef<jit::Value*> values, const std::vector<IValue>& result) {
    EDGESWEEP_ASSERT(values.size() == result.size());
    for (size_t i = 0; i < values.size(); ++i) env_[values[i]] = result[i];
  }

  void step(jit::Node* node) {
    const jit::NodeKind kind = node->kind();
    if (kind == c10::prim::Constant) {
      const auto value = jit::toIValue(node->output());
      EDGESWEEP_ASSERT(value.has_value());
      env_[node->output()] = *value;
      return;
    }
    if (kind == c10::prim::If) {
      const bool condition = env_.at(node->input(0)).toBool();
      jit::Block* branch = node->blocks()[condition ? 0 : 1];
      walk(branch);
      bind(node->outputs(), values_of(branch->outputs()));
      return;
    }
    if (kind == c10::prim::Loop) return loop(node);
    if (kind == c10::prim::GetAttr) {
      env_[node->output()] = env_.at(node->input(0)).toObject()->getAttr(node->s(c10::attr::name));
      return;
    }
    if (kind == c10::prim::Uninitialized) {
      env_[node->output()] = IValue();
      return;
    }
    if (kind == c10::prim::RaiseException) {
      const std::vector<IValue> args = values_of(node->inputs());
      throw InputError(fmt::format("'{}': the network raises an exception for an input of {} at {}: {}",
                                   path_.string(), input_.to_string(), source_of(node),
                                   args.empty() ? std::string() : args[0].isString() ? args[0].toStringRef()
                                                                                     : std::string()));
    }
    if (kind == c10::prim::CallFunction || kind == c10::prim::CallMethod) {
      unsupported(node, " (a call left after inlining)");
    }
    const std::vector<IValue> args = values_of(node->inputs());
    bool reads_activation = false;
    for (const IValue& a : args) reads_activation = reads_activation || holds_activation(a);
    std::vector<IValue> outputs = execute(node, args, reads_activation);
    if (!reads_activation) {
      bind(node->outputs(), outputs);
      return;
    }
    const std::string name = kind.toQualString();
    if (std::find(kMapped.begin(), kMapped.end(), name) != kMapped.end()) {
      // A new tensor object for an output that is one of the inputs (dropout in eval returns its input), so that
      // it can stand for a node of its own; an in-place op keeps its tensor, which from now on means its result.
      const bool in_place = name.back() == '_';
      for (IValue& out : outputs) {
        if (!in_place && out.isTensor() && find(out) != nullptr) out = out.toTensor().alias();
      }
      map(node, name, args, outputs);
      bind(node->outputs(), outputs);
      return;
    }
    // Not mapped: allowed only when it makes no new tensor and changes none (sizes, lists, tuples, casts; a list
    // of activations may grow, as DenseNet's features do with append).
    if (name.back() == '_') unsupported(node, "");
    if (const c10::FunctionSchema* schema = node->maybeSchema()) {
      for (const c10::Argument& argument : schema->arguments()) {
        const bool writes = argument.alias_info() != nullptr && argument.alias_info()->isWrite();
        if (writes && argument.type()->kind() != c10::TypeKind::ListType) unsupported(node, "");
      }
    }
    for (const IValue& out : outputs) {
      if (makes_new_tensor(out)) unsupported(node, "");
    }
    bind(node->outputs(), outputs);
  }

  void loop(jit::Node* node) {
    const std::vector<IValue> args = values_of(node->inputs());
    const int64_t max_trips = args[0].toInt();
    bool condition = args[1].toBool();
    std::vector<IValue> carried(args.begin() + 2, args.end());
    jit::Block* body = node->blocks()[0];
    for (int64_t trip = 0; condition && trip < max_trips; ++trip) {
      std::vector<IValue> block_inputs{IValue(trip)};
      block_inputs.insert(block_inputs.end(), carried.begin(), carried.end());
      bind(body->inputs(), block_inputs);
      walk(body);
      const std::vector<IValue> results = values_of(body->outputs());
      condition = results[0].toBool();
      carried.assign(results.begin() + 1, results.end());
    }
    bind(node->outputs(), carried);
  }

  std::vector<IValue> execute(jit::Node* node, const std::vector<IValue>& args, bool reads_activation) {
    jit::Stack stack(args.begin(), args.end());
    try {
      run_operation(node, stack);
    } catch (const c10::Error& e) {
      std::string what = e.what_without_backtrace();
      if (what.size() > 600) what = what.substr(0, 600) + " ...";
      throw InputError(fmt::format(
          "'{}': the network does not run on an input of {} (batch of 2){}: {} at {} failed: {}", path_.string(),
          input_.to_string(), reads_activation ? "" : " while computing a constant", node->kind().toQualString(),
          source_of(node), what));
    }
    const size_t n = node->outputs().size();
    EDGESWEEP_ASSERT(stack.size() >= n);
    return std::vector<IValue>(stack.end() - static_cast<std::ptrdiff_t>(n), stack.end());
  }

  /// Runs one node on the stack: the container primitives (which LibTorch's interpreter runs as instructions, not
  /// as registered operators) here, everything else through its registered operation.
  static void run_operation(const jit::Node* node, jit::Stack& stack) {
    const jit::NodeKind kind = node->kind();
    const size_t inputs = node->inputs().size();
    const auto take = [&](size_t n) {  // the last n values, in order
      std::vector<IValue> values(std::make_move_iterator(stack.end() - static_cast<std::ptrdiff_t>(n)),
                                 std::make_move_iterator(stack.end()));
      stack.resize(stack.size() - n);
      return values;
    };
    if (kind == c10::prim::ListConstruct) {
      c10::impl::GenericList list(node->output()->type()->expectRef<c10::ListType>().getElementType());
      for (IValue& v : take(inputs)) list.push_back(std::move(v));
      jit::push(stack, IValue(std::move(list)));
    } else if (kind == c10::prim::ListUnpack) {
      const std::vector<IValue> list = jit::pop(stack).toListRef().vec();
      TORCH_CHECK(list.size() == node->outputs().size(), "a list of ", list.size(), " values unpacked into ",
                  node->outputs().size());
      for (const IValue& v : list) jit::push(stack, v);
    } else if (kind == c10::prim::TupleConstruct) {
      const auto tuple = node->output()->type()->expect<c10::TupleType>();
      std::vector<IValue> elements = take(inputs);
      jit::push(stack, tuple->name() ? c10::ivalue::Tuple::createNamed(std::move(elements), tuple)
                                     : c10::ivalue::Tuple::create(std::move(elements)));
    } else if (kind == c10::prim::TupleUnpack) {
      const std::vector<IValue> elements = jit::pop(stack).toTupleRef().elements().vec();
      for (const IValue& v : elements) jit::push(stack, v);
    } else if (kind == c10::prim::TupleIndex) {
      const int64_t index = jit::pop(stack).toInt();
      const auto tuple = jit::pop(stack).toTuple();
      const auto& elements = tuple->elements();
      const int64_t size = static_cast<int64_t>(elements.size());
      const int64_t at = index < 0 ? index + size : index;
      TORCH_CHECK(at >= 0 && at < size, "tuple index ", index, " out of range for a tuple of ", size);
      jit::push(stack, elements[at]);
    } else if (kind == c10::prim::DictConstruct) {
      const auto& type = node->output()->type()->expectRef<c10::DictType>();
      c10::impl::GenericDict dict(type.getKeyType(), type.getValueType());
      const std::vector<IValue> pairs = take(inputs);
      for (size_t i = 0; i + 1 < pairs.size(); i += 2) dict.insert_or_assign(pairs[i], pairs[i + 1]);
      jit::push(stack, IValue(std::move(dict)));
    } else if (kind == c10::prim::unchecked_cast) {
      // the value as it is, with a narrower static type
    } else {
      node->getOperation()(stack);
    }
  }

  const Activation* find(const IValue& value) const {
    if (!value.isTensor()) return nullptr;
    const auto it = activations_.find(value.toTensor().unsafeGetTensorImpl());
    return it == activations_.end() ? nullptr : &it->second;
  }

  /// Whether any tensor in `value` (itself, or inside its lists and tuples) satisfies `test`.
  template <typename Test>
  static bool any_tensor(const IValue& value, const Test& test) {
    if (value.isTensor()) return test(value);
    if (value.isList()) {
      for (const IValue& v : value.toListRef()) {
        if (any_tensor(v, test)) return true;
      }
    }
    if (value.isTuple()) {
      for (const IValue& v : value.toTupleRef().elements()) {
        if (any_tensor(v, test)) return true;
      }
    }
    return false;
  }

  bool holds_activation(const IValue& value) const {
    return any_tensor(value, [this](const IValue& t) { return find(t) != nullptr; });
  }

  /// Whether a value holds a tensor that is not an activation already (a new result derived from one).
  bool makes_new_tensor(const IValue& value) const {
    return any_tensor(value, [this](const IValue& t) { return find(t) == nullptr; });
  }

  [[noreturn]] void unsupported(const jit::Node* node, const std::string& why) const {
    throw InputError(fmt::format(
        "'{}': operator {}{} at {} is not supported on the network's activations (schema: {}); edgesweep imports "
        "these operators: {}",
        path_.string(), node->kind().toQualString(), why, source_of(node), schema_of(node),
        fmt::join(importable_operators(), ", ")));
  }

  [[noreturn]] void refuse(const jit::Node* node, const std::string& what) const {
    throw InputError(fmt::format("'{}': {} at {}: {} (schema: {})", path_.string(), node->kind().toQualString(),
                                 source_of(node), what, schema_of(node)));
  }

  /// The activation an argument holds; refuses a constant or a shuffle view where a plain activation is needed.
  Activation activation(const jit::Node* node, const IValue& value, const char* what = "input") const {
    const Activation* a = find(value);
    if (a == nullptr) refuse(node, fmt::format("its {} is a constant, not computed from the network's input", what));
    if (a->form != Activation::Form::Plain) refuse(node, "reads a 5-D channel-shuffle view");
    return *a;
  }

  /// A weight argument: a float32 tensor that does not derive from the input (or undefined when None).
  torch::Tensor weight(const jit::Node* node, const IValue& value, const char* what) const {
    if (value.isNone()) return torch::Tensor();
    if (!value.isTensor()) refuse(node, fmt::format("its {} is not a tensor", what));
    if (find(value) != nullptr) refuse(node, fmt::format("its {} is computed from the input, not a weight", what));
    const torch::Tensor t = value.toTensor();
    if (t.scalar_type() != torch::kFloat32) {
      refuse(node, fmt::format("its {} is {}; edgesweep imports float32 networks", what, c10::toString(t.scalar_type())));
    }
    return t.detach().clone();
  }

  /// One size from an int[] argument of one or two equal entries (square kernels, strides, paddings).
  int64_t square(const jit::Node* node, const IValue& value, const char* what, int64_t if_empty = -1) const {
    const std::vector<int64_t> v = value.toIntVector();
    if (v.empty() && if_empty >= 0) return if_empty;
    if (v.size() == 1) return v[0];
    if (v.size() == 2 && v[0] == v[1]) return v[0];
    refuse(node, fmt::format("{} [{}] is not square; the IR holds one size for both axes", what, fmt::join(v, ", ")));
  }

  static double number(const IValue& value) { return value.isInt() ? static_cast<double>(value.toInt()) : value.toDouble(); }

  /// Normalises a dimension index of a tensor of `rank` dimensions.
  static int64_t dimension(int64_t dim, int64_t rank) { return dim < 0 ? dim + rank : dim; }

  int emit(const jit::Node* origin, Node node, const std::vector<int>& inputs, const IValue& output,
           NodeTensors tensors = {}) {
    const int index = static_cast<int>(nodes_.size());
    node.name = fmt::format("{}{}", op_name(node.op), ++counts_[node.op]);
    node.inputs = inputs;
    nodes_.push_back(std::move(node));
    tensors_.push_back(std::move(tensors));
    origins_.push_back(origin);
    concrete_.push_back(output.toTensor().sizes().vec());
    activations_[output.toTensor().unsafeGetTensorImpl()] = Activation{index};
    return index;
  }

  void same(const IValue& output, const Activation& a) {
    activations_[output.toTensor().unsafeGetTensorImpl()] = a;
  }

  Node make(OpKind op) const {
    Node n;
    n.op = op;
    return n;
  }

  void map(const jit::Node* node, const std::string& name, const std::vector<IValue>& args,
           std::vector<IValue>& outputs) {
    const IValue& out = outputs.empty() ? IValue() : outputs[0];
    const auto base = [&](const std::string& n) { return n.back() == '_' ? n.substr(0, n.size() - 1) : n; };
    const std::string op = base(name);
    const auto unary = [&](OpKind kind) {
      emit(node, make(kind), {activation(node, args[0]).node}, out);
    };
    if (op == "aten::conv2d" || op == "aten::_convolution") {
      const Activation x = activation(node, args[0]);
      Node n = make(OpKind::Conv);
      NodeTensors t;
      t.weight = weight(node, args[1], "weight");
      t.bias = weight(node, args[2], "bias");
      if (!t.weight.defined() || t.weight.dim() != 4) refuse(node, "only 2-D convolutions are imported");
      if (op == "aten::_convolution" && args[6].toBool()) refuse(node, "transposed convolutions are not imported");
      n.out = t.weight.size(0);
      n.kernel = t.weight.size(2);
      if (t.weight.size(3) != n.kernel) refuse(node, fmt::format("kernel {} is not square", shape_text(t.weight)));
      n.stride = square(node, args[3], "stride");
      n.dilation = square(node, args[5], "dilation");
      n.groups = args[op == "aten::conv2d" ? 6 : 8].toInt();
      if (args[4].isString()) {  // padding="valid" or "same"
        const std::string mode = args[4].toStringRef();
        if (mode == "valid") {
          n.padding = 0;
        } else if (n.stride == 1 && (n.dilation * (n.kernel - 1)) % 2 == 0) {
          n.padding = n.dilation * (n.kernel - 1) / 2;
        } else {
          refuse(node, "padding='same' needs stride 1 and an even total padding");
        }
      } else {
        n.padding = square(node, args[4], "padding");
      }
      n.bias = t.bias.defined();
      emit(node, n, {x.node}, out, std::move(t));
    } else if (op == "aten::batch_norm") {
      const Activation x = activation(node, args[0]);
      Node n = make(OpKind::BatchNorm);
      NodeTensors t;
      t.weight = weight(node, args[1], "weight");
      t.bias = weight(node, args[2], "bias");
      t.running_mean = weight(node, args[3], "running_mean");
      t.running_var = weight(node, args[4], "running_var");
      if (!t.running_mean.defined() || !t.running_var.defined()) {
        refuse(node, "batch norm without running statistics (track_running_stats=False) is not imported");
      }
      n.momentum = args[6].isNone() ? 0.1 : number(args[6]);
      n.eps = number(args[7]);
      emit(node, n, {x.node}, out, std::move(t));
    } else if (op == "aten::linear" || op == "aten::addmm") {
      const bool addmm = op == "aten::addmm";
      const Activation x = activation(node, args[addmm ? 1 : 0]);
      if (concrete_[x.node].size() != 2) {
        refuse(node, fmt::format("a linear layer on a {}-D input is not imported (flatten first)",
                                 concrete_[x.node].size()));
      }
      NodeTensors t;
      if (addmm) {
        if (number(args[3]) != 1.0 || number(args[4]) != 1.0) refuse(node, "addmm with beta or alpha other than 1");
        t.weight = weight(node, args[2], "weight").t().contiguous();
        t.bias = weight(node, args[0], "bias");
        if (t.bias.defined() && t.bias.dim() != 1) refuse(node, "addmm whose bias is not a vector");
      } else {
        t.weight = weight(node, args[1], "weight");
        t.bias = weight(node, args[2], "bias");
      }
      Node n = make(OpKind::Linear);
      n.out = t.weight.size(0);
      n.bias = t.bias.defined();
      emit(node, n, {x.node}, out, std::move(t));
    } else if (op == "aten::relu") {
      unary(OpKind::Relu);
    } else if (op == "aten::relu6") {
      unary(OpKind::Relu6);
    } else if (op == "aten::hardtanh") {
      if (number(args[1]) != 0.0 || number(args[2]) != 6.0) {
        refuse(node, fmt::format("hardtanh({}, {}) is not imported; only hardtanh(0, 6), which is ReLU6",
                                 number(args[1]), number(args[2])));
      }
      unary(OpKind::Relu6);
    } else if (op == "aten::hardswish") {
      unary(OpKind::Hardswish);
    } else if (op == "aten::hardsigmoid") {
      unary(OpKind::Hardsigmoid);
    } else if (op == "aten::silu") {
      unary(OpKind::Silu);
    } else if (op == "aten::sigmoid") {
      unary(OpKind::Sigmoid);
    } else if (op == "aten::tanh") {
      unary(OpKind::Tanh);
    } else if (op == "aten::gelu") {
      if (args.size() > 1 && args[1].isString() && args[1].toStringRef() != "none") {
        refuse(node, fmt::format("gelu(approximate='{}') is not imported; only the exact form",
                                 args[1].toStringRef()));
      }
      unary(OpKind::Gelu);
    } else if (op == "aten::leaky_relu") {
      Node n = make(OpKind::LeakyRelu);
      n.alpha = number(args[1]);
      emit(node, n, {activation(node, args[0]).node}, out);
    } else if (op == "aten::max_pool2d" || op == "aten::avg_pool2d") {
      const bool max = op == "aten::max_pool2d";
      Node n = make(max ? OpKind::MaxPool : OpKind::AvgPool);
      n.kernel = square(node, args[1], "kernel");
      n.stride = square(node, args[2], "stride", n.kernel);
      n.padding = square(node, args[3], "padding");
      if (max) {
        if (square(node, args[4], "dilation") != 1) refuse(node, "dilated max pooling is not imported");
        n.ceil_mode = args[5].toBool();
      } else {
        n.ceil_mode = args[4].toBool();
        n.count_include_pad = args[5].toBool();
        if (!args[6].isNone()) refuse(node, "avg_pool2d with divisor_override is not imported");
      }
      emit(node, n, {activation(node, args[0]).node}, out);
    } else if (op == "aten::adaptive_avg_pool2d") {
      Node n = make(OpKind::AdaptiveAvgPool);
      n.output_size = square(node, args[1], "output_size");
      emit(node, n, {activation(node, args[0]).node}, out);
    } else if (op == "aten::mean") {
      const Activation x = activation(node, args[0]);
      const int64_t rank = static_cast<int64_t>(concrete_[x.node].size());
      std::set<int64_t> dims;
      if (!args[1].isNone()) {
        for (int64_t d : args[1].toIntVector()) dims.insert(dimension(d, rank));
      }
      if (rank != 4 || dims != std::set<int64_t>{2, 3} || (args.size() > 3 && !args[3].isNone())) {
        refuse(node, "only a mean over height and width of a 4-D activation is imported");
      }
      Node pool = make(OpKind::AdaptiveAvgPool);
      pool.output_size = 1;
      if (args[2].toBool()) {
        emit(node, pool, {x.node}, out);
      } else {
        const torch::Tensor pooled = out.toTensor().view({out.toTensor().size(0), -1, 1, 1});
        const int p = emit(node, pool, {x.node}, pooled);
        emit(node, make(OpKind::Flatten), {p}, out);
      }
    } else if (op == "aten::flatten") {
      const Activation x = activation(node, args[0]);
      const int64_t rank = static_cast<int64_t>(concrete_[x.node].size());
      const int64_t start = dimension(args[1].toInt(), rank);
      const int64_t end = dimension(args[2].toInt(), rank);
      if (start != 1 || end != rank - 1) refuse(node, "only a flatten from dimension 1 to the last is imported");
      if (rank == 2) return same(out, x);
      emit(node, make(OpKind::Flatten), {x.node}, out);
    } else if (op == "aten::view" || op == "aten::reshape") {
      reshape(node, args, out);
    } else if (op == "aten::transpose") {
      const Activation* x = find(args[0]);
      const int64_t a = args[1].toInt(), b = args[2].toInt();  // (x is read before anything is emitted)
      if (x == nullptr || x->form != Activation::Form::Grouped || std::min(a, b) != 1 || std::max(a, b) != 2) {
        refuse(node, "only the transpose of a channel shuffle ([N, groups, C / groups, H, W], dimensions 1 and 2) "
                     "is imported");
      }
      same(out, Activation{x->node, Activation::Form::Shuffled, x->groups});
    } else if (op == "aten::contiguous" || op == "aten::detach" || op == "aten::clone") {
      const Activation x = *find(args[0]);
      same(out, x);
    } else if (op == "aten::chunk" || op == "aten::unsafe_chunk" || op == "aten::split" ||
               op == "aten::unsafe_split" || op == "aten::split_with_sizes") {
      const Activation x = activation(node, args[0]);
      const int64_t rank = static_cast<int64_t>(concrete_[x.node].size());
      if (rank != 4 || dimension(args[2].toInt(), rank) != 1) refuse(node, "only splits along the channels are imported");
      int64_t offset = 0;
      for (const IValue& piece : out.toListRef()) {
        Node n = make(OpKind::Slice);
        n.offset = offset;
        n.out = piece.toTensor().size(1);
        offset += n.out;
        emit(node, n, {x.node}, piece);
      }
    } else if (op == "aten::slice") {
      const Activation x = activation(node, args[0]);
      const std::vector<int64_t>& sizes = concrete_[x.node];
      const int64_t rank = static_cast<int64_t>(sizes.size());
      const int64_t dim = dimension(args[1].toInt(), rank);
      const torch::Tensor& result = out.toTensor();
      if (args[4].toInt() != 1) refuse(node, "a strided slice is not imported");
      if (result.sizes().vec() == sizes) return same(out, x);  // x[:] and the like
      if (rank != 4 || dim != 1) refuse(node, "only slices along the channels are imported");
      int64_t start = args[2].isNone() ? 0 : args[2].toInt();
      if (start < 0) start += sizes[1];
      Node n = make(OpKind::Slice);
      n.offset = std::clamp<int64_t>(start, 0, sizes[1]);
      n.out = result.size(1);
      emit(node, n, {x.node}, out);
    } else if ((op == "aten::add" || op == "aten::mul") && !args[0].isTensor()) {
      // list + list, list * n: a container of the same activations, nothing to emit
    } else if (op == "aten::add" || op == "aten::mul") {
      const bool add = op == "aten::add";
      if (find(args[1]) == nullptr) {
        refuse(node, fmt::format("{} an activation and a constant; only {} of two activations are imported",
                                 add ? "adds" : "multiplies", add ? "sums" : "products"));
      }
      if (add && number(args[2]) != 1.0) refuse(node, "add with alpha other than 1");
      const Activation a = activation(node, args[0]);
      const Activation b = activation(node, args[1], "second input");
      emit(node, make(add ? OpKind::Add : OpKind::Mul), {a.node, b.node}, out);
    } else if (op == "aten::cat") {
      const c10::ArrayRef<IValue> parts = args[0].toListRef();
      std::vector<int> inputs;
      for (const IValue& part : parts) inputs.push_back(activation(node, part, "part").node);
      const int64_t rank = static_cast<int64_t>(concrete_[inputs[0]].size());
      if (rank != 4 || dimension(args[1].toInt(), rank) != 1) {
        refuse(node, "only concatenation of 4-D activations along the channels is imported");
      }
      if (inputs.size() == 1) return same(out, Activation{inputs[0]});
      emit(node, make(OpKind::Concat), inputs, out);
    } else if (op.find("dropout") != std::string::npos) {
      Node n = make(OpKind::Dropout);
      n.p = number(args[1]);
      emit(node, n, {activation(node, args[0]).node}, out);
    } else {
      unsupported(node, "");
    }
  }

  void reshape(const jit::Node* node, const std::vector<IValue>& args, const IValue& out) {
    const Activation* found = find(args[0]);
    EDGESWEEP_ASSERT(found != nullptr);
    const Activation x = *found;  // a copy: emit() may rehash the map
    const std::vector<int64_t> from = concrete_[x.node];
    const std::vector<int64_t> to = out.toTensor().sizes().vec();
    if (x.form == Activation::Form::Shuffled) {
      // [N, C / g, g, H, W] back to [N, C, H, W]: a channel shuffle.
      if (to.size() != 4 || to[1] != from[1] || to[2] != from[2] || to[3] != from[3]) {
        refuse(node, "a channel-shuffle view must be reshaped back to its [N, C, H, W]");
      }
      Node n = make(OpKind::ChannelShuffle);
      n.groups = x.groups;
      emit(node, n, {x.node}, out);
      return;
    }
    if (x.form != Activation::Form::Plain) refuse(node, "a grouped channel view must be transposed first");
    if (to == from) return same(out, x);
    if (from.size() == 4 && to.size() == 2 && to[0] == from[0]) {
      emit(node, make(OpKind::Flatten), {x.node}, out);
      return;
    }
    if (from.size() == 2 && to.size() == 4 && to[0] == from[0] && to[1] == from[1] && to[2] == 1 && to[3] == 1) {
      emit(node, make(OpKind::Unflatten), {x.node}, out);  // a gate computed by linear layers, back on channels
      return;
    }
    if (from.size() == 4 && to.size() == 5 && to[0] == from[0] && to[1] * to[2] == from[1] && to[3] == from[2] &&
        to[4] == from[3]) {
      same(out, Activation{x.node, Activation::Form::Grouped, to[1]});
      return;
    }
    refuse(node, fmt::format("a reshape from [{}] to [{}] is not imported (only to [N, features], from [N, C] to "
                             "[N, C, 1, 1], or a channel shuffle's 5-D view)",
                             fmt::join(from, ", "), fmt::join(to, ", ")));
  }

  std::filesystem::path path_;
  Shape input_;
  std::unordered_map<const jit::Value*, IValue> env_;
  std::unordered_map<const c10::TensorImpl*, Activation> activations_;
  std::map<OpKind, int> counts_;
};

/// The concrete sizes of one sample as the IR states them.
std::vector<int64_t> sample_sizes(const Shape& s) {
  if (s.flat) return {s.channels};
  return {s.channels, s.height, s.width};
}

}  // namespace

double ImportCheck::relative_difference() const {
  if (output_scale > 0) return max_abs_difference / output_scale;
  return max_abs_difference > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

const std::vector<std::string>& importable_operators() { return kMapped; }

ImportedModel import_torchscript(const std::filesystem::path& path, const Shape& input, int64_t num_classes) {
  check_input(std::filesystem::is_regular_file(path), "TorchScript model '{}' does not exist", path.string());
  check_input(input.channels > 0 && input.height > 0 && input.width > 0 && !input.flat,
              "'{}': input_shape {} is not a positive [C, H, W]", path.string(), input.to_string());
  jit::Module original;
  try {
    original = jit::load(path.string(), torch::kCPU);
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    if (what.size() > 300) what = what.substr(0, 300) + " ...";
    throw InputError(fmt::format("'{}' is not a TorchScript archive that LibTorch {} loads: {}", path.string(),
                                 TORCH_VERSION, what));
  }
  check_input(original.find_method("forward").has_value(), "'{}' has no forward method", path.string());
  original.eval();
  torch::NoGradGuard no_grad;
  jit::Module frozen;
  try {
    frozen = jit::freeze_module(original);
  } catch (const c10::Error& e) {
    throw InputError(fmt::format("'{}' cannot be frozen for import: {}", path.string(), e.what_without_backtrace()));
  }
  std::shared_ptr<jit::Graph> graph = frozen.get_method("forward").graph()->copy();
  jit::Inline(*graph);

  torch::Generator generator = at::detail::createCPUGenerator(20261207);
  const torch::Tensor walk_input = torch::randn({2, input.channels, input.height, input.width}, generator);
  Walker walker(path, input);
  const int output = walker.run(graph, frozen._ivalue(), walk_input);

  // Keep what the output depends on, renumbered in order (values computed and never used are dropped).
  const size_t n = walker.nodes_.size();
  std::vector<bool> needed(n, false);
  needed[output] = true;
  needed[0] = true;
  for (int i = output; i > 0; --i) {
    if (!needed[i]) continue;
    for (int in : walker.nodes_[i].inputs) needed[in] = true;
  }
  Graph result;
  result.num_classes = num_classes;
  std::vector<int> renumbered(n, -1);
  std::vector<int> kept;
  for (size_t i = 0; i < n; ++i) {
    if (!needed[i]) continue;
    Node node = walker.nodes_[i];
    for (int& in : node.inputs) in = renumbered[in];
    renumbered[i] = static_cast<int>(result.nodes.size());
    kept.push_back(static_cast<int>(i));
    result.nodes.push_back(std::move(node));
  }
  try {
    infer_shapes(result);
  } catch (const InputError& e) {
    throw InputError(fmt::format("'{}': the imported network does not fit the IR: {}", path.string(), e.what()));
  }
  for (size_t k = 0; k < kept.size(); ++k) {
    std::vector<int64_t> expected = walker.concrete_[kept[k]];
    expected.erase(expected.begin());
    const Node& node = result.nodes[k];
    check(expected == sample_sizes(node.shape), "'{}': imported layer '{}' ({}) gives {} per sample, the archive [{}] "
          "at {}", path.string(), node.name, op_name(node.op), node.shape.to_string(), fmt::join(expected, ", "),
          walker.origins_[kept[k]] ? source_of(walker.origins_[kept[k]]) : std::string("the input"));
  }

  ImportedModel imported;
  imported.model = GraphModule(result);
  for (size_t k = 0; k < kept.size(); ++k) {
    const NodeTensors& t = walker.tensors_[kept[k]];
    const int index = static_cast<int>(k);
    GraphModule& m = imported.model;
    const auto copy = [&](const torch::Tensor& target, const torch::Tensor& source, const char* role) {
      if (!source.defined()) return;
      check(target.defined() && target.sizes() == source.sizes(), "'{}': {} of '{}' has shape {}, the IR wants {}",
            path.string(), role, result.nodes[k].name, shape_text(source),
            target.defined() ? shape_text(target) : std::string("none"));
      torch::Tensor(target).copy_(source);
    };
    copy(m->weight(index), t.weight, "weight");
    copy(m->bias(index), t.bias, "bias");
    copy(m->running_mean(index), t.running_mean, "running_mean");
    copy(m->running_var(index), t.running_var, "running_var");
  }
  imported.model->eval();

  // The check: the imported network against the archive as loaded, on seeded random batches.
  ImportCheck& check_result = imported.check;
  for (int round = 0; round < 3; ++round) {
    const torch::Tensor x = torch::randn({2, input.channels, input.height, input.width}, generator);
    const torch::Tensor expected = original.forward({x}).toTensor();
    const torch::Tensor got = imported.model->forward(x);
    check(expected.sizes() == got.sizes(), "'{}': the imported network gives {}, the archive {}", path.string(),
          shape_text(got), shape_text(expected));
    check_result.max_abs_difference =
        std::max(check_result.max_abs_difference, (got - expected).abs().max().item<double>());
    check_result.output_scale = std::max(check_result.output_scale, expected.abs().max().item<double>());
    ++check_result.inputs;
  }
  check_input(check_result.relative_difference() <= kImportTolerance,
              "'{}': the imported network differs from the archive by {:.3g} (output scale {:.3g}, relative {:.3g}, "
              "tolerance {:.0e}); it is refused rather than approximated",
              path.string(), check_result.max_abs_difference, check_result.output_scale,
              check_result.relative_difference(), kImportTolerance);
  return imported;
}

LoadedModel load_or_import(const std::filesystem::path& path, const Shape& input) {
  bool has_graph = false;
  try {
    caffe2::serialize::PyTorchStreamReader reader(path.string());
    has_graph = reader.hasRecord(std::string("extra/") + kGraphFile);
  } catch (const c10::Error& e) {
    throw InputError(fmt::format("'{}' is not a TorchScript archive ({})", path.string(), e.what_without_backtrace()));
  }
  if (has_graph) return load_graph_module(path);
  LoadedModel loaded;
  loaded.model = import_torchscript(path, input).model;
  loaded.metadata = Json::object();
  return loaded;
}

std::string describe_import(const std::filesystem::path& path, const ImportedModel& imported) {
  const Graph& graph = imported.model->graph();
  const ImportCheck& c = imported.check;
  std::string text = fmt::format(
      "  imported {}: {} layers, {} parameters, {} MACs, {} outputs; max |difference| from the archive {:.3g} over "
      "{} random batches (output scale {:.3g}, relative {:.3g})\n",
      path.string(), graph.nodes.size(), count_params(graph), count_macs(graph), graph.output().shape.channels,
      c.max_abs_difference, c.inputs, c.output_scale, c.relative_difference());
  const ChannelAnalysis analysis = analyze_channel_groups(graph);
  std::vector<std::string> prunable, whole;
  for (const ChannelGroup& group : analysis.groups) {
    const std::string name = graph.nodes[group.producers.front()].name;
    if (group.prunable) {
      prunable.push_back(fmt::format("{} ({}{})", name, group.size(),
                                     group.producers.size() > 1 ? fmt::format(", {} producers", group.producers.size())
                                                                : std::string()));
    } else {
      whole.push_back(fmt::format("    {} ({} channels): {}", name, group.size(), group.fixed_reason));
    }
  }
  text += fmt::format("  prunable channel groups ({}): {}\n", prunable.size(),
                      prunable.empty() ? std::string("none") : fmt::to_string(fmt::join(prunable, ", ")));
  text += fmt::format("  channel groups left whole ({}):\n", whole.size());
  for (const std::string& line : whole) text += line + "\n";
  return text;
}

GraphModule import_model(const ModelConfig& config, const Shape& input, int64_t classes) {
  const std::string where = fmt::format("[model] 'path' = \"{}\"", config.path);
  check_input(std::filesystem::is_regular_file(config.path), "{} is not an existing file", where);
  if (!config.path_sha256.empty()) {
    const std::string sha = sha256_file(config.path);
    check_input(sha == config.path_sha256,
                "{} has sha256 {} now, but {} when the experiment was read: the file changed; run the experiment "
                "again so that its baseline hash names this file",
                where, sha, config.path_sha256);
  }
  const Shape declared = config.input_shape.size() == 3
                             ? Shape{config.input_shape[0], config.input_shape[1], config.input_shape[2], false}
                             : Shape{};
  check_input(declared == input,
              "[model] input_shape is {}, but the data gives images of {}; hint: set [data] resize, channels, mean "
              "and std so the data matches the network, or input_shape to what the network was made for",
              declared.to_string(), input.to_string());
  ImportedModel imported = import_torchscript(config.path, input);
  spdlog::info("imported '{}': {} layers, {} parameters, {} MACs, max |difference| from the archive {:.3g} "
               "(output scale {:.3g})",
               config.path, imported.model->graph().nodes.size(), count_params(imported.model->graph()),
               count_macs(imported.model->graph()), imported.check.max_abs_difference, imported.check.output_scale);
  const Graph& graph = imported.model->graph();
  if (graph.output().shape.channels == classes) return imported.model;

  // Another number of classes: a fresh classifier head, every other tensor as imported.
  const Node& last = graph.output();
  check_input(last.op == OpKind::Linear,
              "{}: the network gives {} outputs and the data has {} classes, and its last layer is a {}, not a "
              "linear layer that could be replaced",
              where, last.shape.channels, classes, op_name(last.op));
  Graph resized = graph;
  resized.nodes.back().out = classes;
  resized.num_classes = classes;
  infer_shapes(resized);
  GraphModule model(resized);
  torch::NoGradGuard no_grad;
  const auto parameters = imported.model->named_parameters(false);
  for (auto& p : model->named_parameters(false)) {
    if (p.key().rfind(last.name + "_", 0) != 0) p.value().copy_(parameters[p.key()]);
  }
  const auto buffers = imported.model->named_buffers(false);
  for (auto& b : model->named_buffers(false)) b.value().copy_(buffers[b.key()]);
  spdlog::info("'{}': its {} outputs replaced by a fresh linear head for {} classes", config.path,
               last.shape.channels, classes);
  model->eval();
  return model;
}

}  // namespace edgesweep
