// The control plane: rank 0 records the experiment's trials in the store and hands them out task-pull style to
// the worker ranks (or runs them itself when it is alone); workers pull until told there is no more work.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "edgesweep/common/mpi_session.h"
#include "edgesweep/common/task.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {

/// Runs one task where it was handed out; returns its result (a failure as a result, never an exception).
using TaskRunner = std::function<TaskResult(const Task&)>;

struct RunOptions {
  bool resume = false;     ///< continue an experiment already in the store
  bool progress = true;    ///< print a progress line per finished task
  bool summary = true;     ///< print the trials table (and the devices' fronts) at the end
  TaskRunner runner;       ///< what runs a task when rank 0 is alone; empty: run_task (tests and benchmarks swap it)
};

/// The database file of an experiment.
std::filesystem::path store_path(const ExperimentSpec& spec);

/// The folder of cached baselines, shared by the experiments beside this one: <results_dir>/../cache. A trained
/// baseline is kept there as <baseline hash>.pt (the archive) and .json (its metrics and config).
std::filesystem::path baseline_cache_dir(const ExperimentSpec& spec);

/// Rank 0: runs the experiment to the end over the other ranks; returns the process exit code
/// (0 all done, 1 some trials failed). Throws InputError for a spec/store mismatch (exit 2).
int orchestrate(const ExperimentSpec& spec, const RunOptions& options, MpiSession& session);

/// How worker ranks 1..`workers` form groups of `ranks_per_trial` consecutive ranks ([run] ranks_per_trial); the
/// first rank of each group leads it: it pulls tasks from rank 0, passes each to its members, trains with them
/// (data-parallel), then evaluates, exports and reports alone.
struct WorkerGroups {
  int workers = 0;
  int ranks_per_trial = 1;
  int leader_of(int rank) const { return 1 + ((rank - 1) / ranks_per_trial) * ranks_per_trial; }
  bool leads(int rank) const { return leader_of(rank) == rank; }
  int groups() const { return workers / ranks_per_trial; }
  /// The ranks that follow `leader` (without it).
  std::vector<int> members_of(int leader) const {
    std::vector<int> members;
    for (int rank = leader + 1; rank < leader + ranks_per_trial; ++rank) members.push_back(rank);
    return members;
  }
};

/// Ranks >= 1: waits for rank 0's layout of the worker groups, then pulls and runs tasks (with `runner`; empty:
/// run_task) until rank 0 says there are no more. In a group, the leader pulls and its members run each of its tasks
/// with it (task_group::current() is their group while they do).
void serve_worker(MpiSession& session, const TaskRunner& runner = {});

/// Tells every worker rank to stop (rank 0, when it cannot run the experiment at all).
void release_workers(MpiSession& session);

}  // namespace edgesweep
