// Experiment specs: a TOML file parsed once into typed, validated settings, and expanded into trials.
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "edgesweep/common/benchmark_request.h"
#include "edgesweep/common/json.h"
#include "edgesweep/common/trial_config.h"
#include "edgesweep/orchestrator/objectives.h"

namespace edgesweep {

/// One swept setting: where it goes in a trial config and the values it takes, in file order.
struct SweepDimension {
  std::string pointer;  ///< JSON pointer into the trial config, e.g. "/pipeline/0/lr" or "/model/arch"
  std::string label;    ///< how users wrote it, e.g. "pipeline[0].lr" or "model.arch"
  std::vector<Json> values;
};

struct RunSettings {
  int64_t threads = 0;  ///< 0 = cores / busy workers
  std::filesystem::path results_dir;  ///< resolved: [run] results_dir or results/<name>
  int64_t eval_batch_size = 256;
  int64_t max_attempts = 1;
  double latency_seconds = 0.5;  ///< in-process latency budget per batch size; 0 disables
  double trial_timeout_seconds = 0;  ///< wall-clock limit of a task; 0: none
  double heartbeat_seconds = 10;     ///< how often a worker rank reports its progress to rank 0
  double heartbeat_timeout_seconds = 120;  ///< a worker silent this long while it holds a task is lost
  int64_t ranks_per_trial = 1;  ///< worker ranks that train one task together (data-parallel); divides the workers
  std::string device = "cpu";   ///< "cpu" or "cuda": where tasks train and evaluate
  std::string precision = "fp32";  ///< of every training that sets none (written into the trial configs)
  std::string memory_format = "auto";  ///< "auto", "contiguous" or "channels-last"
};

/// [objectives]: what `edgesweep pareto` selects on unless the command line says otherwise.
struct ObjectiveSettings {
  std::vector<Objective> objectives;  ///< maximize entries first, then minimize, in file order
  std::vector<Constraint> constraints;
};

/// The defaults of [objectives]: maximize accuracy; minimize latency_p50_ms, peak_rss_mb, model_bytes; no constraint.
ObjectiveSettings default_objective_settings();

/// One [[devices]] entry: a device agent the experiment's candidates are measured on.
struct DeviceSpec {
  std::string name;        ///< unique within the experiment
  std::string address;     ///< HOST:PORT of its agent (IPv6 hosts in brackets)
  std::string token_file;  ///< file holding the shared token; empty: none (loopback only)
  std::string tls_fingerprint;  ///< the agent's certificate, pinned ("sha256:<64 hex>"); empty: TLS on the token
  std::string profile;     ///< agent profile to ask for; empty: the agent's default
  bool spawn = false;      ///< start a loopback agent at `address` when none answers
  int64_t threads = 0;     ///< spawn: benchmark threads of the agent (0: its default)
  int64_t memory_mb = 0;   ///< spawn: memory cap of each benchmark (0: none)
  std::string cpus;        ///< spawn: CPU list of the benchmarks (empty: all)
  std::string engine;      ///< spawn: quantized engine (empty: the artifact's own)
};

/// [measure]: how the device farm benchmarks every artifact on every device.
struct MeasureSettings {
  std::vector<int64_t> batch_sizes = default_benchmark_batch_sizes();
  int64_t warmup_runs = 5;
  double warmup_seconds = 0.5;
  int64_t min_runs = 20;
  double min_seconds = 1.0;
  int64_t accuracy_images = 0;   ///< 0: the whole test split
  std::string dataset_path;      ///< the evaluation set on the devices; empty: [data] path or the packaged copy
  int64_t max_attempts = 3;
  double retry_seconds = 2.0;    ///< first back-off; doubles with each attempt
  double heartbeat_seconds = 5.0;
  int64_t offline_after = 3;     ///< missed heartbeats before a device counts as offline
  double benchmark_timeout_seconds = 600;
  double timeout_seconds = 1800;  ///< wait for measurements once the trials are over
  bool during_training = true;
};

struct ExperimentSpec {
  std::filesystem::path path;  ///< where the spec was read from ("<string>" when parsed from text)
  std::string text;            ///< the TOML source as given
  std::string hash;            ///< sha256 of `text`
  std::string name;
  uint64_t seed = 0;
  std::string description;
  std::string strategy = "grid";  ///< grid | random
  int64_t max_trials = 0;
  RunSettings run;
  /// A complete trial config (every default filled in); swept keys hold their first value.
  Json base_trial;
  std::vector<SweepDimension> dimensions;
  ObjectiveSettings objectives = default_objective_settings();
  std::vector<DeviceSpec> devices;
  MeasureSettings measure;
};

/// Parses and validates a spec. Every problem is an InputError whose message starts with
/// "<file>:<line>:<col>: " pointing at the offending key or value (or the file for I/O errors).
ExperimentSpec parse_spec_file(const std::filesystem::path& path);

/// Same as parse_spec_file for TOML text; `source_name` stands for the file name in errors.
ExperimentSpec parse_spec_string(const std::string& text, const std::string& source_name);

/// Total number of combinations of the swept dimensions (1 when nothing is swept).
uint64_t count_combinations(const ExperimentSpec& spec);

/// Expands a spec into its trials: grid in file order (the last dimension varies fastest), or a seeded random
/// sample of `max_trials` distinct combinations. Identical configs appear once. Throws InputError when a grid has
/// more combinations than a non-zero max_trials.
std::vector<TrialConfig> expand_trials(const ExperimentSpec& spec);

/// Whether two experiment texts say the same thing: equal once parsed as TOML, whatever their comments, blank lines,
/// spacing and key order. False when either text is not TOML.
bool same_experiment(const std::string& recorded_text, const std::string& text);

/// What a trial computes before its last stage, as a key: its baseline and every stage but the last. Trials with the
/// same key (a sweep over the last stage's settings) share that work, which a worker reuses (see run_task).
std::string shared_stages_key(const TrialConfig& trial);

/// Which of `candidates` (the shared-stages keys of the tasks that can start, in order) to start next: the first whose
/// shared stages no running task is computing now (keys in `running`), so that trials sharing stages run one after
/// another and reuse them instead of computing them side by side; the first when every one shares with a running
/// task. `candidates` must not be empty.
size_t pick_next_task(const std::vector<std::string>& candidates, const std::multiset<std::string>& running);

}  // namespace edgesweep
