// gnuplot as an SVG renderer for the report: script generation, a bounded child process, SVG clean-up.
#include "gnuplot.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "edgesweep/common/process.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

/// A gnuplot single-quoted string literal (a quote inside is written twice).
std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'') out += '\'';
    if (c == '\n' || c == '\r') c = ' ';
    out += c;
  }
  return out + "'";
}

/// A point label reduced to characters that need no quoting anywhere.
std::string safe_label(const std::string& label) {
  std::string out;
  for (char c : label) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-') out += c;
  }
  return out.empty() ? "-" : out;
}

bool is_executable_file(const fs::path& path) {
  std::error_code error;
  return fs::is_regular_file(path, error) && access(path.c_str(), X_OK) == 0;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

/// Removes every `open ... close` span (both included).
void remove_spans(std::string& text, const std::string& open, const std::string& close) {
  for (size_t at = text.find(open); at != std::string::npos; at = text.find(open, at)) {
    const size_t end = text.find(close, at + open.size());
    if (end == std::string::npos) return;
    text.erase(at, end + close.size() - at);
  }
}

/// Runs `program script` with output to `log`; the exit code, or -1 with `timed_out` set when it was killed.
int run_bounded(const std::string& program, const fs::path& script, const fs::path& log,
                std::chrono::seconds timeout, bool& timed_out) {
  ProcessOptions options;
  options.argv = {program, script.string()};
  options.output_file = log;  // its own group, so a timeout also ends anything it started
  Process gnuplot(options);
  const std::optional<ProcessExit> exit = gnuplot.wait_for(timeout);
  timed_out = !exit.has_value();  // then the group is killed and reaped as `gnuplot` goes out of scope
  if (timed_out) return -1;
  return exit->status();
}

}  // namespace

std::string find_program(const std::string& name_or_path) {
  if (name_or_path.empty()) return {};
  if (name_or_path.find('/') != std::string::npos) {
    return is_executable_file(name_or_path) ? name_or_path : std::string();
  }
  const char* path = std::getenv("PATH");
  std::stringstream folders(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string folder;
  while (std::getline(folders, folder, ':')) {
    if (folder.empty()) continue;
    const fs::path candidate = fs::path(folder) / name_or_path;
    if (is_executable_file(candidate)) return candidate.string();
  }
  return {};
}

std::string gnuplot_script(const std::vector<PlotSpec>& plots, const std::string& folder) {
  std::string script = "set encoding utf8\n";
  for (size_t p = 0; p < plots.size(); ++p) {
    const PlotSpec& plot = plots[p];
    script += fmt::format("\n# plot {}\nreset\n", p);
    script += fmt::format("set terminal svg size {},{} dynamic noenhanced font 'sans,11' background '#ffffff'\n",
                          plot.width, plot.height);
    script += fmt::format("set output {}\n", quoted((fs::path(folder) / fmt::format("plot{}.svg", p)).string()));
    script += "set grid lc rgb '#dddddd'\nset border lc rgb '#555555'\n";
    script += "set key outside top center horizontal\n";
    script += fmt::format("set xlabel {}\nset ylabel {}\n", quoted(plot.x_label), quoted(plot.y_label));
    if (plot.log_x) script += "set logscale x\n";
    std::vector<std::string> clauses;
    for (size_t s = 0; s < plot.series.size(); ++s) {
      const PlotSeries& series = plot.series[s];
      const std::string block = fmt::format("$p{}s{}", p, s);
      std::string rows;
      for (size_t i = 0; i < series.points.size(); ++i) {
        const auto [x, y] = series.points[i];
        if (!std::isfinite(x) || !std::isfinite(y) || (plot.log_x && x <= 0)) continue;
        rows += fmt::format("{:.10g} {:.10g}", x, y);
        if (!series.labels.empty()) rows += " \"" + safe_label(i < series.labels.size() ? series.labels[i] : "") + "\"";
        rows += "\n";
      }
      if (rows.empty()) continue;
      script += block + " << EOD\n" + rows + "EOD\n";
      clauses.push_back(fmt::format("{} using 1:2 with {} {}", block, series.style,
                                    series.title.empty() ? std::string("notitle") : "title " + quoted(series.title)));
      if (!series.labels.empty()) {
        clauses.push_back(fmt::format("{} using 1:2:3 with labels offset char 0.6,0.6 left font ',9' "
                                      "tc rgb '#333333' notitle",
                                      block));
      }
    }
    if (clauses.empty()) {
      script += "set label 'no data' at graph 0.5,0.5 center\nplot [0:1][0:1] NaN notitle\n";
    } else {
      script += "plot ";
      for (size_t c = 0; c < clauses.size(); ++c) script += (c ? ", \\\n     " : "") + clauses[c];
      script += "\n";
    }
    script += "unset output\n";
  }
  return script;
}

PlotOutcome render_plots(const std::vector<PlotSpec>& plots, const std::string& gnuplot,
                         std::chrono::seconds timeout) {
  PlotOutcome outcome;
  if (plots.empty()) return outcome;
  try {
    const TemporaryFolder folder("edgesweep-plot-");
    const fs::path script = folder / "plots.gp";
    const fs::path log = folder / "gnuplot.log";
    {
      std::ofstream out(script);
      out << gnuplot_script(plots, folder.path().string());
      if (!out) throw std::runtime_error(fmt::format("cannot write '{}'", script.string()));
    }
    bool timed_out = false;
    const int code = run_bounded(gnuplot, script, log, timeout, timed_out);
    std::string messages = read_text(log);
    if (messages.size() > 2000) messages = messages.substr(0, 2000) + "...";
    if (timed_out) {
      outcome.error = fmt::format("'{}' did not finish within {} s and was stopped", gnuplot, timeout.count());
      return outcome;
    }
    if (code != 0) {
      outcome.error = fmt::format("'{}' exited with code {}: {}", gnuplot, code, messages);
      return outcome;
    }
    for (size_t p = 0; p < plots.size(); ++p) {
      const fs::path file = folder / fmt::format("plot{}.svg", p);
      std::string svg = read_text(file);
      if (svg.find("<svg") == std::string::npos) {
        outcome.error = fmt::format("'{}' wrote no SVG for plot {}: {}", gnuplot, p, messages);
        outcome.svgs.clear();
        return outcome;
      }
      outcome.svgs.push_back(std::move(svg));
    }
  } catch (const std::exception& e) {
    outcome.svgs.clear();
    outcome.error = e.what();
  }
  return outcome;
}

std::string inline_svg(const std::string& svg, size_t index) {
  const size_t start = svg.find("<svg");
  if (start == std::string::npos) return {};
  std::string text = svg.substr(start);
  remove_spans(text, " xmlns=\"", "\"");
  remove_spans(text, " xmlns:xlink=\"", "\"");
  remove_spans(text, "<title>", "</title>");
  const std::string prefix = fmt::format("plot{}-", index);
  replace_all(text, "id='", "id='" + prefix);
  replace_all(text, "id=\"", "id=\"" + prefix);
  replace_all(text, "href='#", "href='#" + prefix);
  replace_all(text, "href=\"#", "href=\"#" + prefix);
  replace_all(text, "url(#", "url(#" + prefix);
  text.replace(0, 4, "<svg class=\"plot\" role=\"img\"");
  return text;
}

}  // namespace edgesweep
