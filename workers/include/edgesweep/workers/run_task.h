// Running one task (a baseline or a trial) inside a worker process. No LibTorch types in this header.
#pragma once

#include "edgesweep/common/task.h"

namespace edgesweep {

/// Runs `task` to completion. A failure of the task itself (bad data, diverged training, a throwing stage) is
/// returned as a result with ok = false and the reason; it never escapes as an exception.
TaskResult run_task(const Task& task);

}  // namespace edgesweep
