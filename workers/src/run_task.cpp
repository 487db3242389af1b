// Running baselines and trials: data (cached per process), model, pipeline stages, evaluation, export.
#include "edgesweep/workers/run_task.h"

#include <chrono>
#include <fstream>
#include <memory>
#include <optional>

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "edgesweep/common/collective.h"
#include "edgesweep/common/error.h"
#include "edgesweep/common/file_io.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/workers/baseline_init.h"
#include "edgesweep/workers/device.h"
#include "edgesweep/workers/import_torchscript.h"
#include "edgesweep/workers/compress/compressed_size.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/gradient_sync.h"
#include "edgesweep/workers/measure_latency.h"
#include "edgesweep/workers/stages.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

/// The last dataset loaded in this process, reused while trials ask for the same one.
std::shared_ptr<const DataSplits> load_data_cached(const DataConfig& config, uint64_t seed) {
  static std::string cached_key;
  static std::shared_ptr<const DataSplits> cached;
  const std::string key = json_hash(Json{{"data", config}, {"seed", seed}});
  if (!cached || cached_key != key) {
    cached.reset();  // free the old copy before loading the new one
    cached = std::make_shared<const DataSplits>(load_data(config, seed));
    cached_key = key;
  }
  return cached;
}

Json model_metadata(const GraphModule& model, const DataSplits& data, const Task& task, double test_accuracy) {
  const Shape& in = data.input_shape;
  return Json{{"format_version", 1},
              {"kind", task.kind},
              {"input_shape", {in.channels, in.height, in.width}},
              {"input_range", "pixels scaled to [0, 1], then (x - mean) / std per channel"},
              {"mean", data.mean},
              {"std", data.std},
              {"class_names", data.class_names},
              {"num_classes", data.class_names.size()},
              {"dataset_id", data.id},
              {"params", count_params(model->graph())},
              {"macs", count_macs(model->graph())},
              {"test_accuracy", test_accuracy},
              {"baseline_hash", baseline_hash(task.config)},
              {"quantized_engine", "none"},
              {"precision", "fp32"},
              // Where it was trained, and where the in-process latency of its artifact is measured: the CPU of the
              // worker rank, as a stand-in for an edge CPU (a cluster GPU's latency says nothing about a board).
              {"trained_on", device_name(task_device::current())},
              {"latency_measured_on", fmt::format("cpu ({} thread(s))", std::max<int64_t>(1, task.threads))}};
}

/// Saves `model` (or, when given, the `scripted` module a quantize stage made of it) under
/// results_dir/artifacts/<sha256>.pt and describes it.
ArtifactRecord write_artifact(const GraphModule& model, Json metadata, const Task& task, const std::string& kind,
                              const ScriptedModel* scripted = nullptr) {
  const fs::path dir = fs::path(task.results_dir) / "artifacts";
  fs::create_directories(dir);
  const fs::path staging = dir / fmt::format("staging-{}-{}.pt", task.kind, task.trial_id);
  if (scripted) {
    metadata["precision"] = scripted->precision;
    metadata["quantized_engine"] = scripted->engine;
    save_scripted_model(*scripted, metadata, staging);
  } else {
    save_torchscript(model, metadata, staging);
  }
  ArtifactRecord record;
  record.kind = kind;
  record.sha256 = sha256_file(staging);
  record.path = (fs::path("artifacts") / (record.sha256 + ".pt")).string();
  fs::rename(staging, fs::path(task.results_dir) / record.path);
  record.bytes = static_cast<int64_t>(fs::file_size(fs::path(task.results_dir) / record.path));
  record.params = count_params(model->graph());
  record.macs = count_macs(model->graph());
  record.metadata = metadata;
  return record;
}

/// The artifact's size compressed with zstd: what zeroed (pruned) weights save in storage and download, while
/// dense inference runs the same work.
int64_t compressed_artifact_size(const Task& task, const ArtifactRecord& artifact) {
  return compressed_file_size(fs::path(task.results_dir) / artifact.path);
}

