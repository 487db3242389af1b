// Trial and status tables.
#include "edgesweep/orchestrator/tables.h"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/orchestrator/spec.h"
#include "unix_time.h"

namespace edgesweep {
namespace {

struct Column {
  std::string title;
  bool right_aligned;
};

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::string render(const std::vector<Column>& columns, const std::vector<std::vector<std::string>>& rows,
                   const std::string& format) {
  std::string out;
  if (format == "csv") {
    for (size_t c = 0; c < columns.size(); ++c) out += (c ? "," : "") + csv_escape(columns[c].title);
    out += "\n";
    for (const auto& row : rows) {
      for (size_t c = 0; c < row.size(); ++c) out += (c ? "," : "") + csv_escape(row[c]);
      out += "\n";
    }
    return out;
  }
  std::vector<size_t> widths;
  for (const Column& c : columns) widths.push_back(c.title.size());
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string pad(widths[c] - cells[c].size(), ' ');
      text += (c ? "  " : "") + (columns[c].right_aligned ? pad + cells[c] : cells[c] + pad);
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    return text + "\n";
  };
  std::vector<std::string> titles;
  for (const Column& c : columns) titles.push_back(c.title);
  out += line(titles);
  std::vector<std::string> rules;
  for (size_t w : widths) rules.push_back(std::string(w, '-'));
  out += line(rules);
  for (const auto& row : rows) out += line(row);
  return out;
}

/// The swept settings of a trial, "label=value" joined by spaces, from the experiment's recorded spec.
std::string swept_settings(const std::vector<SweepDimension>& dims, const Json& config) {
  std::string out;
  for (const SweepDimension& d : dims) {
    const Json::json_pointer pointer(d.pointer);
    if (!config.contains(pointer)) continue;
    const Json& v = config.at(pointer);
    out += (out.empty() ? "" : " ") + d.label + "=" + (v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

std::string number(const std::map<std::string, double>& metrics, const std::string& name, const char* pattern) {
  auto it = metrics.find(name);
  if (it == metrics.end()) return "";
  return fmt::format(fmt::runtime(pattern), it->second);
}

}  // namespace

std::string format_trials(const Store& store, int64_t experiment_id, const std::string& format,
                          const std::string& status) {
  check_input(format == "table" || format == "csv" || format == "json", "unknown format '{}' (table, csv, json)",
              format);
  std::vector<SweepDimension> dims;
  for (const ExperimentRow& e : store.experiments()) {
    if (e.id != experiment_id) continue;
    try {
      dims = parse_spec_string(e.spec_text, e.name + ".toml").dimensions;
    } catch (const std::exception&) {
      // A spec this version cannot read: show trials without their swept settings.
    }
  }
  Json json_rows = Json::array();
  std::vector<std::vector<std::string>> rows;
  for (const TrialRow& t : store.trials(experiment_id)) {
    if (!status.empty() && status != to_string(t.status)) continue;
    std::map<std::string, double> final_metrics;
    for (const MetricRow& m : store.metrics(t.id)) {
      if (m.step == -1) final_metrics[m.name] = m.value;
    }
    const std::string settings = t.kind == "baseline" ? "" : swept_settings(dims, t.config);
    if (format == "json") {
      json_rows.push_back(Json{{"id", t.id},
                               {"kind", t.kind},
                               {"status", to_string(t.status)},
                               {"settings", settings},
                               {"worker", t.worker},
                               {"attempts", t.attempts},
                               {"metrics", final_metrics},
                               {"error", t.error},
                               {"config", t.config}});
      continue;
    }
    std::string error = t.error;
    if (format == "table" && error.size() > 60) error = error.substr(0, 57) + "...";
    rows.push_back({std::to_string(t.id), t.kind, to_string(t.status), settings,
                    number(final_metrics, "test_accuracy", "{:.2f}"), number(final_metrics, "accuracy_drop", "{:+.2f}"),
                    number(final_metrics, "params", "{:.0f}"), number(final_metrics, "macs", "{:.0f}"),
                    number(final_metrics, "model_bytes", "{:.0f}"), number(final_metrics, "seconds", "{:.1f}"),
                    t.worker >= 0 ? std::to_string(t.worker) : "", error});
  }
  if (format == "json") return json_rows.dump(2) + "\n";
  const std::vector<Column> columns = {{"id", true},     {"kind", false},   {"status", false},  {"settings", false},
                                       {"test_acc", true}, {"drop", true},  {"params", true},   {"macs", true},
                                       {"bytes", true},  {"seconds", true}, {"rank", true},     {"error", false}};
  return render(columns, rows, format);
}

std::string format_status(const Store& store, std::optional<double> now) {
  const double clock = now ? *now : unix_now();
  std::vector<std::vector<std::string>> rows;
  std::string ranks;
  for (const ExperimentRow& e : store.experiments()) {
    std::map<std::string, int64_t> counts;
    int64_t total = 0;
    for (const TrialRow& t : store.trials(e.id)) {
      ++counts[to_string(t.status)];
      ++total;
    }
    rows.push_back({e.name, e.status, std::to_string(total), std::to_string(counts["done"]),
                    std::to_string(counts["failed"]), std::to_string(counts["running"]),
                    std::to_string(counts["pending"]), e.created});
    const std::vector<WorkerRow> workers = store.workers(e.id);
    const bool any_lost =
        std::any_of(workers.begin(), workers.end(), [](const WorkerRow& w) { return w.state == "lost"; });
    if (workers.empty() || (e.status != "running" && !any_lost)) continue;
    std::vector<std::vector<std::string>> worker_rows;
    for (const WorkerRow& w : workers) {
      std::string where;
      if (w.trial_id > 0) {
        try {
          where = describe(w.progress.get<TaskProgress>());
        } catch (const std::exception&) {
          where = "?";
        }
      }
      const double ago = std::max(0.0, clock - w.heard);
      worker_rows.push_back({std::to_string(w.rank), w.host, w.pid > 0 ? std::to_string(w.pid) : "", w.state,
                             w.trial_id > 0 ? std::to_string(w.trial_id) : "", where,
                             fmt::format("{:.0f} s ago", ago)});
    }
    ranks += fmt::format("\nranks of '{}' in its latest run, as rank 0 last heard from them:\n", e.name);
    ranks += render({{"rank", true},
                     {"host", false},
                     {"pid", true},
                     {"state", false},
                     {"task", true},
                     {"progress", false},
                     {"heard", true}},
                    worker_rows, "table");
  }
  return render({{"experiment", false},
                 {"status", false},
                 {"tasks", true},
                 {"done", true},
                 {"failed", true},
                 {"running", true},
                 {"pending", true},
                 {"created", false}},
                rows, "table") +
         ranks;
}

}  // namespace edgesweep
