// Shared pieces of the end-to-end tests of the edgesweep binary: a temporary folder per test, bounded runs of the
// binary (alone or under mpirun) in their own process group, tiny experiment files and store inspection helpers.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "edgesweep/orchestrator/store.h"

namespace edgesweep::apps_test {

namespace fs = std::filesystem;

/// What a finished (or killed) child process left behind.
struct ProcessResult {
  std::string command;  ///< the command line, for messages
  int exit_code = -1;   ///< exit status, or 128 + signal when a signal ended it
  bool timed_out = false;
  double seconds = 0;
  std::string out;  ///< everything it wrote to stdout
  std::string err;  ///< everything it wrote to stderr
};

/// A readable account of a run for assertion messages: command, exit code, time, and both output streams.
std::string describe(const ProcessResult& result);

/// Runs `argv` (argv[0] is a path) in its own process group with `extra_env` added to this process's environment,
/// stdin from /dev/null and stdout/stderr captured in files under `log_dir`. Past `timeout` the group gets SIGTERM,
/// then SIGKILL 10 s later; the result then has timed_out set.
ProcessResult run_process(const std::vector<std::string>& argv, const fs::path& log_dir,
                          std::chrono::seconds timeout, const std::map<std::string, std::string>& extra_env = {});

/// A process started by a test in its own process group, output appended to `log`; killed (its group) by pid when
/// it goes away.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const fs::path& log,
        const std::map<std::string, std::string>& extra_env = {});
  ~Child() { stop(SIGKILL); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  /// Whether it has ended (reaps it); its exit code is then in exit_code().
  bool ended();
  /// Waits up to `timeout` for it to end; false when it is still running.
  bool wait(std::chrono::seconds timeout);
  /// Sends `signal` to its process group and waits for it (SIGKILL after 15 s).
  void stop(int signal);
  int exit_code() const { return exit_code_; }

 private:
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

/// The environment an `mpirun` of the tests needs: root allowed, shared memory between ranks, loopback wiring.
std::map<std::string, std::string> mpi_environment();

/// The mpirun of the MPI the binary was built with; empty when it was built without MPI.
std::string mpiexec_path();

/// A tiny Fashion-MNIST experiment: 1000 training and 500 test images, half-width models, `baseline` as the
/// [baseline] keys (default: one epoch), `model_extra` appended to [model] (the arch, and any [[model.layers]]),
/// `pipeline` as the [[pipeline]] tables, results in `results_dir`; [run] comes last, so keys may be appended.
std::string tiny_experiment(const std::string& name, const fs::path& results_dir, const std::string& model_extra,
                            const std::string& pipeline,
                            const std::string& baseline = "epochs = 1\nlr = 0.05\nbatch_size = 64\n");

/// The text of a file (a log), empty when it cannot be read.
std::string read_log(const fs::path& file);

/// [model] keys of a custom network without batch norm: conv (`channels` filters), relu, max-pool, flatten, linear
/// to 10 classes.
std::string conv_linear_model(int channels);

/// Five fine-tuning trials (five learning rates, two epochs each, Adam, batch 32): a sweep long enough to be caught
/// mid-way by a fault.
extern const char* const kFiveFinetunes;

/// A fresh temporary folder per test (kept when the test failed, for inspection) and runs of the binary in it.
class AppTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  /// Writes `text` to `name` inside the test folder and returns its path.
  fs::path write_file(const std::string& name, const std::string& text) const;

  /// Runs the edgesweep binary with `args`, bounded to 300 s.
  ProcessResult edgesweep(const std::vector<std::string>& args) const;

  /// Runs the edgesweep binary with `args` under `mpirun -np <ranks> --oversubscribe`, loopback only, bounded to 300 s.
  ProcessResult edgesweep_mpi(int ranks, const std::vector<std::string>& args) const;

  fs::path folder_;
  fs::path results_dir_;  ///< folder_/results, where the experiments of the test keep their store and artifacts
};

/// The trial rows of the only experiment named `name` in a store opened read-only.
std::vector<TrialRow> trials_of(const Store& store, const std::string& name);

/// The final (step -1) metrics of a trial by name.
std::map<std::string, double> final_metrics(const Store& store, int64_t trial_id);

/// Whether `text` contains `part`.
bool contains(const std::string& text, const std::string& part);

}  // namespace edgesweep::apps_test