fs::path cache_file(const Task& task, const std::string& extension) {
  return fs::path(task.cache_dir) / (baseline_hash(task.config) + extension);
}

/// A baseline from the cache: the archive and its sidecar (metrics, sha256), when both are there and agree.
bool take_cached_baseline(const Task& task, TaskResult& result) {
  if (task.cache_dir.empty()) return false;
  const fs::path model_path = cache_file(task, ".pt");
  const fs::path sidecar_path = cache_file(task, ".json");
  if (!fs::exists(model_path) || !fs::exists(sidecar_path)) return false;
  try {
    std::ifstream in(sidecar_path);
    const Json sidecar = Json::parse(in);
    const std::string sha = sha256_file(model_path);
    if (sidecar.at("sha256").get<std::string>() != sha) {
      spdlog::warn("cached baseline '{}' does not match its recorded sha256; training it again", model_path.string());
      return false;
    }
    const fs::path target = fs::path(task.results_dir) / "artifacts" / (sha + ".pt");
    fs::create_directories(target.parent_path());
    if (!fs::exists(target) || sha256_file(target) != sha) {
      fs::copy_file(model_path, target, fs::copy_options::overwrite_existing);
    }
    ArtifactRecord record = sidecar.at("artifact").get<ArtifactRecord>();
    record.path = (fs::path("artifacts") / (sha + ".pt")).string();
    result.artifacts.push_back(record);
    result.metrics = sidecar.at("metrics").get<std::vector<Metric>>();
    result.cached = true;
    return true;
  } catch (const std::exception& e) {
    spdlog::warn("cached baseline '{}' is unreadable ({}); training it again", model_path.string(), e.what());
    return false;
  }
}

void store_in_cache(const Task& task, const TaskResult& result) {
  if (task.cache_dir.empty()) return;
  try {
    fs::create_directories(task.cache_dir);
    const ArtifactRecord& artifact = result.artifacts.front();
    const fs::path partial = cache_file(task, ".pt.partial");
    fs::copy_file(fs::path(task.results_dir) / artifact.path, partial, fs::copy_options::overwrite_existing);
    fs::rename(partial, cache_file(task, ".pt"));
    write_file_atomically(cache_file(task, ".json"), Json{{"sha256", artifact.sha256},
                                                          {"artifact", artifact},
                                                          {"metrics", result.metrics},
                                                          {"config", task.config}}
                                                         .dump(2));
    spdlog::info("baseline {} cached as '{}'", task.trial_id, cache_file(task, ".pt").string());
  } catch (const std::exception& e) {
    spdlog::warn("cannot write the baseline cache in '{}': {}", task.cache_dir, e.what());
  }
}

// Shared pipeline prefixes. Trials of one sweep often differ only in their last stages (the compression menu's three
// quantize modes follow the same prune and distill stages). After each stage but the last, a trial keeps its model
// under results_dir/prefixes/<key>.pt with a sidecar <key>.json: the metrics recorded so far, the epochs run, whether
// zero weights are held, and the archive's sha256. The key is the hash of everything the first k stages depend on
// (baseline archive, data, seed, model, the k stages' parameters, and the names of all stages, which some stages'
// metric names follow). A later trial with the same key starts after stage k; stages are seeded by the trial's seed
// and their position, so it computes what it would have computed from the start.

/// What a trial starting after the first `stages` stages needs.
struct PrefixState {
  size_t stages = 0;
  GraphModule model{nullptr};
  std::vector<Metric> metrics;
  int64_t epoch_offset = 0;
  bool keep_zero_weights = false;
};

std::string prefix_key(const Task& task, size_t stages) {
  TrialConfig config = task.config;
  Json names = Json::array();
  for (const StageConfig& stage : config.pipeline) names.push_back(stage.stage);
  // A stage in the trial's learning-rate span trains on a schedule as long as the span, which later stages set.
  const double span = trial_span_epochs(config.pipeline);
  config.pipeline.resize(stages);
  Json key{{"format", 1}, {"baseline_sha256", task.baseline_sha256}, {"config", config}, {"stage_names", names}};
  if (trial_span_epochs(config.pipeline) > 0) key["lr_span_epochs"] = span;
  return json_hash(key);
}

