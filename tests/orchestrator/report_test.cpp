// Tests of the HTML report on a synthetic store: the sections are there, text from the store is escaped, every plot
// is one inline SVG with unique ids, nothing points to the network, and without gnuplot the page says so instead.
#include "edgesweep/orchestrator/report.h"

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "edgesweep/common/error.h"
#include "report_fixture.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;
using report_test::build_synthetic_store;
using report_test::SyntheticExperiment;

/// How often `part` occurs in `text`.
size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

bool gnuplot_installed() { return access("/usr/bin/gnuplot", X_OK) == 0; }

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "edgesweep-report-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    folder_ = pattern;
    made_ = build_synthetic_store(folder_ / "edgesweep.db");
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(folder_, ignored);
  }

  std::string render(const ReportOptions& options = {}) {
    const Store store = Store::open(folder_ / "edgesweep.db", Store::Mode::ReadOnly);
    return render_report(store, made_.experiment_id, options);
  }

  fs::path folder_;
  SyntheticExperiment made_;
};

TEST_F(ReportTest, HoldsEverySection) {
  ReportOptions options;
  options.gnuplot = "/nonexistent/gnuplot";  // the tables do not depend on the plots
  const std::string html = render(options);
  for (const char* id : {"experiment", "baseline", "methods", "pareto", "curves"}) {
    EXPECT_TRUE(contains(html, std::string("<section id=\"") + id + "\">")) << id;
  }
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_TRUE(contains(html, "report-synthetic"));
  EXPECT_TRUE(contains(html, "0 running, 0 pending"));
  EXPECT_TRUE(contains(html, fmt::format("{} tasks (1 baseline, {} trials): {} done, {} failed", made_.trials + 1,
                                         made_.trials, made_.trials - made_.failed_trials + 1, made_.failed_trials)));
  // One table per method: prune method x quantize mode, each holding its sparsities.
  for (const char* method : {"prune l1-filter \u2192 quantize none", "prune l1-filter \u2192 quantize static-int8",
                             "prune magnitude-global \u2192 quantize none",
                             "prune magnitude-global \u2192 quantize static-int8"}) {
    EXPECT_EQ(count(html, std::string("<h3>") + method + "</h3>"), 1u) << method;
  }
  const size_t methods_start = html.find("<section id=\"methods\">");
  const std::string methods = html.substr(methods_start, html.find("</section>", methods_start) - methods_start);
  EXPECT_EQ(count(methods, "pipeline[0].sparsity=0.3"), 4u);
  EXPECT_EQ(count(methods, "<tr><td class=\"num\">"), static_cast<size_t>(made_.trials));
  EXPECT_TRUE(contains(html, "pipeline[0].sparsity=0.6"));
  // Baseline figures: accuracy, params with a prefix and the exact value in the tooltip, latency.
  EXPECT_TRUE(contains(html, ">90.00</td>"));
  EXPECT_TRUE(contains(html, "title=\"421738\">421.7 k</td>"));
  EXPECT_TRUE(contains(html, ">8.100</td>"));
}

TEST_F(ReportTest, EscapesTextFromTheStore) {
  ReportOptions options;
  options.gnuplot = "/nonexistent/gnuplot";
  const std::string html = render(options);
  // The description, the spec text and a trial's error all carry markup; none of it may survive as markup.
  EXPECT_FALSE(contains(html, "<script")) << "a script element in the page";
  EXPECT_FALSE(contains(html, "<b>calibration"));
  EXPECT_TRUE(contains(html, "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt; &amp; &quot;quotes&quot;"));
  EXPECT_TRUE(contains(html, "&lt;b&gt;calibration&lt;/b&gt; failed &amp; stopped"));
  EXPECT_FALSE(contains(html, "<img"));
  EXPECT_FALSE(contains(html, "<b>9000"));
  EXPECT_TRUE(contains(html, "<h3>board&lt;img src=x onerror=alert(1)&gt;</h3>"));
  EXPECT_TRUE(contains(html, "cpu: Test CPU &lt;b&gt;9000&lt;/b&gt;"));
  EXPECT_EQ(html_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
}

TEST_F(ReportTest, OneInlineSvgPerPlotWithUniqueIdsAndNoNetwork) {
  if (!gnuplot_installed()) GTEST_SKIP() << "gnuplot is not installed (scripts/install-deps installs gnuplot-nox)";
  const std::string html = render();
  EXPECT_FALSE(contains(html, "id=\"no-plots\""));
  // Plots: per device with measurements, accuracy against latency, RAM and size; "in-process" has latency and size
  // (no RAM); two training-curve plots.
  const size_t figures = count(html, "<figure>");
  EXPECT_EQ(figures, 3u * static_cast<size_t>(made_.devices) + 2u + 2u);
  EXPECT_EQ(count(html, "<svg"), figures);
  EXPECT_EQ(count(html, "</svg>"), figures);
  EXPECT_EQ(count(html, "<svg class=\"plot\""), figures);
  EXPECT_FALSE(contains(html, "<?xml"));
  EXPECT_FALSE(contains(html, "http://")) << "the page must not name anything on the network";
  EXPECT_FALSE(contains(html, "https://"));
  EXPECT_FALSE(contains(html, " src=\"")) << "no external resources";
  // Every id in the page is unique, so the point symbols of one plot never resolve to another's.
  std::map<std::string, int> ids;
  const std::regex id_attribute("\\sid=['\"]([^'\"]+)['\"]");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), id_attribute); it != std::sregex_iterator(); ++it) {
    ++ids[(*it)[1].str()];
  }
  EXPECT_GT(ids.size(), 10u);
  for (const auto& [id, n] : ids) EXPECT_EQ(n, 1) << "id '" << id << "' appears " << n << " times";
  // Every local reference names one of those ids.
  const std::regex reference("(?:href=['\"]#|url\\(#)([^'\")]+)");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), reference); it != std::sregex_iterator(); ++it) {
    EXPECT_EQ(ids.count((*it)[1].str()), 1u) << "dangling reference to '" << (*it)[1].str() << "'";
  }
}

