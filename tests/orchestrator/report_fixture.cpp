// The synthetic store of the report tests. Figures are made up but consistent: sparser and int8 models are smaller,
// faster and a little less accurate, so every plot has a real front.
#include "report_fixture.h"

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "edgesweep/common/trial_config.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep::report_test {

const char* const hostile_description = "<script>alert('owned')</script> & \"quotes\"";
const char* const hostile_device = "board<img src=x onerror=alert(1)>";

namespace {

std::string spec_text() {
  return fmt::format(R"toml([experiment]
name = "report-synthetic"
seed = 3
description = "{}"

[model]
arch = "small-cnn"

[baseline]
epochs = 3

[[pipeline]]
stage = "prune"
method = ["l1-filter", "magnitude-global"]
sparsity = [0.3, 0.6]
finetune_epochs = 2

[[pipeline]]
stage = "quantize"
mode = ["none", "static-int8"]
)toml",
                     std::string("<script>alert('owned')</script> & \\\"quotes\\\""));
}

void add_epochs(Store& store, int64_t trial_id, int64_t epochs, double start_loss, double end_accuracy) {
  std::vector<MetricRow> rows;
  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    const double t = static_cast<double>(epoch) / static_cast<double>(epochs);
    rows.push_back({trial_id, epoch, "train_loss", start_loss * (1.2 - 0.7 * t)});
    rows.push_back({trial_id, epoch, "val_accuracy", end_accuracy - 6.0 * (1.0 - t)});
    rows.push_back({trial_id, epoch, "lr", 0.05});
  }
  store.add_metrics(rows);
}

}  // namespace