fs::path prefix_file(const Task& task, const std::string& key, const std::string& extension) {
  return fs::path(task.results_dir) / "prefixes" / (key + extension);
}

/// The model a trial kept after the first `stages` stages, if it is there and intact.
std::optional<PrefixState> read_prefix(const Task& task, size_t stages) {
  const std::string key = prefix_key(task, stages);
  const fs::path model_path = prefix_file(task, key, ".pt");
  const fs::path sidecar_path = prefix_file(task, key, ".json");
  if (!fs::exists(model_path) || !fs::exists(sidecar_path)) return std::nullopt;
  try {
    std::ifstream in(sidecar_path);
    const Json sidecar = Json::parse(in);
    if (sidecar.at("sha256").get<std::string>() != sha256_file(model_path)) {
      spdlog::warn("kept stages '{}' do not match their recorded sha256; not used", model_path.string());
      return std::nullopt;
    }
    PrefixState state;
    state.stages = stages;
    state.model = load_graph_module(model_path).model;
    state.metrics = sidecar.at("metrics").get<std::vector<Metric>>();
    state.epoch_offset = sidecar.at("epoch_offset").get<int64_t>();
    state.keep_zero_weights = sidecar.at("keep_zero_weights").get<bool>();
    return state;
  } catch (const std::exception& e) {
    spdlog::warn("kept stages '{}' are unreadable ({}); not used", model_path.string(), e.what());
    return std::nullopt;
  }
}

/// The longest prefix of the trial's pipeline (before its last stage) kept by an earlier trial, if any. In a
/// data-parallel group the leader looks and the others start where it starts (another group may keep a longer
/// prefix meanwhile).
std::optional<PrefixState> take_prefix(const Task& task) {
  std::optional<PrefixState> found;
  if (group_task::leader()) {
    for (size_t stages = task.config.pipeline.size() - 1; stages >= 1 && !found; --stages) {
      found = read_prefix(task, stages);
    }
  }
  const auto stages = static_cast<size_t>(group_task::leader_value(found ? static_cast<int64_t>(found->stages) : 0));
  if (group_task::leader() || stages == 0) return found;
  found = read_prefix(task, stages);
  check(found.has_value(), "the group's leader starts after stage {} from '{}', which this rank cannot read",
        stages - 1, prefix_file(task, prefix_key(task, stages), ".pt").string());
  return found;
}

/// Keeps the model after the first `stages` stages for later trials; a failure to write only costs the reuse.
void keep_prefix(const Task& task, size_t stages, const GraphModule& model, const StageContext& context) {
  try {
    const std::string key = prefix_key(task, stages);
    fs::create_directories(prefix_file(task, key, ".pt").parent_path());
    const fs::path staging = prefix_file(task, key, fmt::format(".pt.partial-{}", task.trial_id));
    save_torchscript(model, Json{{"precision", "fp32"}, {"kind", "prefix"}, {"stages", stages}}, staging);
    const std::string sha = sha256_file(staging);
    fs::rename(staging, prefix_file(task, key, ".pt"));
    const fs::path sidecar = prefix_file(task, key, fmt::format(".json.partial-{}", task.trial_id));
    {
      std::ofstream out(sidecar);
      out << Json{{"sha256", sha},
                  {"metrics", *context.metrics},
                  {"epoch_offset", context.epoch_offset},
                  {"keep_zero_weights", context.keep_zero_weights},
                  {"trial_id", task.trial_id},
                  {"stages", stages}}
                 .dump();
      if (!out) throw Error("write failed");
    }
    fs::rename(sidecar, prefix_file(task, key, ".json"));
  } catch (const std::exception& e) {
    spdlog::warn("trial {}: cannot keep its first {} stage(s) for reuse: {}", task.trial_id, stages, e.what());
  }
}

