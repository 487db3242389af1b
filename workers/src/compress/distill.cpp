// Knowledge distillation: the Hinton loss, a training-loss hook that queries the teacher batch by batch, and the
// distill stage.
#include "edgesweep/workers/compress/distill.h"

#include <cmath>
#include <filesystem>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/import_torchscript.h"
#include "edgesweep/workers/mixed_precision.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/trainer.h"

namespace edgesweep {

torch::Tensor distillation_divergence(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                      double temperature) {
  const auto log_student = torch::log_softmax(student_logits / temperature, 1);
  const auto log_teacher = torch::log_softmax(teacher_logits.detach() / temperature, 1);
  return (log_teacher.exp() * (log_teacher - log_student)).sum(1).mean();
}

torch::Tensor distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                const torch::Tensor& labels, double temperature, double alpha) {
  // In fp32 whatever precision the forward passes ran in.
  const auto student = at_least_fp32(student_logits);
  const auto hard = torch::nn::functional::cross_entropy(student, labels);
  if (alpha == 0) return hard;
  const auto soft = distillation_divergence(student, at_least_fp32(teacher_logits), temperature);
  return alpha * temperature * temperature * soft + (1.0 - alpha) * hard;
}

DistillSettings read_distill_settings(const Json& params, const std::string& stage) {
  DistillSettings settings;
  settings.temperature = params.at("temperature").get<double>();
  settings.alpha = params.at("alpha").get<double>();
  check_input(settings.temperature > 0, "{}: 'temperature' = {} is out of range: must be > 0", stage,
              settings.temperature);
  check_input(settings.alpha >= 0 && settings.alpha <= 1, "{}: 'alpha' = {} is out of range: must be in [0, 1]", stage,
              settings.alpha);
  return settings;
}

TrainLoss make_distillation_loss(GraphModule teacher, const Graph& student, const DistillSettings& settings,
                                 const std::string& stage) {
  check_input(!teacher.is_empty(), "{}: distillation needs the trial's baseline as teacher, and there is none here",
              stage);
  const int64_t teacher_classes = teacher->graph().nodes.back().shape.channels;
  const int64_t student_classes = student.nodes.back().shape.channels;
  check_input(teacher_classes == student_classes,
              "{}: the teacher gives {} outputs and the student {}; distillation needs the same classes", stage,
              teacher_classes, student_classes);
  teacher->eval();
  return [teacher, settings](const torch::Tensor& logits, const torch::Tensor& labels,
                             const torch::Tensor& inputs) mutable {
    torch::Tensor teacher_logits;
    {
      torch::NoGradGuard no_grad;
      teacher_logits = teacher->forward(inputs);
    }
    return distillation_loss(logits, teacher_logits, labels, settings.temperature, settings.alpha);
  };
}

GraphModule load_teacher(const std::string& teacher, const GraphModule& baseline, const std::string& stage) {
  if (teacher == "baseline") return baseline;
  check_input(!teacher.empty(), "{}: 'teacher' is empty; expected baseline or the path of an edgesweep archive", stage);
  const std::filesystem::path path(teacher);
  std::error_code error;
  check_input(std::filesystem::is_regular_file(path, error),
              "{}: 'teacher' = \"{}\" is neither baseline nor an existing file", stage, teacher);
  LoadedModel loaded;
  try {
    // An edgesweep archive, or any TorchScript network that imports for the student's input.
    loaded = baseline.is_empty() ? load_graph_module(path) : load_or_import(path, baseline->graph().input().shape);
  } catch (const std::exception& e) {
    throw InputError(fmt::format("{}: 'teacher' = \"{}\" cannot be used as a teacher: {}", stage, teacher, e.what()));
  }
  const std::string precision = loaded.metadata.value("precision", "fp32");
  check_input(precision == "fp32",
              "{}: 'teacher' = \"{}\" is a {} model; a teacher must be a float model (an artifact before quantize)",
              stage, teacher, precision);
  return loaded.model;
}

namespace {

/// Replaces `model`'s output transform with one that keeps the output of node `index` in `slot`.
void capture_output(GraphModule& model, int index, const std::shared_ptr<torch::Tensor>& slot) {
  model->output_transform = [index, slot](int node, const torch::Tensor& value) {
    if (node == index) *slot = value;
    return value;
  };
}

}  // namespace

