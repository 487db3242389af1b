// Knowledge distillation (Hinton et al. 2015): a student learns from a teacher's softened outputs and the labels.
// Used by the distill stage and as the fine-tuning loss of the prune stage (`distill = true`).
#pragma once

#include <memory>
#include <string>
#include <vector>

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

/// The teacher a distill stage names: "baseline" (the trial's baseline, `baseline`), or the path of an edgesweep
/// archive of a float model (any earlier artifact), loaded as a GraphModule. Throws InputError naming the stage and
/// the file when it cannot be used.
GraphModule load_teacher(const std::string& teacher, const GraphModule& baseline, const std::string& stage);

/// A feature ("hint") loss in the manner of FitNets (Romero et al. 2015): beta * mean squared error between the
/// output of layer `layer` in the student, mapped through a learned 1x1 conv when the channel counts differ, and the
/// same layer's output in the teacher. Installs output captures on both models.
class HintLoss {
 public:
  /// Checks that `layer` exists in both graphs with the same spatial size (and, for flat outputs, the same width)
  /// and creates the regressor (seeded from LibTorch's global generator) when channels differ; throws InputError.
  HintLoss(GraphModule student, GraphModule teacher, const std::string& layer, double weight, const std::string& stage);
  HintLoss(const HintLoss&) = delete;
  HintLoss& operator=(const HintLoss&) = delete;
  /// Removes the output captures from both models.
  ~HintLoss();

  /// The weighted loss between the features captured by the last forward passes of student and teacher.
  torch::Tensor loss() const;
  /// The regressor's parameters (empty when the channels already match), to train with the student.
  std::vector<torch::Tensor> parameters() const;

 private:
  GraphModule student_, teacher_;
  int student_node_ = -1, teacher_node_ = -1;
  double weight_ = 1;
  torch::Tensor regressor_;  ///< [teacher channels, student channels, 1, 1]; undefined when not needed
  std::shared_ptr<torch::Tensor> student_feature_, teacher_feature_;
};

/// The distill stage: fine-tunes the incoming model (the student) against its teacher, with an optional hint loss.
GraphModule distill_stage(GraphModule model, const StageConfig& stage, StageContext& context);

}  // namespace edgesweep