void run_baseline(const Task& task, TaskResult& result) {
  const bool cached = group_task::leader() && take_cached_baseline(task, result);
  if (group_task::leader_value(cached ? 1 : 0) != 0) return;
  const auto data = load_data_cached(task.config.data, task.config.data.splits_seed(task.config.seed));
  torch::manual_seed(task.config.seed);
  const auto classes = static_cast<int64_t>(data->class_names.size());
  GraphModule model = task.config.model.arch == "torchscript"
                          ? import_model(task.config.model, data->input_shape, classes)
                          : GraphModule(build_model(task.config.model, data->input_shape, classes));
  const BaselineConfig& baseline = task.config.baseline;
  if (!baseline.init.empty()) {
    initialize_from_archive(model, baseline.init, baseline.init_sha256, data->class_names);
    spdlog::info("baseline {} starts from the weights of '{}'", task.trial_id, baseline.init);
  }
  std::vector<Metric> metrics;
  StageContext context{*data, task.config, GraphModule(nullptr), -1, 0, &metrics};
  StageConfig stage{"train", Json(static_cast<const TrainConfig&>(baseline))};
  stage.params["reinitialize"] = false;
  task_progress::begin_stage("train", 0, 1);
  model = find_stage("train")(model, stage, context);
  if (!group_task::leader()) return;  // the group's leader evaluates, exports and reports
  const task_group::Scope alone(nullptr);
  const double accuracy = evaluate_accuracy(model, data->test, data->mean, data->std, task.eval_batch_size);
  metrics.push_back({-1, "test_accuracy", accuracy});
  metrics.push_back({-1, "params", static_cast<double>(count_params(model->graph()))});
  metrics.push_back({-1, "macs", static_cast<double>(count_macs(model->graph()))});
  const ArtifactRecord artifact = write_artifact(model, model_metadata(model, *data, task, accuracy), task, "baseline");
  metrics.push_back({-1, "model_bytes", static_cast<double>(artifact.bytes)});
  metrics.push_back({-1, "compressed_bytes", static_cast<double>(compressed_artifact_size(task, artifact))});
  for (Metric& m : measure_artifact_latency(fs::path(task.results_dir) / artifact.path, data->input_shape,
                                            task.latency_seconds, task.threads)) {
    metrics.push_back(std::move(m));
  }
  result.metrics = std::move(metrics);
  result.artifacts.push_back(artifact);
  store_in_cache(task, result);
}

