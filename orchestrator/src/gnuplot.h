// Plots as SVG text through gnuplot's svg terminal: a script written to a temporary folder, gnuplot run on it as a
// bounded child process, the SVG files read back and made fit to be inlined in an HTML page. Private to the report.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace edgesweep {

/// One data series of a plot. Titles and labels are text this code chooses (never text from the store).
struct PlotSeries {
  std::string title;                               ///< legend entry; empty: none
  std::vector<std::pair<double, double>> points;   ///< (x, y); non-finite points are left out
  std::vector<std::string> labels;                 ///< optional, one per point, drawn beside it ([A-Za-z0-9_.-])
  std::string style;                               ///< what follows "with", e.g. "linespoints pt 7 lc rgb '#d62728'"
};

/// One plot: axes and series, drawn in order (later series on top).
struct PlotSpec {
  std::string x_label;
  std::string y_label;
  bool log_x = false;
  int width = 560;
  int height = 380;
  std::vector<PlotSeries> series;
};

/// The SVG text of each plot, or the reason there is none.
struct PlotOutcome {
  std::vector<std::string> svgs;  ///< one per plot, in order; empty when `error` is set
  std::string error;
};

/// The program to run for `name_or_path`: a path containing '/' when it is an executable file, else the first
/// executable of that name on PATH; empty when there is none.
std::string find_program(const std::string& name_or_path);

/// The gnuplot script that writes each plot to `<folder>/plot<i>.svg`.
std::string gnuplot_script(const std::vector<PlotSpec>& plots, const std::string& folder);

/// Renders every plot with one run of `gnuplot` (a path, see find_program) in a fresh temporary folder that is
/// removed afterwards; a run longer than `timeout` is killed. Failures come back in `error`, never as exceptions.
PlotOutcome render_plots(const std::vector<PlotSpec>& plots, const std::string& gnuplot,
                         std::chrono::seconds timeout = std::chrono::seconds(60));

/// gnuplot's SVG made fit for inlining as plot number `index`: no XML prolog, no namespace declarations (the HTML
/// parser supplies them), no tooltips, and every id (and reference to one) prefixed so plots do not collide.
std::string inline_svg(const std::string& svg, size_t index);

}  // namespace edgesweep
