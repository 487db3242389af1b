// The candidates of an experiment read from the store: the newest artifact of each done trial, per device that
// measured it at the batch size asked (and the in-process latency of the worker), with the metrics a choice is made
// on and the trial's swept settings.
#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/trial_config.h"
#include "edgesweep/orchestrator/pareto.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {

namespace {

/// The swept settings of a trial config, label -> value, from the experiment's dimensions.
Json swept_settings(const std::vector<SweepDimension>& dimensions, const Json& config) {
  Json settings = Json::object();
  for (const SweepDimension& d : dimensions) {
    const Json::json_pointer pointer(d.pointer);
    if (config.contains(pointer)) settings[d.label] = config.at(pointer);
  }
  return settings;
}

void put(std::map<std::string, double>& values, const std::string& name, double value) {
  if (!std::isnan(value)) values[name] = value;
}

void put_metric(std::map<std::string, double>& values, const std::map<std::string, double>& metrics,
                const std::string& from, const std::string& to) {
  auto it = metrics.find(from);
  if (it != metrics.end()) put(values, to, it->second);
}

}  // namespace

std::vector<Candidate> load_candidates(const Store& store, int64_t experiment_id, int64_t batch) {
  std::vector<SweepDimension> dimensions;
  for (const ExperimentRow& e : store.experiments()) {
    if (e.id != experiment_id) continue;
    try {
      dimensions = parse_spec_string(e.spec_text, e.name + ".toml").dimensions;
    } catch (const std::exception&) {
      // A spec this version cannot read: candidates without their swept settings.
    }
  }
  std::map<int64_t, std::vector<MeasurementRow>> measured;  // artifact id -> its measurements
  for (MeasurementRow& m : store.measurements(experiment_id)) measured[m.artifact_id].push_back(std::move(m));

  struct Done {
    TrialRow trial;
    ArtifactRow artifact;
    std::map<std::string, double> metrics;
  };
  std::vector<Done> done;
  std::map<std::string, size_t> baseline_by_hash;  // baseline config hash -> index in `done`
  for (TrialRow& t : store.trials(experiment_id)) {
    if (t.status != TrialStatus::Done) continue;
    std::vector<ArtifactRow> artifacts = store.artifacts(t.id);
    if (artifacts.empty()) continue;
    Done d{std::move(t), std::move(artifacts.back()), {}};
    for (const MetricRow& m : store.metrics(d.trial.id)) {
      if (m.step == -1) d.metrics[m.name] = m.value;
    }
    if (d.trial.kind == "baseline") baseline_by_hash[d.trial.config_hash] = done.size();
    done.push_back(std::move(d));
  }

  /// The on-device accuracy of a baseline on `device`: at this batch size when measured there, else any batch.
  const auto baseline_accuracy = [&](const Done& baseline, const std::string& device) {
    double any = std::numeric_limits<double>::quiet_NaN();
    auto it = measured.find(baseline.artifact.id);
    if (it == measured.end()) return any;
    for (const MeasurementRow& m : it->second) {
      if (m.device != device || std::isnan(m.accuracy)) continue;
      if (m.batch == batch) return m.accuracy;
      if (std::isnan(any)) any = m.accuracy;
    }
    return any;
  };

  std::vector<Candidate> candidates;
  for (const Done& d : done) {
    const Done* baseline = d.trial.kind == "baseline" ? &d : nullptr;
    if (baseline == nullptr) {
      try {
        auto it = baseline_by_hash.find(baseline_hash(d.trial.config.get<TrialConfig>()));
        if (it != baseline_by_hash.end()) baseline = &done[it->second];
      } catch (const std::exception&) {
        // A config this version cannot read: no baseline to compare with on the device.
      }
    }
    Candidate base;
    base.trial_id = d.trial.id;
    base.artifact_id = d.artifact.id;
    base.batch = batch;
    base.kind = d.trial.kind;
    if (d.trial.kind != "baseline") base.settings = swept_settings(dimensions, d.trial.config);
    put_metric(base.values, d.metrics, "test_accuracy", "accuracy");
    if (d.trial.kind == "baseline") {
      base.values["accuracy_drop"] = 0;
    } else {
      put_metric(base.values, d.metrics, "accuracy_drop", "accuracy_drop");
    }
    for (const char* name : {"model_bytes", "compressed_bytes", "params", "macs"}) {
      put_metric(base.values, d.metrics, name, name);
    }
    if (base.values.count("model_bytes") == 0) put(base.values, "model_bytes", static_cast<double>(d.artifact.bytes));
    if (base.values.count("params") == 0) put(base.values, "params", static_cast<double>(d.artifact.params));
    if (base.values.count("macs") == 0) put(base.values, "macs", static_cast<double>(d.artifact.macs));

    // The worker's own in-process latency at batch 1 and 32.
    if (batch == 1 || batch == 32) {
      const std::string prefix = fmt::format("latency_b{}", batch);
      if (d.metrics.count(prefix + "_ms") != 0) {
        Candidate c = base;
        c.device = in_process_device;
        put_metric(c.values, d.metrics, prefix + "_ms", "latency_p50_ms");
        put_metric(c.values, d.metrics, prefix + "_p90_ms", "latency_p90_ms");
        candidates.push_back(std::move(c));
      }
    }

    auto it = measured.find(d.artifact.id);
    if (it == measured.end()) continue;
    std::set<std::string> seen;  // the newest measurement per device counts
    for (auto m = it->second.rbegin(); m != it->second.rend(); ++m) {
      if (m->batch != batch || !seen.insert(m->device).second) continue;
      Candidate c = base;
      c.device = m->device;
      put(c.values, "latency_min_ms", m->latency_min_ms);
      put(c.values, "latency_mean_ms", m->latency_mean_ms);
      put(c.values, "latency_p50_ms", m->latency_p50_ms);
      put(c.values, "latency_p90_ms", m->latency_p90_ms);
      put(c.values, "latency_p99_ms", m->latency_p99_ms);
      put(c.values, "fps", m->fps);
      put(c.values, "peak_rss_mb", m->peak_rss_mb);
      if (!std::isnan(m->accuracy)) {
        c.values["accuracy"] = m->accuracy;
        const double reference = baseline != nullptr ? baseline_accuracy(*baseline, m->device)
                                                     : std::numeric_limits<double>::quiet_NaN();
        if (!std::isnan(reference)) c.values["accuracy_drop"] = reference - m->accuracy;
      }
      candidates.push_back(std::move(c));
    }
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& a, const Candidate& b) { return a.device < b.device; });
  return candidates;
}

}  // namespace edgesweep