void run_trial(const Task& task, TaskResult& result) {
  const auto data = load_data_cached(task.config.data, task.config.data.splits_seed(task.config.seed));
  const fs::path baseline_path = fs::path(task.results_dir) / task.baseline_path;
  const std::string sha = sha256_file(baseline_path);
  check(sha == task.baseline_sha256, "baseline '{}' has sha256 {}, the store recorded {}", baseline_path.string(), sha,
        task.baseline_sha256);
  LoadedModel baseline = load_graph_module(baseline_path);
  const double baseline_accuracy = baseline.metadata.value("test_accuracy", -1.0);
  // Trials start from a copy of the baseline, which stays untouched as the teacher (on the task's device).
  GraphModule model = clone_graph_module(baseline.model);
  const DevicePlacement teacher_on_device(task_device::current(), {baseline.model.get()});
  std::vector<Metric> metrics;
  StageContext context{*data, task.config, baseline.model, 0, 0, &metrics};
  check_quantize_pipeline(task.config);  // before any stage trains
  const size_t stages = task.config.pipeline.size();
  size_t first = 0;
  if (stages > 1) {
    if (std::optional<PrefixState> kept = take_prefix(task)) {
      first = kept->stages;
      model = kept->model;
      metrics = std::move(kept->metrics);
      context.epoch_offset = kept->epoch_offset;
      context.keep_zero_weights = kept->keep_zero_weights;
      spdlog::info("trial {}: stages 0-{} are those of an earlier trial; starting at stage {}", task.trial_id,
                   first - 1, first);
    }
  }
  for (size_t i = first; i < stages; ++i) {
    const StageConfig& stage = task.config.pipeline[i];
    context.stage_index = static_cast<int>(i);
    task_progress::begin_stage(stage.stage, static_cast<int64_t>(i), static_cast<int64_t>(stages));
    try {
      model = find_stage(stage.stage)(model, stage, context);
    } catch (...) {
      rethrow_with_context(fmt::format("stage {} ({})", i, stage.stage));
    }
    if (i + 1 < stages && !context.scripted && group_task::leader()) keep_prefix(task, i + 1, model, context);
  }
  if (!group_task::leader()) return;  // the group's leader evaluates, exports and reports
  const task_group::Scope alone(nullptr);
  metrics.push_back({-1, "reused_stages", static_cast<double>(first)});
  ScriptedModel* scripted = context.scripted.get();
  const double accuracy =
      scripted ? evaluate_scripted_accuracy(*scripted, data->test, data->mean, data->std, task.eval_batch_size)
               : evaluate_accuracy(model, data->test, data->mean, data->std, task.eval_batch_size);
  const ArtifactRecord artifact =
      write_artifact(model, model_metadata(model, *data, task, accuracy), task, "model", scripted);
  // A quantized artifact's weights are repacked for the engine active when it is loaded.
  std::unique_ptr<QEngineGuard> engine;
  if (scripted && scripted->engine != "none") {
    engine = std::make_unique<QEngineGuard>(engine_from_name(scripted->engine));
  }
  metrics.push_back({-1, "test_accuracy", accuracy});
  metrics.push_back({-1, "baseline_test_accuracy", baseline_accuracy});
  metrics.push_back({-1, "accuracy_drop", baseline_accuracy - accuracy});
  metrics.push_back({-1, "params", static_cast<double>(artifact.params)});
  metrics.push_back({-1, "macs", static_cast<double>(artifact.macs)});
  metrics.push_back({-1, "model_bytes", static_cast<double>(artifact.bytes)});
  metrics.push_back({-1, "compressed_bytes", static_cast<double>(compressed_artifact_size(task, artifact))});
  for (Metric& m : measure_artifact_latency(fs::path(task.results_dir) / artifact.path, data->input_shape,
                                            task.latency_seconds, task.threads)) {
    metrics.push_back(std::move(m));
  }
  result.metrics = std::move(metrics);
  result.artifacts.push_back(artifact);
}

}  // namespace

TaskResult run_task(const Task& task) {
  const auto start = std::chrono::steady_clock::now();
  TaskResult result;
  result.trial_id = task.trial_id;
  // A data-parallel group stops together when its leader is past the limit (at a step's or an evaluation's exchange).
  task_progress::begin_task(task.trial_id, task.timeout_seconds, task_group::current() == nullptr);
  try {
    const ThreadSettings threads = set_task_threads(task.threads);
    const task_device::Scope on_device(resolve_device(task.device), task.memory_format);
    if (task.kind == "baseline") {
      run_baseline(task, result);
    } else if (task.kind == "trial") {
      run_trial(task, result);
    } else {
      throw Error(fmt::format("unknown task kind '{}'", task.kind));
    }
    if (!result.metrics.empty() && !result.cached) {  // the leader's report: the threads its work ran with
      result.metrics.push_back({-1, "threads", static_cast<double>(threads.intra_op)});
      if (threads.allowed_cpus > 0) {
        result.metrics.push_back({-1, "allowed_cpus", static_cast<double>(threads.allowed_cpus)});
      }
      result.metrics.push_back({-1, "openmp_threads", static_cast<double>(threads.openmp)});
      if (threads.blas >= 0) result.metrics.push_back({-1, "blas_threads", static_cast<double>(threads.blas)});
    }
    result.ok = true;
  } catch (const TrialTimeout& e) {
    result.ok = false;
    result.error = fmt::format("{} (reached {})", e.what(), describe(task_progress::snapshot()));
  } catch (const c10::Error& e) {
    result.ok = false;
    result.error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    result.ok = false;
    result.error = e.what();
  }
  task_progress::end_task();
  if (!result.ok) {
    result.metrics.clear();
    result.artifacts.clear();
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace edgesweep