TEST_F(ReportTest, WithoutGnuplotSaysSoAndKeepsTheTables) {
  ReportOptions options;
  options.gnuplot = "/nonexistent/gnuplot";
  const std::string html = render(options);
  EXPECT_TRUE(contains(html, "id=\"no-plots\""));
  EXPECT_TRUE(contains(html, "gnuplot was not found (looked for '/nonexistent/gnuplot')"));
  EXPECT_FALSE(contains(html, "<svg"));
  EXPECT_EQ(count(html, "class=\"note plot-missing\""), count(html, "<figure>"));
  EXPECT_EQ(count(html, "<h3>prune"), 4u);
}

TEST_F(ReportTest, GnuplotFromTheEnvironment) {
  ::setenv("EDGESWEEP_GNUPLOT", "/nonexistent/from-environment/gnuplot", 1);
  const std::string html = render();
  ::unsetenv("EDGESWEEP_GNUPLOT");
  EXPECT_TRUE(contains(html, "looked for '/nonexistent/from-environment/gnuplot'"));
  EXPECT_FALSE(contains(html, "<svg"));
}

TEST_F(ReportTest, GnuplotThatFailsIsReportedNotFatal) {
  // /bin/false is a program that exits with an error without writing any SVG.
  ReportOptions options;
  options.gnuplot = "/bin/false";
  const std::string html = render(options);
  EXPECT_TRUE(contains(html, "id=\"no-plots\""));
  EXPECT_TRUE(contains(html, "exited with code 1"));
  EXPECT_FALSE(contains(html, "<svg"));
}

TEST_F(ReportTest, GnuplotThatHangsIsStopped) {
  // A stand-in gnuplot that never finishes, and the process it starts; both must be gone once the report is done.
  const fs::path program = folder_ / "hanging-gnuplot";
  const fs::path child_pid = folder_ / "child.pid";
  std::ofstream(program) << "#!/bin/sh\nsleep 300 &\necho $! > '" << child_pid.string() << "'\nwait\n";
  fs::permissions(program, fs::perms::owner_all);
  ReportOptions options;
  options.gnuplot = program.string();
  options.gnuplot_timeout_seconds = 1;
  const auto start = std::chrono::steady_clock::now();
  const std::string html = render(options);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_TRUE(contains(html, "did not finish within 1 s and was stopped"));
  EXPECT_FALSE(contains(html, "<svg"));
  std::ifstream in(child_pid);
  pid_t pid = 0;
  ASSERT_TRUE(in >> pid) << "the stand-in did not start its child";
  // The child was killed with its group; it may linger as a zombie until its new parent reaps it.
  bool gone = false;
  for (int attempt = 0; attempt < 100 && !gone; ++attempt) {
    std::ifstream stat_file("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat_file, line);
    const size_t close = line.rfind(')');
    gone = line.empty() || (close != std::string::npos && line.compare(close + 2, 1, "Z") == 0);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "process " << pid << " started by the stand-in gnuplot is still running";
}

TEST_F(ReportTest, EmptyExperimentRenders) {
  const fs::path path = folder_ / "empty.db";
  int64_t id = 0;
  {
    Store store = Store::open(path, Store::Mode::ReadWrite);
    id = store.create_experiment("empty", "this is [not valid TOML", "0");
  }
  const Store store = Store::open(path, Store::Mode::ReadOnly);
  const std::string html = render_report(store, id, {});
  EXPECT_TRUE(contains(html, "No baseline in the store."));
  EXPECT_TRUE(contains(html, "No trials in the store."));
  EXPECT_TRUE(contains(html, "No measured candidates"));
  EXPECT_TRUE(contains(html, "No per-epoch metrics"));
  EXPECT_TRUE(contains(html, "cannot be read by this version"));
  EXPECT_FALSE(contains(html, "<svg"));
  EXPECT_FALSE(contains(html, "id=\"no-plots\"")) << "no plots wanted, so gnuplot's absence is no news";
}

TEST_F(ReportTest, BadInputIsRefused) {
  const Store store = Store::open(folder_ / "edgesweep.db", Store::Mode::ReadOnly);
  EXPECT_THROW(render_report(store, made_.experiment_id + 100, {}), InputError);
  ReportOptions options;
  options.batch = 0;
  EXPECT_THROW(render_report(store, made_.experiment_id, options), InputError);
}

TEST_F(ReportTest, WritesTheFileOrNamesIt) {
  const Store store = Store::open(folder_ / "edgesweep.db", Store::Mode::ReadOnly);
  ReportOptions options;
  options.gnuplot = "/nonexistent/gnuplot";
  const fs::path output = folder_ / "out" / "report.html";
  write_report(store, made_.experiment_id, output, options);
  std::ifstream in(output);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_TRUE(contains(text.str(), "</html>"));
  for (const auto& entry : fs::directory_iterator(folder_ / "out")) {
    EXPECT_EQ(entry.path().filename(), "report.html") << "left behind: " << entry.path();
  }
  // A folder cannot be created under a regular file.
  const fs::path blocked = folder_ / "edgesweep.db" / "report.html";
  try {
    write_report(store, made_.experiment_id, blocked, options);
    ADD_FAILURE() << "expected an error";
  } catch (const InputError& e) {
    EXPECT_TRUE(contains(e.what(), blocked.string())) << e.what();
  }
}

}  // namespace
}  // namespace edgesweep