SyntheticExperiment build_synthetic_store(const std::filesystem::path& path) {
  Store store = Store::open(path, Store::Mode::ReadWrite);
  const ExperimentSpec spec = parse_spec_string(spec_text(), "report-synthetic.toml");
  SyntheticExperiment made;
  made.experiment_id = store.create_experiment(spec.name, spec.text, spec.hash);

  const std::vector<TrialConfig> configs = expand_trials(spec);
  TrialConfig baseline_config = configs.front();
  baseline_config.pipeline.clear();
  const int64_t baseline = store.add_trial(made.experiment_id, "baseline", Json(baseline_config),
                                           baseline_hash(baseline_config));
  store.mark_running(baseline, 1);
  const double baseline_accuracy = 90.0;
  const double baseline_params = 421738, baseline_macs = 4241152, baseline_bytes = 1696495;
  store.add_metrics({{baseline, -1, "test_accuracy", baseline_accuracy},
                     {baseline, -1, "params", baseline_params},
                     {baseline, -1, "macs", baseline_macs},
                     {baseline, -1, "model_bytes", baseline_bytes},
                     {baseline, -1, "compressed_bytes", baseline_bytes * 0.92},
                     {baseline, -1, "latency_b1_ms", 1.0},
                     {baseline, -1, "latency_b32_ms", 8.1},
                     {baseline, -1, "seconds", 80.2}});
  add_epochs(store, baseline, 3, 0.9, baseline_accuracy);
  std::vector<int64_t> artifacts;
  artifacts.push_back(store.add_artifact({0, baseline, "baseline", "artifacts/base.pt", std::string(64, 'a'),
                                          static_cast<int64_t>(baseline_bytes), static_cast<int64_t>(baseline_params),
                                          static_cast<int64_t>(baseline_macs), "torchscript", Json::object()}));
  store.mark_done(baseline);

  for (size_t i = 0; i < configs.size(); ++i) {
    const TrialConfig& config = configs[i];
    const int64_t id = store.add_trial(made.experiment_id, "trial", Json(config), trial_hash(config));
    ++made.trials;
    store.mark_running(id, 1);
    if (i == configs.size() - 1) {
      store.mark_failed(id, "stage 1 (quantize): <b>calibration</b> failed & stopped");
      ++made.failed_trials;
      continue;
    }
    const double sparsity = config.pipeline[0].params.at("sparsity").get<double>();
    const bool structured = config.pipeline[0].params.at("method").get<std::string>() == "l1-filter";
    const bool int8 = config.pipeline[1].params.at("mode").get<std::string>() == "static-int8";
    const double keep = structured ? 1.0 - sparsity : 1.0;
    const double accuracy = baseline_accuracy - 3.0 * sparsity * sparsity - (int8 ? 0.3 : 0.0) - 0.1 * i;
    const double bytes = baseline_bytes * keep * (int8 ? 0.27 : 1.0);
    const double latency = 1.0 * keep * (int8 ? 0.3 : 1.0) + 0.01 * i;
    store.add_metrics({{id, -1, "test_accuracy", accuracy},
                       {id, -1, "baseline_test_accuracy", baseline_accuracy},
                       {id, -1, "accuracy_drop", baseline_accuracy - accuracy},
                       {id, -1, "params", std::round(baseline_params * keep)},
                       {id, -1, "macs", std::round(baseline_macs * keep)},
                       {id, -1, "model_bytes", std::round(bytes)},
                       {id, -1, "compressed_bytes", std::round(bytes * (structured ? 0.92 : 0.6))},
                       {id, -1, "latency_b1_ms", latency},
                       {id, -1, "latency_b32_ms", latency * 7.5},
                       {id, -1, "seconds", 30.0}});
    add_epochs(store, id, 2, 0.5, accuracy);
    artifacts.push_back(store.add_artifact({0, id, "model", fmt::format("artifacts/{}.pt", id), std::string(64, 'b'),
                                            static_cast<int64_t>(bytes), static_cast<int64_t>(baseline_params * keep),
                                            static_cast<int64_t>(baseline_macs * keep), "torchscript",
                                            Json::object()}));
    store.mark_done(id);
  }
  // Two devices: a fast one and a slow one with less memory; each measured every artifact at batch 1 and 32.
  const struct {
    const char* name;
    double slowdown;
    double memory_mb;
  } boards[] = {{"local-cpu", 1.0, 180.0}, {hostile_device, 3.5, 120.0}};
  for (const auto& board : boards) {
    DeviceRow device;
    device.name = board.name;
    device.address = "127.0.0.1:7070";
    device.hardware = Json{{"cpu", "Test CPU <b>9000</b>"}, {"cores", 2}, {"memory_mb", 24000}};
    const int64_t device_id = store.upsert_device(device);
    ++made.devices;
    for (size_t a = 0; a < artifacts.size(); ++a) {
      const ArtifactRow artifact = [&] {
        for (const TrialRow& trial : store.trials(made.experiment_id)) {
          for (const ArtifactRow& row : store.artifacts(trial.id)) {
            if (row.id == artifacts[a]) return row;
          }
        }
        return ArtifactRow{};
      }();
      double accuracy = baseline_accuracy;
      for (const MetricRow& m : store.metrics(artifact.trial_id)) {
        if (m.step == -1 && m.name == "test_accuracy") accuracy = m.value;
      }
      for (int64_t batch : {1, 32}) {
        MeasurementRow row;
        row.artifact_id = artifact.id;
        row.device_id = device_id;
        row.batch = batch;
        const double p50 = board.slowdown * static_cast<double>(batch) * 0.3 *
                           (0.2 + static_cast<double>(artifact.macs) / baseline_macs) * (1.0 + 0.02 * a);
        row.latency_min_ms = p50 * 0.9;
        row.latency_mean_ms = p50 * 1.02;
        row.latency_p50_ms = p50;
        row.latency_p90_ms = p50 * 1.1;
        row.latency_p99_ms = p50 * 1.3;
        row.latency_std_ms = p50 * 0.05;
        row.fps = 1000.0 * static_cast<double>(batch) / row.latency_mean_ms;
        row.peak_rss_mb = board.memory_mb * (0.5 + 0.5 * static_cast<double>(artifact.bytes) / baseline_bytes) - a;
        row.accuracy = accuracy - 0.05 * static_cast<double>(a % 3);
        row.raw = Json{{"runs", Json::array({p50, p50 * 1.1})}};
        store.add_measurement(row);
      }
    }
  }
  store.set_experiment_status(made.experiment_id, "failed");
  return made;
}

}  // namespace edgesweep::report_test
