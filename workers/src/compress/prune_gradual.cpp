// Gradual pruning during fine-tuning: the AGP sparsity schedule, movement scores, and the pruner that applies
// them through the training loop's hooks.
#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/compress/prune_gradual.h"

namespace edgesweep {

double agp_sparsity(double initial, double final_sparsity, int64_t step, int64_t start, int64_t frequency,
                    int64_t updates) {
  EDGESWEEP_ASSERT(frequency >= 1 && updates >= 1);
  if (step <= start) return initial;
  const int64_t span = frequency * updates;
  if (step >= start + span) return final_sparsity;
  const double remaining = 1.0 - static_cast<double>(step - start) / static_cast<double>(span);
  return final_sparsity + (initial - final_sparsity) * remaining * remaining * remaining;
}

MovementScores::MovementScores(const GraphModule& model) : nodes(prunable_layers(model->graph())) {
  for (int node : nodes) scores.push_back(torch::zeros(model->weight(node).sizes(), torch::kFloat64));
}

void MovementScores::accumulate(const GraphModule& model) {
  torch::NoGradGuard no_grad;
  for (size_t k = 0; k < nodes.size(); ++k) {
    const torch::Tensor& weight = model->weight(nodes[k]);
    const torch::Tensor& grad = weight.grad();
    if (!grad.defined()) continue;
    scores[k].sub_(grad.to(torch::kFloat64) * weight.detach().to(torch::kFloat64));
  }
}


GradualPruner::GradualPruner(GraphModule model, const GradualSchedule& schedule, int64_t total_steps)
    : state_(std::make_shared<State>()) {
  check_input(total_steps >= 1, "prune: gradual pruning runs during fine-tuning, which has no steps here");
  check_input(schedule.frequency <= total_steps,
              "prune: 'agp_frequency' = {} exceeds the {} optimizer steps of fine-tuning; no mask update would happen",
              schedule.frequency, total_steps);
  check_input(!schedule.movement || schedule.initial_sparsity == 0,
              "prune: 'agp_initial_sparsity' = {} with method 'movement': movement scores start at zero, so the "
              "initial sparsity must be 0", schedule.initial_sparsity);
  state_->model = model;
  state_->schedule = schedule;
  const int64_t ramp_steps =
      std::max<int64_t>(1, std::llround(schedule.ramp * static_cast<double>(total_steps)));
  state_->updates = std::max<int64_t>(1, ramp_steps / schedule.frequency);
  if (schedule.movement) state_->scores = std::make_unique<MovementScores>(model);
  state_->masks = magnitude_masks(model, schedule.initial_sparsity, schedule.global);
  if (!(schedule.movement && schedule.regrow)) {
    apply_masks(model, state_->masks);
    return;
  }
  State* s = state_.get();
  s->layer_of_node.assign(model->graph().nodes.size(), -1);
  for (size_t k = 0; k < s->masks.nodes.size(); ++k) s->layer_of_node[s->masks.nodes[k]] = static_cast<int>(k);
  s->masked_weights.resize(s->masks.nodes.size());
  // The state owns the model, so the transform refers to the state without owning it (no cycle).
  model->weight_transform = [s](int node, const torch::Tensor& weight) {
    const int k = s->layer_of_node[node];
    if (k < 0) return weight;
    torch::Tensor masked = weight * s->masks.masks[k].to(weight.device());
    if (masked.requires_grad()) {
      masked.retain_grad();
      s->masked_weights[k] = masked;
    }
    return masked;
  };
}

void GradualPruner::finish() {
  State& s = *state_;
  if (!(s.schedule.movement && s.schedule.regrow) || !s.model->weight_transform) return;
  s.model->weight_transform = nullptr;
  s.masked_weights.clear();
  apply_masks(s.model, s.masks);
}

GradualPruner::~GradualPruner() {
  if (state_ && state_->model && state_->schedule.movement && state_->schedule.regrow) {
    state_->model->weight_transform = nullptr;  // never leave a transform that refers to this state behind
  }
}

TrainHooks GradualPruner::hooks() {
  TrainHooks hooks;
  const std::shared_ptr<State> state = state_;
  const bool regrow = state->schedule.movement && state->schedule.regrow;
  if (regrow) {
    // Straight-through: the score of every weight, pruned or not, moves by -(gradient of its masked value) * its
    // dense value.
    hooks.after_backward = [state] {
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < state->masked_weights.size(); ++k) {
        const torch::Tensor& masked = state->masked_weights[k];
        if (!masked.defined() || !masked.grad().defined()) continue;
        const torch::Tensor& weight = state->model->weight(state->masks.nodes[k]);
        state->scores->scores[k].sub_(masked.grad().to(torch::kFloat64) * weight.detach().to(torch::kFloat64));
      }
      for (torch::Tensor& masked : state->masked_weights) masked = torch::Tensor();
    };
  } else if (state->scores) {
    hooks.after_backward = [state] { state->scores->accumulate(state->model); };
  }
  // The masks and scores go to the training's device with the model; masks made during training are made there.
  hooks.device_state = state->masks.masks;
  if (state->scores) {
    hooks.device_state.insert(hooks.device_state.end(), state->scores->scores.begin(), state->scores->scores.end());
  }
  hooks.after_step = [state, regrow] {
    const GradualSchedule& s = state->schedule;
    ++state->step;
    if (state->step % s.frequency == 0 && state->step <= s.frequency * state->updates) {
      const double sparsity =
          agp_sparsity(s.initial_sparsity, s.final_sparsity, state->step, 0, s.frequency, state->updates);
      state->masks = state->scores ? lowest_score_masks(state->model, state->scores->scores, sparsity, s.global,
                                                        regrow ? nullptr : &state->masks)
                                   : magnitude_masks(state->model, sparsity, s.global, &state->masks);
    }
    if (!regrow) apply_masks(state->model, state->masks);
  };
  return hooks;
}

}  // namespace edgesweep
