// The compression table: every finished trial of an experiment (its stages and methods), with accuracy, size and
// the latency of its exported model at batch 1 and 32, re-measured here one model at a time so that no other work
// shares the cores. Writes a Markdown file; speed-ups and size ratios are against the experiment's baseline.
//
// Models are measured in `rounds` interleaved rounds (every model once per round), and each figure is the median of
// its rounds, so that a slow spell of the machine does not fall on one model only. Many short rounds (the default:
// 20 of 0.5 s per batch size) follow such spells more closely than a few long ones.
//
// `--form` says what is timed: the archive as loaded (the default, what a device agent runs), or it frozen or
// optimized for inference first (see InferenceForm), which is what a LibTorch deployment may do before serving.
//
//   bench_compression_table DATABASE OUTPUT.md [--experiment NAME] [--seconds S] [--threads T] [--rounds R]
//                           [--form archive|frozen|optimized]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <torch/script.h>

#include "edgesweep/common/error.h"
#include "edgesweep/orchestrator/store.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/measure_latency.h"

#include "bench_report.h"

namespace fs = std::filesystem;
using namespace edgesweep;

namespace {

/// One model of the table.
struct Row {
  int64_t trial_id = 0;
  std::string kind;
  std::string method;
  std::map<std::string, double> metrics;
  ArtifactRow artifact;
  double b1_ms = 0, b32_ms = 0, b1_p90_ms = 0, b32_p90_ms = 0;  ///< medians over the rounds
  std::map<std::string, std::vector<double>> rounds;              ///< each latency metric, one value per round
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

double value_or(const std::map<std::string, double>& metrics, const std::string& name, double fallback) {
  auto it = metrics.find(name);
  return it == metrics.end() ? fallback : it->second;
}

std::string number(double x, int decimals) { return fmt::format("{:.{}f}", x, decimals); }

/// A trial's stages with the settings that tell methods apart, e.g. "prune block 0.3 (iterative) → quantize
/// static-int8".
std::string describe_pipeline(const Json& config) {
  std::string text;
  for (const Json& stage : config.value("pipeline", Json::array())) {
    const std::string name = stage.value("stage", "");
    std::string part = name;
    if (name == "prune") {
      part = fmt::format("prune {} {}", stage.value("method", ""), stage.value("sparsity", 0.0));
      if (stage.value("schedule", "") != "one-shot") part += fmt::format(" ({})", stage.value("schedule", ""));
      if (stage.value("distill", false)) part += " +KD";
    } else if (name == "distill") {
      part = fmt::format("distill T={} α={}", stage.value("temperature", 0.0), stage.value("alpha", 0.0));
      if (!stage.value("hint_layer", std::string()).empty()) part += " +hint";
    } else if (name == "quantize") {
      part = "quantize " + stage.value("mode", std::string());
      if (stage.value("mode", std::string()) != "none") part += " " + stage.value("engine", std::string());
    }
    text += (text.empty() ? "" : " → ") + part;
  }
  return text.empty() ? "baseline" : text;
}

void measure(Row& row, const fs::path& results_dir, double seconds, int64_t threads, InferenceForm form) {
  const Json& meta = row.artifact.metadata;
  const std::string engine = meta.value("quantized_engine", std::string("none"));
  std::unique_ptr<QEngineGuard> guard;
  if (engine != "none") guard = std::make_unique<QEngineGuard>(engine_from_name(engine));
  const Json shape = meta.at("input_shape");
  const Shape input{shape.at(0).get<int64_t>(), shape.at(1).get<int64_t>(), shape.at(2).get<int64_t>(), false};
  for (const Metric& m : measure_artifact_latency(results_dir / row.artifact.path, input, seconds, threads, form)) {
    row.rounds[m.name].push_back(m.value);
  }
  row.b1_ms = median(row.rounds["latency_b1_ms"]);
  row.b32_ms = median(row.rounds["latency_b32_ms"]);
  row.b1_p90_ms = median(row.rounds["latency_b1_p90_ms"]);
  row.b32_p90_ms = median(row.rounds["latency_b32_p90_ms"]);
}

int run(int argc, char** argv) {
  check_input(argc >= 3, "usage: bench_compression_table DATABASE OUTPUT.md [--experiment NAME] [--seconds S] "
                         "[--threads T] [--rounds R] [--form archive|frozen|optimized]");
  const fs::path database = argv[1];
  const fs::path output = argv[2];
  std::string experiment_name;
  double seconds = 0.5;
  int64_t rounds = 20;
  int64_t threads = static_cast<int64_t>(std::thread::hardware_concurrency());
  InferenceForm form = InferenceForm::Archive;
  for (int i = 3; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--experiment") experiment_name = argv[i + 1];
    else if (flag == "--seconds") seconds = std::stod(argv[i + 1]);
    else if (flag == "--threads") threads = std::stoll(argv[i + 1]);
    else if (flag == "--rounds") rounds = std::stoll(argv[i + 1]);
    else if (flag == "--form") form = inference_form_from_name(argv[i + 1]);
    else throw InputError(fmt::format("unknown option '{}'", flag));
  }
  const Store store = Store::open(database, Store::Mode::ReadOnly);
  const std::vector<ExperimentRow> experiments = store.experiments();
  check_input(!experiments.empty(), "'{}' holds no experiment", database.string());
  ExperimentRow experiment = experiments.front();
  for (const ExperimentRow& e : experiments) {
    if (e.name == experiment_name) experiment = e;
  }
  check_input(experiment_name.empty() || experiment.name == experiment_name, "'{}' holds no experiment '{}'",
              database.string(), experiment_name);
  const fs::path results_dir = database.parent_path();

  std::vector<Row> rows;
  for (const TrialRow& trial : store.trials(experiment.id)) {
    if (trial.status != TrialStatus::Done) continue;
    const std::vector<ArtifactRow> artifacts = store.artifacts(trial.id);
    if (artifacts.empty()) continue;
    Row row;
    row.trial_id = trial.id;
    row.kind = trial.kind;
    row.method = trial.kind == "baseline" ? fmt::format("baseline {}", trial.config.at("model").value("arch", ""))
                                          : fmt::format("{}: {}", trial.config.at("model").value("arch", ""),
                                                        describe_pipeline(trial.config));
    for (const MetricRow& m : store.metrics(trial.id)) {
      if (m.step == -1) row.metrics[m.name] = m.value;
    }
    row.artifact = artifacts.back();
    rows.push_back(std::move(row));
  }
  check_input(!rows.empty(), "experiment '{}' in '{}' has no finished trial with a model", experiment.name,
              database.string());
  check_input(rounds >= 1, "--rounds must be at least 1, got {}", rounds);
  for (int64_t round = 1; round <= rounds; ++round) {
    for (Row& row : rows) {
      fmt::print(stderr, "round {}/{}: measuring trial {} ({})\n", round, rounds, row.trial_id, row.method);
      measure(row, results_dir, seconds, threads, form);
    }
  }

  // Each trial compares with the baseline of its own architecture.
  std::map<std::string, const Row*> baselines;
  std::vector<std::string> arch_of(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const Json config = store.trial(rows[i].trial_id)->config;
    arch_of[i] = config.at("model").value("arch", "") + "|" + config.at("model").at("width").dump();
    if (rows[i].kind == "baseline") baselines[arch_of[i]] = &rows[i];
  }

  std::string text = fmt::format(
      "# Compression table: experiment '{}'\n\n"
      "Made by `bench_compression_table {} ...` (as bench/run_compression_table and bench/run_seeds run it). Accuracy, drop, params, MACs and "
      "sizes are what the run recorded (top-1 on the test split; drop against the trial's baseline; compressed = "
      "zstd of the archive). Latency: the exported TorchScript archive loaded with torch::jit::load, {}, and timed here "
      "one model at a time, {} thread(s), allocator policy '{}' (common/allocator.h), {} s per batch size, random "
      "inputs, in {} interleaved rounds; median (p90), each the median over the rounds. Speed-up and size ratio are against the baseline of the same "
      "architecture.\n\n"
      "| trial | method | test acc % | drop | params | MACs | bytes | zstd bytes | × smaller | b1 ms (p90) | "
      "b32 ms (p90) | b1 speed-up | b32 speed-up |\n"
      "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
      experiment.name, database.filename().string(),
      form == InferenceForm::Archive  ? "run as loaded"
      : form == InferenceForm::Frozen ? "frozen with torch::jit::freeze"
                                      : "optimized with torch::jit::optimize_for_inference",
      threads, allocator_policy(), seconds, rounds);
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& row = rows[i];
    const Row* base = baselines.count(arch_of[i]) ? baselines[arch_of[i]] : nullptr;
    const double bytes = static_cast<double>(row.artifact.bytes);
    const auto ratio = [](double a, double b) { return b > 0 ? fmt::format("{:.2f}", a / b) : std::string("-"); };
    text += fmt::format(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) | {} | {} |\n", row.trial_id, row.method,
        number(value_or(row.metrics, "test_accuracy", -1), 2),
        row.kind == "baseline" ? std::string("") : number(value_or(row.metrics, "accuracy_drop", 0), 2),
        row.artifact.params, row.artifact.macs, row.artifact.bytes,
        static_cast<int64_t>(value_or(row.metrics, "compressed_bytes", -1)),
        base ? ratio(static_cast<double>(base->artifact.bytes), bytes) : "-", number(row.b1_ms, 3),
        number(row.b1_p90_ms, 3), number(row.b32_ms, 2), number(row.b32_p90_ms, 2),
        base ? ratio(base->b1_ms, row.b1_ms) : "-", base ? ratio(base->b32_ms, row.b32_ms) : "-");
  }
  bench::write_report(output, text);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return edgesweep::bench::main_of(run, argc, argv); }
