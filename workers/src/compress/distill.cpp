// Knowledge distillation: the Hinton loss, a training-loss hook that queries the teacher batch by batch, and the
// distill stage.
#include "edgesweep/workers/compress/distill.h"

#include <torch/torch.h>

#include "edgesweep/common/error.h"
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
  const auto hard = torch::nn::functional::cross_entropy(student_logits, labels);
  if (alpha == 0) return hard;
  const auto soft = distillation_divergence(student_logits, teacher_logits, temperature);
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

GraphModule distill_stage(GraphModule model, const StageConfig& stage, StageContext& context) {
  const std::string teacher_name = stage.params.at("teacher").get<std::string>();
  check_input(teacher_name == "baseline", "distill: 'teacher' is \"{}\", expected baseline", teacher_name);
  const DistillSettings settings = read_distill_settings(stage.params, "distill");
  const TrainConfig config = train_config_from_params(stage.params);
  TrainHooks hooks;
  hooks.loss = make_distillation_loss(context.baseline, model->graph(), settings, "distill");

  int distill_stages = 0;
  for (const StageConfig& s : context.trial.pipeline) distill_stages += s.stage == "distill" ? 1 : 0;
  const std::string prefix = distill_stages > 1 ? fmt::format("stage{}/", context.stage_index) : "";
  const auto record = [&](const std::string& name, double value) {
    context.metrics->push_back({-1, prefix + name, value});
  };
  const DataSplits& data = context.data;
  if (data.val.size() > 0) {
    GraphModule teacher = context.baseline;
    record("teacher_val_accuracy", evaluate_accuracy(teacher, data.val, data.mean, data.std, 256));
    record("val_accuracy_before_distill", evaluate_accuracy(model, data.val, data.mean, data.std, 256));
  }
  record_epochs(train_model(model, data, config, context.trial.data.augment, stage_seed(context), {}, hooks), context);
  if (data.val.size() > 0) {
    record("val_accuracy_after_distill", evaluate_accuracy(model, data.val, data.mean, data.std, 256));
  }
  context.baseline->eval();
  return model;
}

}  // namespace edgesweep
