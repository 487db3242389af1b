// The HTML report of an experiment: one self-contained file (styles inline, plots as inline SVG drawn by gnuplot)
// with the experiment, its baseline, a table per compression method, Pareto plots per device and training curves.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "edgesweep/orchestrator/store.h"

namespace edgesweep {

struct ReportOptions {
  int64_t batch = 1;  ///< batch size of the device measurements shown in the Pareto plots
  /// The gnuplot program (a name on PATH or a path); empty: $EDGESWEEP_GNUPLOT when set, else "gnuplot".
  /// When it cannot be found the report is written without plots and says why.
  std::string gnuplot;
  int64_t gnuplot_timeout_seconds = 60;  ///< a gnuplot run longer than this is stopped (the page says so)
};

/// The report of experiment `experiment_id` as one HTML document; every text from the store is escaped.
std::string render_report(const Store& store, int64_t experiment_id, const ReportOptions& options = {});

/// Renders the report and writes it to `output` (through a temporary file and a rename). Throws InputError naming
/// the file when it cannot be created there, Error when writing it fails.
void write_report(const Store& store, int64_t experiment_id, const std::filesystem::path& output,
                  const ReportOptions& options = {});

/// Text made safe as HTML element content or a quoted attribute value (& < > " ' escaped).
std::string html_escape(const std::string& text);

}  // namespace edgesweep
