// Knowledge distillation (Hinton et al. 2015): a student learns from a teacher's softened outputs and the labels.
// Used by the distill stage and as the fine-tuning loss of the prune stage (`distill = true`).
#pragma once

#include <torch/types.h>

#include "edgesweep/common/json.h"
#include "edgesweep/workers/graph_module.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/trainer.h"

namespace edgesweep {

/// alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross_entropy(student, labels),
/// the KL divergence summed over classes and averaged over the batch. Gradients flow to `student_logits` only.
torch::Tensor distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                const torch::Tensor& labels, double temperature, double alpha);

/// Mean over the batch of KL(softmax(teacher / T) || softmax(student / T)): how far the student's outputs are from
/// the teacher's.
torch::Tensor distillation_divergence(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                                      double temperature);

/// Settings of a distillation loss.
struct DistillSettings {
  double temperature = 4.0;
  double alpha = 0.7;
};

/// Reads `temperature` and `alpha` of `stage` (a distill stage, or a prune stage with distill = true) and checks
/// them; throws InputError naming the stage and key.
DistillSettings read_distill_settings(const Json& params, const std::string& stage);

/// A training loss (for TrainHooks::loss) that runs `teacher` in eval mode without gradients on each batch's inputs
/// and returns distillation_loss of the student's logits. Throws InputError when the teacher is missing or its
/// output does not match the student's classes.
TrainLoss make_distillation_loss(GraphModule teacher, const Graph& student, const DistillSettings& settings,
                                 const std::string& stage);

/// The distill stage: fine-tunes the incoming model (the student) against the trial's baseline (the teacher).
GraphModule distill_stage(GraphModule model, const StageConfig& stage, StageContext& context);

}  // namespace edgesweep
