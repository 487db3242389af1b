// The control plane: rank 0 records the experiment's trials in the store and hands them out task-pull style to
// the worker ranks (or runs them itself when it is alone); workers pull until told there is no more work.
#pragma once

#include <filesystem>
#include <string>

#include "edgesweep/common/mpi_session.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {

struct RunOptions {
  bool resume = false;     ///< continue an experiment already in the store
  bool progress = true;    ///< print a progress line per finished task
};

/// The database file of an experiment.
std::filesystem::path store_path(const ExperimentSpec& spec);

/// The folder of cached baselines, shared by the experiments beside this one: <results_dir>/../cache. A trained
/// baseline is kept there as <baseline hash>.pt (the archive) and .json (its metrics and config).
std::filesystem::path baseline_cache_dir(const ExperimentSpec& spec);

/// Rank 0: runs the experiment to the end over the other ranks; returns the process exit code
/// (0 all done, 1 some trials failed). Throws InputError for a spec/store mismatch (exit 2).
int orchestrate(const ExperimentSpec& spec, const RunOptions& options, MpiSession& session);

/// Ranks >= 1: pulls and runs tasks until rank 0 says there are no more.
void serve_worker(MpiSession& session);

/// Tells every worker rank to stop (rank 0, when it cannot run the experiment at all).
void release_workers(MpiSession& session);

}  // namespace edgesweep
