// The progress of the task this process runs: which stage, epoch and step it has reached, and its wall-clock limit.
// The training loop reports every step here; the worker's heartbeat reads it from another thread, and a task past
// its limit is stopped at its next step with TrialTimeout. No LibTorch types in this header.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "edgesweep/common/error.h"
#include "edgesweep/common/json.h"

namespace edgesweep {

/// Where a task is: what a heartbeat carries and `edgesweep status` shows.
struct TaskProgress {
  int64_t trial_id = 0;
  std::string stage;         ///< the stage running ("train", "prune", ...); empty before the first
  int64_t stage_index = -1;  ///< 0-based; -1 before the first
  int64_t stages = 0;
  int64_t epoch = 0;  ///< 1-based within the stage's training; 0 outside training
  int64_t epochs = 0;
  int64_t step = 0;  ///< batches done in the epoch
  int64_t steps = 0;
  double seconds = 0;  ///< since the task started
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TaskProgress, trial_id, stage, stage_index, stages, epoch, epochs, step, steps,
                                   seconds)

/// "stage 2/3 finetune, epoch 1/2, step 30/94" (the parts known so far).
std::string describe(const TaskProgress& progress);

/// The process's current task. Every function is safe to call from any thread.
namespace task_progress {

/// Starts a task: progress reset, its limit counted from now (`timeout_seconds` <= 0: none). Without
/// `enforce_limit`, step(), begin_stage() and check_deadline() never throw and only past_deadline() tells: the ranks
/// of a data-parallel group stop together, where their leader's past_deadline() is shared with them.
void begin_task(int64_t trial_id, double timeout_seconds, bool enforce_limit = true);
/// Ends the task (no limit applies until the next one begins).
void end_task();
/// A stage begins (epoch and step reset).
void begin_stage(const std::string& name, int64_t index, int64_t count);
/// A training step is done; throws TrialTimeout when the task is past its limit.
void step(int64_t epoch, int64_t epochs, int64_t step, int64_t steps);
/// Throws TrialTimeout when the task is past its limit (for loops that are not training steps).
void check_deadline();
/// Whether the task is past its limit (without throwing).
bool past_deadline();
/// The task's limit in seconds (0: none).
double limit_seconds();
/// The progress so far.
TaskProgress snapshot();

/// Calls `listener` with the progress from step() or begin_stage() (on the caller's thread), at most once per
/// `interval_seconds`; an empty listener removes it. For a process with no thread of its own to report progress.
void set_listener(std::function<void(const TaskProgress&)> listener, double interval_seconds);

}  // namespace task_progress
}  // namespace edgesweep
