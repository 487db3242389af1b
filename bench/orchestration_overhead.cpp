// The orchestrator's own cost: an experiment of N trials whose tasks are a stand-in (a sleep of a fixed length, or
// nothing at all) run through the real scheduler, MPI control plane (task-pull, heartbeats) and SQLite store, timed
// against the ideal time (the tasks' total length spread over the worker ranks). Run under mpirun; rank 0 prints one
// JSON line with the figures.
// Usage: mpirun -np R bench_orchestration RESULTS_DIR TRIALS TASK_SECONDS
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "bench_report.h"
#include "edgesweep/common/file_io.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/common/json.h"
#include "edgesweep/common/mpi_session.h"
#include "edgesweep/common/task.h"
#include "edgesweep/orchestrator/scheduler.h"
#include "edgesweep/orchestrator/spec.h"

using namespace edgesweep;
namespace fs = std::filesystem;

namespace {

/// An experiment of one baseline and `trials` trials (a finetune stage swept over that many learning rates).
std::string experiment_text(const fs::path& results, int64_t trials) {
  std::string rates;
  for (int64_t i = 0; i < trials; ++i) rates += fmt::format("{}{:.10g}", i ? ", " : "", 1e-4 + 1e-8 * i);
  return fmt::format(R"toml([experiment]
name = "orchestration"

[[pipeline]]
stage = "finetune"
lr = [{}]

[run]
results_dir = '{}'
)toml",
                     rates, results.string());
}

/// The stand-in task: the baseline writes a small file as its archive (trials need one to start from); a trial
/// sleeps `seconds` and reports an accuracy.
TaskResult stand_in(const Task& task, double seconds) {
  const auto start = std::chrono::steady_clock::now();
  TaskResult result;
  result.trial_id = task.trial_id;
  result.ok = true;
  if (task.kind == "baseline") {
    const std::string bytes = "stand-in baseline";
    ArtifactRecord artifact;
    artifact.kind = "baseline";
    artifact.sha256 = sha256_hex(bytes);
    artifact.path = (fs::path("artifacts") / (artifact.sha256 + ".pt")).string();
    artifact.bytes = static_cast<int64_t>(bytes.size());
    fs::create_directories(fs::path(task.results_dir) / "artifacts");
    write_file_atomically(fs::path(task.results_dir) / artifact.path, bytes);
    result.artifacts.push_back(artifact);
  } else if (seconds > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  }
  result.metrics.push_back({-1, "test_accuracy", 90.0});
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

int run(int argc, char** argv) {
  MpiSession session(&argc, &argv);
  spdlog::set_level(spdlog::level::warn);
  check_input(argc == 4, "usage: mpirun -np R bench_orchestration RESULTS_DIR TRIALS TASK_SECONDS");
  const fs::path results = argv[1];
  const int64_t trials = std::stoll(argv[2]);
  const double seconds = std::stod(argv[3]);
  check_input(trials >= 1 && seconds >= 0, "TRIALS must be >= 1 and TASK_SECONDS >= 0");
  const auto runner = [seconds](const Task& task) { return stand_in(task, seconds); };
  if (session.rank() != 0) {
    serve_worker(session, runner);
    return 0;
  }
  int code = 0;
  double wall = 0;
  try {
    check_input(!fs::exists(results), "'{}' exists; give a folder that does not (it is written from scratch)",
                results.string());
    fs::create_directories(results);
    const fs::path spec_file = results / "orchestration.toml";
    write_file_atomically(spec_file, experiment_text(results, trials));
    const ExperimentSpec spec = parse_spec_file(spec_file);
    RunOptions options;
    options.progress = false;
    options.summary = false;
    options.runner = runner;
    const auto start = std::chrono::steady_clock::now();
    code = orchestrate(spec, options, session);
    wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } catch (...) {
    release_workers(session);  // they would wait for work forever
    throw;
  }
  const int64_t workers = std::max(1, session.size() - 1);
  // Ideal: the trials spread over the workers with nothing between them (the stand-in baseline takes no time).
  const double ideal = static_cast<double>((trials + workers - 1) / workers) * seconds;
  fmt::print("{}\n", Json{{"trials", trials},
                          {"workers", workers},
                          {"task_seconds", seconds},
                          {"wall_seconds", wall},
                          {"ideal_seconds", ideal},
                          {"overhead", ideal > 0 ? (wall - ideal) / ideal : 0.0},
                          {"trials_per_second", static_cast<double>(trials + 1) / wall},
                          {"exit_code", code}}
                         .dump());
  return code;
}

}  // namespace

int main(int argc, char** argv) { return bench::main_of(run, argc, argv); }
