// The HTML report of an experiment. Everything it shows is read from the store; every text that comes from the store
// goes through html_escape. Plots are gnuplot SVGs inlined into the page, so the file needs nothing else to be viewed.
#include "edgesweep/orchestrator/report.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "edgesweep/common/error.h"
#include "edgesweep/orchestrator/pareto.h"
#include "edgesweep/orchestrator/spec.h"
#include "gnuplot.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

using Metrics = std::map<std::string, double>;

/// A trial with what the report needs of it.
struct TrialView {
  TrialRow row;
  Metrics final_metrics;                 ///< step -1
  std::map<int64_t, Metrics> epochs;     ///< step >= 0: per-epoch values (train_loss, val_accuracy, ...)
  std::string method;                    ///< stages with their method or mode, e.g. "prune l1-filter → quantize none"
  std::string settings;                  ///< the other swept settings, "label=value" joined by spaces
};

/// The x axes of the Pareto plots: a candidate metric, its axis title and a scale for display.
struct ParetoAxis {
  const char* metric;
  const char* title;
  double scale;
};
const ParetoAxis pareto_axes[] = {
    {"latency_p50_ms", "latency p50 (ms)", 1.0},
    {"peak_rss_mb", "peak RAM (MB)", 1.0},
    {"model_bytes", "model size (MB)", 1e-6},
};

/// The page under construction. Plots are placeholders (HTML comments no escaped text can contain) replaced by
/// their SVG once gnuplot has drawn them all in one run.
struct Page {
  std::string html;
  std::vector<PlotSpec> plots;

  void add_plot(PlotSpec plot, const std::string& caption) {
    html += fmt::format("<figure><!--edgesweep-plot-{}--><figcaption>{}</figcaption></figure>\n", plots.size(),
                        caption);
    plots.push_back(std::move(plot));
  }
};

std::optional<double> metric(const Metrics& metrics, const std::string& name) {
  auto it = metrics.find(name);
  if (it == metrics.end() || !std::isfinite(it->second)) return std::nullopt;
  return it->second;
}

/// A value with a unit prefix (k, M, G), e.g. "421.7 k"; the suffix follows the prefix ("MB").
std::string with_prefix(double value, const std::string& unit) {
  const double magnitude = std::fabs(value);
  if (magnitude >= 1e9) return fmt::format("{:.2f} G{}", value / 1e9, unit);
  if (magnitude >= 1e6) return fmt::format("{:.2f} M{}", value / 1e6, unit);
  if (magnitude >= 1e3) return fmt::format("{:.1f} k{}", value / 1e3, unit);
  return fmt::format("{:.0f}{}{}", value, unit.empty() ? "" : " ", unit);
}

/// A table cell with a number: "count" and "bytes" get a unit prefix (the exact value in the tooltip), anything else
/// is a fmt pattern. An absent value is an empty cell.
std::string number_cell(const Metrics& metrics, const std::string& name, const std::string& pattern) {
  const std::optional<double> value = metric(metrics, name);
  if (!value) return "<td></td>";
  if (pattern == "count" || pattern == "bytes") {
    return fmt::format("<td class=\"num\" title=\"{:.0f}\">{}</td>", *value,
                       with_prefix(*value, pattern == "bytes" ? "B" : ""));
  }
  return fmt::format("<td class=\"num\">{}</td>", fmt::format(fmt::runtime(pattern), *value));
}

/// A JSON value as short text (strings without their quotes).
std::string json_text(const Json& value) { return value.is_string() ? value.get<std::string>() : value.dump(); }

/// The stages of a trial with the setting that names their method ("method" or "mode"), joined by arrows.
std::string method_of(const Json& config) {
  std::string label;
  const Json pipeline = config.value("pipeline", Json::array());
  for (const Json& stage : pipeline) {
    if (!stage.is_object()) continue;
    std::string part = json_text(stage.value("stage", Json("?")));
    for (const char* key : {"method", "mode"}) {
      if (stage.contains(key)) part += " " + json_text(stage.at(key));
    }
    label += (label.empty() ? "" : " \u2192 ") + part;
  }
  return label.empty() ? "(no stages)" : label;
}