HintLoss::HintLoss(GraphModule student, GraphModule teacher, const std::string& layer, double weight,
                   const std::string& stage)
    : student_(std::move(student)),
      teacher_(std::move(teacher)),
      weight_(weight),
      student_feature_(std::make_shared<torch::Tensor>()),
      teacher_feature_(std::make_shared<torch::Tensor>()) {
  const Graph& student_graph = student_->graph();
  const Graph& teacher_graph = teacher_->graph();
  student_node_ = student_graph.find(layer);
  teacher_node_ = teacher_graph.find(layer);
  check_input(student_node_ > 0, "{}: 'hint_layer' = \"{}\" is not a layer of the student", stage, layer);
  check_input(teacher_node_ > 0, "{}: 'hint_layer' = \"{}\" is not a layer of the teacher", stage, layer);
  const Shape& s = student_graph.nodes[student_node_].shape;
  const Shape& t = teacher_graph.nodes[teacher_node_].shape;
  check_input(s.flat == t.flat && s.height == t.height && s.width == t.width,
              "{}: 'hint_layer' = \"{}\" has output {} in the student and {} in the teacher; a hint needs the same "
              "spatial size", stage, layer, s.to_string(), t.to_string());
  check_input(s.flat ? s.channels == t.channels : true,
              "{}: 'hint_layer' = \"{}\" has {} features in the student and {} in the teacher; a flat hint needs the "
              "same width", stage, layer, s.channels, t.channels);
  if (s.channels != t.channels) {
    regressor_ = torch::empty({t.channels, s.channels, 1, 1});
    torch::nn::init::kaiming_uniform_(regressor_, std::sqrt(5.0));
    regressor_.set_requires_grad(true);
  }
  capture_output(student_, student_node_, student_feature_);
  capture_output(teacher_, teacher_node_, teacher_feature_);
}

HintLoss::~HintLoss() {
  student_->output_transform = nullptr;
  teacher_->output_transform = nullptr;
}

torch::Tensor HintLoss::loss() const {
  EDGESWEEP_ASSERT(student_feature_->defined() && teacher_feature_->defined());
  torch::Tensor student = *student_feature_;
  if (regressor_.defined()) student = torch::conv2d(student, regressor_);
  return weight_ * torch::mse_loss(at_least_fp32(student), at_least_fp32(teacher_feature_->detach()));
}

std::vector<torch::Tensor> HintLoss::parameters() const {
  if (!regressor_.defined()) return {};
  return {regressor_};
}

GraphModule distill_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  GraphModule teacher = load_teacher(stage.params.at("teacher").get<std::string>(), context.baseline, "distill");
  const DistillSettings settings = read_distill_settings(stage.params, "distill");
  const TrainConfig config = in_trial_span(train_config_from_params(stage.params), context);
  TrainHooks hooks;
  hooks.loss = make_distillation_loss(teacher, model->graph(), settings, "distill");
  hooks.modules.push_back(teacher.get());  // on the training's device with the student
  const std::string hint_layer = stage.params.value("hint_layer", "");
  std::unique_ptr<HintLoss> hint;
  if (!hint_layer.empty()) {
    torch::manual_seed(stage_seed(context));
    hint = std::make_unique<HintLoss>(model, teacher, hint_layer, stage.params.at("hint_weight").get<double>(),
                                      "distill");
    hooks.extra_parameters = hint->parameters();
    // The distillation loss runs the teacher, which captures its feature; the student's was captured by the
    // training forward pass just before.
    hooks.loss = [distillation = hooks.loss, hint = hint.get()](const torch::Tensor& logits,
                                                                 const torch::Tensor& labels,
                                                                 const torch::Tensor& inputs) {
      const torch::Tensor soft = distillation(logits, labels, inputs);  // runs the teacher first
      return soft + hint->loss();
    };
  }

  int distill_stages = 0;
  for (const StageConfig& s : context.trial.pipeline) distill_stages += s.stage == "distill" ? 1 : 0;
  const std::string prefix = distill_stages > 1 ? fmt::format("stage{}/", context.stage_index) : "";
  const auto record = [&](const std::string& name, double value) {
    context.metrics->push_back({-1, prefix + name, value});
  };
  const DataSplits& data = context.data;
  if (data.val.size() > 0) {
    record("teacher_val_accuracy", evaluate_accuracy(teacher, data.val, data.mean, data.std, 256));
    record("val_accuracy_before_distill", evaluate_accuracy(model, data.val, data.mean, data.std, 256));
  }
  hold_zero_weights(model, context, hooks);
  record_epochs(train_model(model, data, config, context.trial.data.augment, stage_seed(context), {}, hooks), context);
  hint.reset();
  if (data.val.size() > 0) {
    record("val_accuracy_after_distill", evaluate_accuracy(model, data.val, data.mean, data.std, 256));
  }
  teacher->eval();
  return model;
}

}  // namespace edgesweep
