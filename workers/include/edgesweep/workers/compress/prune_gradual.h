// Gradual unstructured pruning inside one fine-tuning run: masks grow on the AGP schedule from weight magnitudes
// or from movement scores, and are held after every optimizer step.
#pragma once

#include <cstdint>
#include <memory>

#include "edgesweep/workers/compress/prune.h"
#include "edgesweep/workers/trainer.h"

namespace edgesweep {

/// How a gradual pruning run proceeds.
struct GradualSchedule {
  double initial_sparsity = 0;  ///< s_i, applied before the first step
  double final_sparsity = 0;    ///< s_f, reached at step n * frequency
  int64_t frequency = 10;       ///< optimizer steps between mask updates (dt)
  double ramp = 0.75;           ///< share of the run's steps over which the sparsity rises; n = ramp steps / dt
  bool global = false;          ///< one threshold across layers (true) or the same share per layer
  bool movement = false;        ///< rank by movement scores instead of |w|
  /// movement: pruned weights are masked in the forward pass instead of zeroed, their scores keep accumulating
  /// (straight-through: -grad of the masked weight * the dense weight), and each mask update ranks every weight
  /// again, so a pruned weight returns when its score rises (Sanh et al. 2020). finish() zeroes the pruned weights.
  bool regrow = false;
};

/// Prunes `model` gradually while train_model runs `total_steps` optimizer steps with the hooks it gives.
class GradualPruner {
 public:
  /// Applies the initial masks (s_i). Throws InputError when the schedule cannot run in `total_steps`.
  GradualPruner(GraphModule model, const GradualSchedule& schedule, int64_t total_steps);

  /// after_backward accumulates movement scores (movement only); after_step updates the masks on the schedule and
  /// applies them.
  TrainHooks hooks();

  /// Zeroes the pruned weights for good and removes the forward-pass masks (regrow); call when fine-tuning ends.
  void finish();
  ~GradualPruner();
  GradualPruner(const GradualPruner&) = delete;
  GradualPruner& operator=(const GradualPruner&) = delete;

  const WeightMasks& masks() const { return state_->masks; }
  /// Number of mask updates n: the last one, at step n * frequency, reaches the final sparsity.
  int64_t updates() const { return state_->updates; }

 private:
  struct State {
    GraphModule model{nullptr};
    GradualSchedule schedule;
    int64_t updates = 1;
    int64_t step = 0;
    WeightMasks masks;
    std::unique_ptr<MovementScores> scores;
    std::vector<int> layer_of_node;             ///< regrow: node -> index into masks, -1 for other nodes
    std::vector<torch::Tensor> masked_weights;  ///< regrow: the masked weights of the last training forward pass
  };
  std::shared_ptr<State> state_;
};

}  // namespace edgesweep