/// The swept settings of a trial that the method label does not already say.
std::string settings_of(const std::vector<SweepDimension>& dimensions, const Json& config) {
  std::string text;
  for (const SweepDimension& dimension : dimensions) {
    const std::string& pointer = dimension.pointer;
    const auto ends_with = [&](const std::string& tail) {
      return pointer.size() >= tail.size() && pointer.compare(pointer.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (pointer.rfind("/pipeline/", 0) == 0 && (ends_with("/method") || ends_with("/mode"))) continue;
    const Json::json_pointer json_pointer(pointer);
    if (!config.contains(json_pointer)) continue;
    text += (text.empty() ? "" : " ") + dimension.label + "=" + json_text(config.at(json_pointer));
  }
  return text;
}

std::string now_utc() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &utc);
  return text;
}

std::string status_cell(const TrialRow& row) {
  std::string cell = "<td>" + html_escape(to_string(row.status));
  if (!row.error.empty()) {
    const std::string shown = row.error.size() > 300 ? row.error.substr(0, 297) + "..." : row.error;
    cell += "<div class=\"error\">" + html_escape(shown) + "</div>";
  }
  return cell + "</td>";
}

const char* const style_sheet = R"css(
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1rem 2rem 3rem; color: #222; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { margin-bottom: 0.4rem; }
nav a { margin-right: 1rem; }
.muted { color: #666; }
.note { background: #fff6e0; border-left: 4px solid #e0a800; padding: 0.5rem 0.8rem; }
.error { color: #a00; font-size: 0.85em; max-width: 24rem; white-space: pre-wrap; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.knee td { background: #eaf2fb; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
pre { background: #f7f7f7; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
figure { margin: 0; flex: 1 1 520px; max-width: 600px; }
figure svg { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
)css";

// ---- sections -------------------------------------------------------------------------------------------------

void experiment_section(Page& page, const ExperimentRow& experiment, const std::string& description,
                        const std::string& spec_problem, const std::vector<TrialView>& trials) {
  std::map<std::string, int64_t> by_status;
  int64_t baselines = 0;
  for (const TrialView& trial : trials) {
    ++by_status[to_string(trial.row.status)];
    if (trial.row.kind == "baseline") ++baselines;
  }
  std::string counts = fmt::format("{} tasks ({} baseline, {} trials): ", trials.size(), baselines,
                                   static_cast<int64_t>(trials.size()) - baselines);
  bool first = true;
  for (const char* status : {"done", "failed", "running", "pending"}) {
    counts += fmt::format("{}{} {}", first ? "" : ", ", by_status[status], status);
    first = false;
  }
  page.html += "<section id=\"experiment\"><h2>Experiment</h2>\n<dl class=\"facts\">\n";
  page.html += "<dt>name</dt><dd>" + html_escape(experiment.name) + "</dd>\n";
  page.html += "<dt>description</dt><dd>" + (description.empty() ? std::string("<span class=\"muted\">none</span>")
                                                                 : html_escape(description)) + "</dd>\n";
  page.html += "<dt>status</dt><dd>" + html_escape(experiment.status) + "</dd>\n";
  page.html += "<dt>created</dt><dd>" + html_escape(experiment.created) + "</dd>\n";
  page.html += "<dt>tasks</dt><dd>" + counts + "</dd>\n";
  page.html += "<dt>spec sha256</dt><dd><code>" + html_escape(experiment.spec_hash) + "</code></dd>\n</dl>\n";
  if (!spec_problem.empty()) {
    page.html += "<p class=\"note\">The recorded spec cannot be read by this version, so swept settings are not "
                 "shown: " + html_escape(spec_problem) + "</p>\n";
  }
  page.html += "<details><summary>Experiment file as recorded</summary><pre>" + html_escape(experiment.spec_text) +
               "</pre></details>\n</section>\n";
}

void baseline_section(Page& page, const std::vector<TrialView>& trials) {
  page.html += "<section id=\"baseline\"><h2>Baseline</h2>\n";
  std::string rows;
  for (const TrialView& trial : trials) {
    if (trial.row.kind != "baseline") continue;
    const Metrics& m = trial.final_metrics;
    const Json model = trial.row.config.value("model", Json::object());
    const Json data = trial.row.config.value("data", Json::object());
    const Json training = trial.row.config.value("baseline", Json::object());
    rows += "<tr><td class=\"num\">" + std::to_string(trial.row.id) + "</td><td>" +
            html_escape(json_text(model.value("arch", Json("?")))) + "</td><td>" +
            html_escape(json_text(data.value("dataset", Json("?")))) + "</td><td class=\"num\">" +
            html_escape(json_text(training.value("epochs", Json("")))) + "</td>" + status_cell(trial.row) +
            number_cell(m, "test_accuracy", "{:.2f}") + number_cell(m, "params", "count") +
            number_cell(m, "macs", "count") + number_cell(m, "model_bytes", "bytes") +
            number_cell(m, "compressed_bytes", "bytes") + number_cell(m, "latency_b1_ms", "{:.3f}") +
            number_cell(m, "latency_b32_ms", "{:.3f}") + number_cell(m, "seconds", "{:.1f}") + "</tr>\n";
  }
  if (rows.empty()) {
    page.html += "<p class=\"muted\">No baseline in the store.</p></section>\n";
    return;
  }
  page.html +=
      "<table><thead><tr><th class=\"num\">trial</th><th>model</th><th>data</th><th class=\"num\">epochs</th>"
      "<th>status</th><th class=\"num\">accuracy (%)</th><th class=\"num\">params</th><th class=\"num\">MACs</th>"
      "<th class=\"num\">bytes</th><th class=\"num\">compressed</th><th class=\"num\">latency b1 (ms)</th>"
      "<th class=\"num\">latency b32 (ms)</th><th class=\"num\">seconds</th></tr></thead><tbody>\n" +
      rows + "</tbody></table>\n";
  page.html += "<p class=\"muted\">Accuracy: top-1 on the test split. Bytes: the exported TorchScript file; "
               "compressed: the same file compressed with zstd. Latency: median in-process time of the worker's "
               "host at batch 1 and 32.</p>\n</section>\n";
}

void methods_section(Page& page, const std::vector<TrialView>& trials) {
  page.html += "<section id=\"methods\"><h2>Compression methods</h2>\n";
  std::vector<std::string> order;
  std::map<std::string, std::vector<const TrialView*>> groups;
  for (const TrialView& trial : trials) {
    if (trial.row.kind == "baseline") continue;
    if (groups.find(trial.method) == groups.end()) order.push_back(trial.method);
    groups[trial.method].push_back(&trial);
  }
  if (order.empty()) page.html += "<p class=\"muted\">No trials in the store.</p>\n";
  for (const std::string& method : order) {
    std::vector<const TrialView*>& members = groups[method];
    std::stable_sort(members.begin(), members.end(),
                     [](const TrialView* a, const TrialView* b) { return a->settings < b->settings; });
    page.html += "<h3>" + html_escape(method) + "</h3>\n";
    page.html +=
        "<table><thead><tr><th class=\"num\">trial</th><th>settings</th><th>status</th>"
        "<th class=\"num\">accuracy (%)</th><th class=\"num\">drop</th><th class=\"num\">params</th>"
        "<th class=\"num\">MACs</th><th class=\"num\">bytes</th><th class=\"num\">compressed</th>"
        "<th class=\"num\">latency b1 (ms)</th><th class=\"num\">latency b32 (ms)</th></tr></thead><tbody>\n";
    for (const TrialView* trial : members) {
      const Metrics& m = trial->final_metrics;
      page.html += "<tr><td class=\"num\">" + std::to_string(trial->row.id) + "</td><td>" +
                   html_escape(trial->settings) + "</td>" + status_cell(trial->row) +
                   number_cell(m, "test_accuracy", "{:.2f}") + number_cell(m, "accuracy_drop", "{:+.2f}") +
                   number_cell(m, "params", "count") + number_cell(m, "macs", "count") +
                   number_cell(m, "model_bytes", "bytes") + number_cell(m, "compressed_bytes", "bytes") +
                   number_cell(m, "latency_b1_ms", "{:.3f}") + number_cell(m, "latency_b32_ms", "{:.3f}") +
                   "</tr>\n";
    }
    page.html += "</tbody></table>\n";
  }
  page.html += "<p class=\"muted\">Drop: baseline accuracy minus the trial's, in points (negative: the trial is "
               "better).</p>\n</section>\n";
}

/// The hardware of a device as "key: value" pairs of the scalar entries of its hardware JSON.
std::string hardware_text(const Json& hardware) {
  if (!hardware.is_object()) return {};
  std::string text;
  for (const auto& [key, value] : hardware.items()) {
    if (value.is_structured() || value.is_null()) continue;
    text += (text.empty() ? "" : ", ") + key + ": " + json_text(value);
  }
  return text;
}

void pareto_section(Page& page, const Store& store, int64_t experiment_id, int64_t batch,
                    const std::map<int64_t, const TrialView*>& trials_by_id) {
  page.html += "<section id=\"pareto\"><h2>Pareto fronts per device</h2>\n";
  const std::vector<Candidate> candidates = load_candidates(store, experiment_id, batch);
  if (candidates.empty()) {
    page.html += fmt::format("<p class=\"muted\">No measured candidates at batch {} yet: device agents measure every "
                             "artifact of a done trial; see <code>[[devices]]</code> in the experiment file.</p>\n"
                             "</section>\n", batch);
    return;
  }
  page.html += fmt::format(
      "<p>Each point is a model measured on the device at batch {}: accuracy (higher is better) against one cost "
      "(lower is better). Red points joined by a line are the non-dominated ones for that pair; the blue ring is the "
      "knee (the front point nearest the ideal after scaling both axes to the front's range); numbers are trial "
      "ids. No constraints are applied here (<code>edgesweep pareto</code> applies the experiment's "
      "<code>[objectives]</code>). The device <code>{}</code> stands for the latency the workers measured "
      "in-process on their own host."
      "</p>\n", batch, html_escape(in_process_device));

  // Per device and x metric, the 2-D selection; devices in name order.
  std::map<std::string, std::vector<std::pair<const ParetoAxis*, DeviceFront>>> by_device;
  for (const ParetoAxis& axis : pareto_axes) {
    ParetoOptions options;
    options.objectives = {{"accuracy", true}, {axis.metric, false}};
    options.batch = batch;
    for (DeviceFront& front : select_pareto(candidates, options)) {
      by_device[front.device].emplace_back(&axis, std::move(front));
    }
  }
  std::map<std::string, DeviceRow> devices;
  for (DeviceRow& device : store.devices()) devices[device.name] = std::move(device);
  for (const auto& [device, fronts] : by_device) {
    page.html += "<h3>" + html_escape(device) + "</h3>\n";
    auto known = devices.find(device);
    if (known != devices.end()) {
      const std::string hardware = hardware_text(known->second.hardware);
      if (!hardware.empty()) page.html += "<p class=\"muted\">" + html_escape(hardware) + "</p>\n";
    }
    page.html += "<div class=\"plots\">\n";
    const DeviceFront* latency_front = nullptr;
    for (const auto& [axis, front] : fronts) {
      if (front.feasible.empty()) continue;
      if (std::string(axis->metric) == "latency_p50_ms") latency_front = &front;
      const auto point = [&, axis = axis](const Candidate& c) {
        return std::make_pair(c.values.at(axis->metric) * axis->scale, c.values.at("accuracy"));
      };
      PlotSeries all{"candidates", {}, {}, "points pt 7 ps 0.7 lc rgb '#a0a0a0'"};
      for (const Candidate& c : front.feasible) all.points.push_back(point(c));
      PlotSeries best{"Pareto front", {}, {}, "linespoints lw 2 pt 7 ps 1.0 lc rgb '#d62728'"};
      std::vector<size_t> members = front.front;
      std::sort(members.begin(), members.end(), [&, &feasible = front.feasible](size_t a, size_t b) {
        return point(feasible[a]) < point(feasible[b]);  // a structured binding is not captured (C++17)
      });
      for (size_t i : members) {
        best.points.push_back(point(front.feasible[i]));
        best.labels.push_back(std::to_string(front.feasible[i].trial_id));
      }
      PlotSpec plot{axis->title, "accuracy (%)", false, 560, 380, {all, best}};
      if (front.knee) {
        plot.series.push_back(
            {"knee", {point(front.feasible[*front.knee])}, {}, "points pt 6 ps 3 lw 2 lc rgb '#1f77b4'"});
      }
      page.add_plot(std::move(plot),
                    fmt::format("{}: accuracy against {} ({} candidates, {} on the front)", html_escape(device),
                                axis->title, front.feasible.size(), front.front.size()));
    }
    page.html += "</div>\n";
    if (latency_front == nullptr || latency_front->front.empty()) continue;
    page.html += "<table><thead><tr><th class=\"num\">trial</th><th>method</th><th>settings</th>"
                 "<th class=\"num\">accuracy (%)</th><th class=\"num\">drop</th><th class=\"num\">latency p50 (ms)</th>"
                 "<th class=\"num\">FPS</th><th class=\"num\">peak RAM (MB)</th><th class=\"num\">bytes</th>"
                 "</tr></thead><tbody>\n";
    for (size_t i : latency_front->front) {
      const Candidate& c = latency_front->feasible[i];
      const bool knee = latency_front->knee && *latency_front->knee == i;
      auto trial = trials_by_id.find(c.trial_id);
      const std::string method =
          c.kind == "baseline" ? std::string("baseline") : (trial != trials_by_id.end() ? trial->second->method : "");
      const std::string settings = trial != trials_by_id.end() ? trial->second->settings : "";
      page.html += std::string(knee ? "<tr class=\"knee\">" : "<tr>") + "<td class=\"num\">" +
                   std::to_string(c.trial_id) + (knee ? " (knee)" : "") + "</td><td>" + html_escape(method) +
                   "</td><td>" + html_escape(settings) + "</td>" + number_cell(c.values, "accuracy", "{:.2f}") +
                   number_cell(c.values, "accuracy_drop", "{:+.2f}") +
                   number_cell(c.values, "latency_p50_ms", "{:.3f}") + number_cell(c.values, "fps", "{:.1f}") +
                   number_cell(c.values, "peak_rss_mb", "{:.1f}") + number_cell(c.values, "model_bytes", "bytes") +
                   "</tr>\n";
    }
    page.html += "</tbody></table>\n<p class=\"muted\">The front of accuracy against latency on this device.</p>\n";
  }
  page.html += "</section>\n";
}

void curves_section(Page& page, const std::vector<TrialView>& trials) {
  page.html += "<section id=\"curves\"><h2>Training curves</h2>\n";
  size_t trained_trials = 0;
  size_t trained_baselines = 0;
  for (const TrialView& trial : trials) {
    if (trial.epochs.empty()) continue;
    ++(trial.row.kind == "baseline" ? trained_baselines : trained_trials);
  }
  if (trained_trials + trained_baselines == 0) {
    page.html += "<p class=\"muted\">No per-epoch metrics in the store.</p>\n</section>\n";
    return;
  }
  const bool name_trials = trained_trials <= 12;
  const struct {
    const char* metric;
    const char* title;
  } curves[] = {{"train_loss", "training loss"}, {"val_accuracy", "validation accuracy (%)"}};
  page.html += "<div class=\"plots\">\n";
  for (const auto& curve : curves) {
    PlotSpec plot{"epoch", curve.title, false, 560, 380, {}};
    // Trials first, so the baselines are drawn on top.
    for (int pass = 0; pass < 2; ++pass) {
      for (const TrialView& trial : trials) {
        const bool baseline = trial.row.kind == "baseline";
        if (baseline != (pass == 1)) continue;
        PlotSeries series;
        for (const auto& [step, values] : trial.epochs) {
          if (auto value = metric(values, curve.metric)) series.points.push_back({static_cast<double>(step), *value});
        }
        if (series.points.empty()) continue;
        if (baseline) {
          series.title = trained_baselines > 1 ? fmt::format("baseline {}", trial.row.id) : "baseline";
          series.style = "linespoints lw 2.5 pt 7 ps 0.6 lc rgb '#000000'";
        } else {
          series.title = name_trials ? fmt::format("trial {}", trial.row.id) : "";
          series.style = "linespoints lw 1 pt 7 ps 0.4";
        }
        plot.series.push_back(std::move(series));
      }
    }
    page.add_plot(std::move(plot), fmt::format("{} per epoch: the baseline's training (black) and each trial's own "
                                               "fine-tuning epochs{}", curve.title,
                                               name_trials ? "" : " (trials not named: too many for a legend)"));
  }
  page.html += "</div>\n</section>\n";
}

/// The gnuplot to run: the option, else $EDGESWEEP_GNUPLOT, else "gnuplot" on PATH.
std::string gnuplot_wanted(const ReportOptions& options) {
  if (!options.gnuplot.empty()) return options.gnuplot;
  const char* from_environment = std::getenv("EDGESWEEP_GNUPLOT");
  if (from_environment != nullptr && *from_environment != '\0') return from_environment;
  return "gnuplot";
}

/// Puts each plot's SVG (or a note on why there is none) in place of its placeholder.
std::string fill_plots(const Page& page, const ReportOptions& options) {
  std::vector<std::string> figures(page.plots.size());
  std::string problem;
  if (!page.plots.empty()) {
    const std::string wanted = gnuplot_wanted(options);
    const std::string program = find_program(wanted);
    if (program.empty()) {
      problem = fmt::format("gnuplot was not found (looked for '{}'), so this report has no plots. Install gnuplot "
                            "(Debian: gnuplot-nox) and run <code>edgesweep report</code> again.", html_escape(wanted));
    } else {
      const std::chrono::seconds timeout(std::max<int64_t>(1, options.gnuplot_timeout_seconds));
      PlotOutcome outcome = render_plots(page.plots, program, timeout);
      if (!outcome.error.empty()) {
        problem = "gnuplot failed, so this report has no plots: " + html_escape(outcome.error);
      } else {
        for (size_t i = 0; i < figures.size(); ++i) figures[i] = inline_svg(outcome.svgs[i], i);
      }
    }
  }
  std::string html;
  html.reserve(page.html.size() + 64 * 1024 * figures.size());
  size_t at = 0;
  while (true) {
    const size_t marker = page.html.find("<!--edgesweep-plot-", at);
    if (marker == std::string::npos) break;
    const size_t end = page.html.find("-->", marker);
    EDGESWEEP_ASSERT(end != std::string::npos);
    const size_t index = std::stoul(page.html.substr(marker + 19, end - marker - 19));
    EDGESWEEP_ASSERT(index < figures.size());
    html.append(page.html, at, marker - at);
    html += problem.empty() ? figures[index]
                            : "<p class=\"note plot-missing\">Plot not drawn (see the note above).</p>";
    at = end + 3;
  }
  html.append(page.html, at, std::string::npos);
  const std::string note_marker = "<!--edgesweep-note-->";
  const size_t note = html.find(note_marker);
  EDGESWEEP_ASSERT(note != std::string::npos);
  html.replace(note, note_marker.size(),
               problem.empty() ? "" : "<p class=\"note\" id=\"no-plots\">" + problem + "</p>");
  return html;
}

}  // namespace

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string render_report(const Store& store, int64_t experiment_id, const ReportOptions& options) {
  check_input(options.batch >= 1, "report: batch size must be at least 1, got {}", options.batch);
  std::optional<ExperimentRow> experiment;
  for (const ExperimentRow& row : store.experiments()) {
    if (row.id == experiment_id) experiment = row;
  }
  check_input(experiment.has_value(), "report: the store holds no experiment with id {}", experiment_id);

  std::vector<SweepDimension> dimensions;
  std::string description, spec_problem;
  try {
    const ExperimentSpec spec = parse_spec_string(experiment->spec_text, experiment->name + ".toml");
    dimensions = spec.dimensions;
    description = spec.description;
  } catch (const std::exception& e) {
    spec_problem = e.what();
  }

  std::vector<TrialView> trials;
  for (const TrialRow& row : store.trials(experiment_id)) {
    TrialView view;
    view.row = row;
    for (const MetricRow& m : store.metrics(row.id)) {
      if (m.step == -1) {
        view.final_metrics[m.name] = m.value;
      } else if (m.step >= 0) {
        view.epochs[m.step][m.name] = m.value;
      }
    }
    view.method = method_of(row.config);
    view.settings = settings_of(dimensions, row.config);
    trials.push_back(std::move(view));
  }
  std::map<int64_t, const TrialView*> trials_by_id;
  for (const TrialView& trial : trials) trials_by_id[trial.row.id] = &trial;

  Page page;
  page.html = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
              "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
              "<title>edgesweep report: " + html_escape(experiment->name) + "</title>\n<style>" + style_sheet +
              "</style>\n</head>\n<body>\n";
  page.html += "<header><h1>edgesweep report: " + html_escape(experiment->name) + "</h1>\n<p class=\"muted\">written " +
               now_utc() + "</p>\n<nav><a href=\"#experiment\">Experiment</a><a href=\"#baseline\">Baseline</a>"
               "<a href=\"#methods\">Methods</a><a href=\"#pareto\">Pareto fronts</a>"
               "<a href=\"#curves\">Training curves</a></nav>\n<!--edgesweep-note-->\n</header>\n<main>\n";
  experiment_section(page, *experiment, description, spec_problem, trials);
  baseline_section(page, trials);
  methods_section(page, trials);
  pareto_section(page, store, experiment_id, options.batch, trials_by_id);
  curves_section(page, trials);
  page.html += "</main>\n</body>\n</html>\n";
  return fill_plots(page, options);
}

void write_report(const Store& store, int64_t experiment_id, const fs::path& output, const ReportOptions& options) {
  const std::string html = render_report(store, experiment_id, options);
  std::error_code error;
  if (output.has_parent_path()) fs::create_directories(output.parent_path(), error);
  const fs::path partial = output.string() + fmt::format(".partial-{}", getpid());
  {
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    // A path that cannot be opened is the user's to fix (exit 2); a write that fails afterwards is not.
    check_input(static_cast<bool>(out), "cannot write the report to '{}': {}", output.string(), std::strerror(errno));
    out << html;
    out.close();
    if (!out) {
      const std::string message = std::strerror(errno);
      fs::remove(partial, error);
      throw Error(fmt::format("writing the report to '{}' failed: {}", partial.string(), message));
    }
  }
  fs::rename(partial, output, error);
  if (error) {
    const std::string message = error.message();
    fs::remove(partial, error);
    throw Error(fmt::format("cannot move the report into place as '{}': {}", output.string(), message));
  }
}

}  // namespace edgesweep
