// Pareto fronts and experiment exports as terminal tables, CSV and JSON.
#include "edgesweep/orchestrator/choice_tables.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>

#include "edgesweep/common/error.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {
namespace {

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string csv_line(const std::vector<std::string>& cells) {
  std::string line;
  for (size_t i = 0; i < cells.size(); ++i) line += (i ? "," : "") + csv_escape(cells[i]);
  return line + "\n";
}

/// Columns padded to their widest cell; numbers (`right[i]`) right-aligned.
std::string aligned(const std::vector<std::vector<std::string>>& rows, const std::vector<bool>& right,
                    const std::string& indent) {
  std::vector<size_t> widths(right.size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line = indent;
    for (size_t c = 0; c < row.size(); ++c) {
      const std::string pad(widths[c] - row[c].size(), ' ');
      line += (c ? "  " : "") + (right[c] ? pad + row[c] : row[c] + pad);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

/// A value for a table: whole numbers in full, others with 4 significant digits (1000 and more without decimals).
std::string short_number(double x) {
  if (std::isnan(x)) return "";
  if (std::isfinite(x) && (x == std::floor(x) || std::fabs(x) >= 1000)) return fmt::format("{:.0f}", x);
  return fmt::format("{:.4g}", x);
}

/// A value for CSV: the shortest text that reads back as the same double; empty for NaN.
std::string full_number(double x) { return std::isnan(x) ? std::string() : fmt::format("{}", x); }

std::string setting_text(const Json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

/// "label=value ..." of a settings object; "baseline" for a baseline.
std::string settings_line(const Json& settings, const std::string& kind) {
  if (kind == "baseline") return "baseline";
  std::string out;
  for (const auto& [label, value] : settings.items()) out += (out.empty() ? "" : " ") + label + "=" + setting_text(value);
  return out.empty() ? "(nothing swept)" : out;
}

/// The metrics shown for a front: the objectives, then the constraint metrics that are not objectives.
std::vector<std::string> shown_metrics(const ParetoOptions& options) {
  std::vector<std::string> metrics;
  const auto add = [&](const std::string& m) {
    if (std::find(metrics.begin(), metrics.end(), m) == metrics.end()) metrics.push_back(m);
  };
  for (const Objective& o : options.objectives) add(o.metric);
  for (const Constraint& c : options.constraints) add(c.metric);
  return metrics;
}

double value_of(const Candidate& c, const std::string& metric) {
  auto it = c.values.find(metric);
  return it == c.values.end() ? std::nan("") : it->second;
}

/// The swept dimensions of an experiment from its recorded spec; none when this version cannot read the spec.
std::vector<SweepDimension> recorded_dimensions(const Store& store, int64_t experiment_id) {
  for (const ExperimentRow& e : store.experiments()) {
    if (e.id != experiment_id) continue;
    try {
      return parse_spec_string(e.spec_text, e.name + ".toml").dimensions;
    } catch (const std::exception&) {
      return {};
    }
  }
  return {};
}

}  // namespace

std::string format_pareto(const std::vector<DeviceFront>& fronts, const ParetoOptions& options,
                          const std::string& format) {
  check_input(format == "table" || format == "csv" || format == "json", "unknown format '{}' (table, csv, json)",
              format);
  const std::vector<std::string> metrics = shown_metrics(options);
  if (format == "json") {
    Json out = Json::array();
    for (const DeviceFront& f : fronts) {
      Json objectives = Json::array();
      for (const Objective& o : options.objectives) {
        objectives.push_back({{"metric", o.metric}, {"maximize", o.maximize}});
      }
      Json constraints = Json::array();
      for (const Constraint& c : options.constraints) constraints.push_back(c.text);
      Json front = Json::array();
      for (size_t i : f.front) {
        const Candidate& c = f.feasible[i];
        front.push_back({{"trial_id", c.trial_id},
                         {"artifact_id", c.artifact_id},
                         {"kind", c.kind},
                         {"knee", f.knee == i},
                         {"settings", c.settings},
                         {"values", c.values}});
      }
      out.push_back({{"device", f.device},
                     {"batch", options.batch},
                     {"objectives", objectives},
                     {"constraints", constraints},
                     {"candidates", f.candidates},
                     {"feasible", f.feasible.size()},
                     {"rejected", f.rejected},
                     {"incomplete", f.incomplete},
                     {"front", front}});
    }
    return out.dump(2) + "\n";
  }
  if (format == "csv") {
    std::vector<std::string> header = {"device", "batch", "knee", "trial_id", "artifact_id", "kind", "settings"};
    header.insert(header.end(), metrics.begin(), metrics.end());
    std::string out = csv_line(header);
    for (const DeviceFront& f : fronts) {
      for (size_t i : f.front) {
        const Candidate& c = f.feasible[i];
        std::vector<std::string> row = {f.device,
                                        std::to_string(options.batch),
                                        f.knee == i ? "1" : "0",
                                        std::to_string(c.trial_id),
                                        std::to_string(c.artifact_id),
                                        c.kind,
                                        c.kind == "baseline" ? "" : settings_line(c.settings, c.kind)};
        for (const std::string& m : metrics) row.push_back(full_number(value_of(c, m)));
        out += csv_line(row);
      }
    }
    return out;
  }

  std::string objectives_text;
  for (const Objective& o : options.objectives) {
    objectives_text += (objectives_text.empty() ? "" : ", ") + std::string(o.maximize ? "max " : "min ") + o.metric;
  }
  std::string constraints_text;
  for (const Constraint& c : options.constraints) constraints_text += (constraints_text.empty() ? "" : "; ") + c.text;
  std::string out = fmt::format("objectives: {}; constraints: {}; batch {}; knee marked *\n", objectives_text,
                                constraints_text.empty() ? "none" : constraints_text, options.batch);
  if (fronts.empty()) {
    return out + fmt::format("no candidate at batch {}: no done trial has a measurement or an in-process latency "
                             "at this batch size\n",
                             options.batch);
  }
  for (const DeviceFront& f : fronts) {
    out += fmt::format("\ndevice {}: {} candidate(s), {} on the front", f.device, f.candidates, f.front.size());
    if (f.rejected > 0) out += fmt::format(", {} failing the constraints", f.rejected);
    if (f.incomplete > 0) out += fmt::format(", {} lacking a value of an objective or constraint metric", f.incomplete);
    out += "\n";
    if (f.front.empty()) {
      out += "  no feasible candidate\n";
      continue;
    }
    std::vector<std::vector<std::string>> rows;
    std::vector<std::string> header = {"", "trial", "settings"};
    header.insert(header.end(), metrics.begin(), metrics.end());
    rows.push_back(header);
    for (size_t i : f.front) {
      const Candidate& c = f.feasible[i];
      std::vector<std::string> row = {f.knee == i ? "*" : "", std::to_string(c.trial_id),
                                      settings_line(c.settings, c.kind)};
      for (const std::string& m : metrics) row.push_back(short_number(value_of(c, m)));
      rows.push_back(row);
    }
    std::vector<bool> right = {false, true, false};
    right.resize(header.size(), true);
    out += aligned(rows, right, "  ");
  }
  return out;
}

std::string format_export(const Store& store, int64_t experiment_id, const std::string& format) {
  check_input(format == "csv" || format == "json", "unknown export format '{}' (csv, json)", format);
  const std::vector<SweepDimension> dimensions = recorded_dimensions(store, experiment_id);
  std::map<int64_t, std::vector<MeasurementRow>> measured;  // artifact id -> its measurements
  for (MeasurementRow& m : store.measurements(experiment_id)) measured[m.artifact_id].push_back(std::move(m));
  const auto figures = [](const MeasurementRow& m) {
    return std::vector<std::pair<const char*, double>>{
        {"latency_min_ms", m.latency_min_ms}, {"latency_mean_ms", m.latency_mean_ms},
        {"latency_p50_ms", m.latency_p50_ms}, {"latency_p90_ms", m.latency_p90_ms},
        {"latency_p99_ms", m.latency_p99_ms}, {"latency_std_ms", m.latency_std_ms},
        {"fps", m.fps},                       {"peak_rss_mb", m.peak_rss_mb},
        {"accuracy", m.accuracy}};
  };
  const auto number_or_null = [](double x) { return std::isfinite(x) ? Json(x) : Json(nullptr); };

  struct TrialData {
    TrialRow trial;
    Json settings = Json::object();
    std::map<std::string, double> metrics;
    std::vector<ArtifactRow> artifacts;
  };
  std::vector<TrialData> trials;
  std::set<std::string> metric_names;
  for (TrialRow& t : store.trials(experiment_id)) {
    TrialData d;
    d.trial = std::move(t);
    for (const SweepDimension& dim : dimensions) {
      const Json::json_pointer pointer(dim.pointer);
      if (d.trial.kind != "baseline" && d.trial.config.contains(pointer)) d.settings[dim.label] = d.trial.config.at(pointer);
    }
    for (const MetricRow& m : store.metrics(d.trial.id)) {
      if (m.step != -1) continue;
      d.metrics[m.name] = m.value;
      metric_names.insert(m.name);
    }
    d.artifacts = store.artifacts(d.trial.id);
    trials.push_back(std::move(d));
  }

  if (format == "json") {
    Json experiment = Json::object();
    for (const ExperimentRow& e : store.experiments()) {
      if (e.id == experiment_id) {
        experiment = {{"id", e.id}, {"name", e.name}, {"status", e.status}, {"created", e.created},
                      {"spec_hash", e.spec_hash}, {"spec", e.spec_text}};
      }
    }
    Json devices = Json::array();
    for (const DeviceRow& d : store.devices()) {
      devices.push_back({{"id", d.id}, {"name", d.name}, {"address", d.address}, {"hardware", d.hardware},
                         {"last_seen", d.last_seen}});
    }
    Json rows = Json::array();
    for (const TrialData& d : trials) {
      Json metrics = Json::object();
      for (const auto& [name, value] : d.metrics) metrics[name] = number_or_null(value);
      Json artifacts = Json::array();
      for (const ArtifactRow& a : d.artifacts) {
        Json measurements = Json::array();
        auto it = measured.find(a.id);
        if (it != measured.end()) {
          for (const MeasurementRow& m : it->second) {
            Json row = {{"id", m.id}, {"device", m.device}, {"batch", m.batch}};
            for (const auto& [name, value] : figures(m)) row[name] = number_or_null(value);
            row["raw"] = m.raw;
            row["created"] = m.created;
            measurements.push_back(std::move(row));
          }
        }
        artifacts.push_back({{"id", a.id}, {"kind", a.kind}, {"path", a.path}, {"sha256", a.sha256},
                             {"bytes", a.bytes}, {"params", a.params}, {"macs", a.macs}, {"format", a.format},
                             {"metadata", a.metadata}, {"measurements", measurements}});
      }
      rows.push_back({{"id", d.trial.id},
                      {"kind", d.trial.kind},
                      {"status", to_string(d.trial.status)},
                      {"settings", d.settings},
                      {"metrics", metrics},
                      {"attempts", d.trial.attempts},
                      {"worker", d.trial.worker},
                      {"started", d.trial.started},
                      {"finished", d.trial.finished},
                      {"error", d.trial.error},
                      {"config", d.trial.config},
                      {"artifacts", artifacts}});
    }
    return Json{{"experiment", experiment}, {"devices", devices}, {"trials", rows}}.dump(2) + "\n";
  }

  std::vector<std::string> header = {"trial_id", "kind", "status"};
  for (const SweepDimension& dim : dimensions) header.push_back(dim.label);
  header.insert(header.end(), metric_names.begin(), metric_names.end());
  for (const char* column : {"artifact_id", "sha256", "device", "batch"}) header.push_back(column);
  for (const auto& [name, value] : figures(MeasurementRow{})) {
    header.push_back(std::string(name) == "accuracy" ? "device_accuracy" : name);
  }
  header.push_back("measured_at");
  std::string out = csv_line(header);
  for (const TrialData& d : trials) {
    std::vector<std::string> head = {std::to_string(d.trial.id), d.trial.kind, to_string(d.trial.status)};
    for (const SweepDimension& dim : dimensions) {
      head.push_back(d.settings.contains(dim.label) ? setting_text(d.settings[dim.label]) : "");
    }
    for (const std::string& name : metric_names) {
      auto it = d.metrics.find(name);
      head.push_back(it == d.metrics.end() ? "" : full_number(it->second));
    }
    bool any = false;
    for (const ArtifactRow& a : d.artifacts) {
      auto it = measured.find(a.id);
      if (it == measured.end()) continue;
      for (const MeasurementRow& m : it->second) {
        std::vector<std::string> row = head;
        for (const std::string& cell : {std::to_string(a.id), a.sha256, m.device, std::to_string(m.batch)}) {
          row.push_back(cell);
        }
        for (const auto& [name, value] : figures(m)) row.push_back(full_number(value));
        row.push_back(m.created);
        out += csv_line(row);
        any = true;
      }
    }
    if (!any) {
      std::vector<std::string> row = head;
      row.push_back(d.artifacts.empty() ? "" : std::to_string(d.artifacts.back().id));
      row.push_back(d.artifacts.empty() ? "" : d.artifacts.back().sha256);
      row.resize(header.size());
      out += csv_line(row);
    }
  }
  return out;
}

}  // namespace edgesweep
