// The report rendered by a real browser: headless Chromium loads the file (no network), runs a small script added
// for the test that counts the plots it has laid out, and dumps the DOM; a screenshot shows the page was painted.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "edgesweep/orchestrator/report.h"
#include "report_fixture.h"

extern char** environ;

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

const char* const chromium = "/usr/bin/chromium";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct BrowserRun {
  int exit_code = -1;
  bool timed_out = false;
  std::string out;
  std::string err;
};

/// Runs argv in its own process group with output in `folder`; past `timeout` the group is killed. The group is
/// killed after a normal exit too, so no process the browser started outlives the test.
BrowserRun run_bounded(std::vector<std::string> argv, const fs::path& folder, std::chrono::seconds timeout) {
  const fs::path out = folder / "stdout.txt", err = folder / "stderr.txt";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  std::vector<char*> pointers;
  for (std::string& arg : argv) pointers.push_back(arg.data());
  pointers.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0].c_str(), &actions, &attributes, pointers.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  BrowserRun run;
  if (spawned != 0) {
    run.err = std::string("cannot start ") + argv[0] + ": " + std::strerror(spawned);
    return run;
  }
  // Wait for the end without reaping (WNOWAIT), so the group id stays ours until the group is killed below.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    siginfo_t info{};
    const int waited = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (waited == 0 && info.si_pid == pid) break;
    if (waited < 0 && errno != EINTR) break;
    if (std::chrono::steady_clock::now() > deadline) {
      run.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(-pid, SIGKILL);  // on a timeout the browser; in any case the processes it started, if any are left
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!run.timed_out) run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  run.out = read_file(out);
  run.err = read_file(err);
  return run;
}

/// Chromium's headless flags: no sandbox (tests may run as root), no GPU, nothing that goes to the network.
std::vector<std::string> browser_command(const fs::path& profile) {
  return {chromium,
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          "--disable-dev-shm-usage",
          "--user-data-dir=" + profile.string()};
}

class ReportBrowserTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(chromium, X_OK) != 0) {
      GTEST_SKIP() << chromium << " is not installed (scripts/install-deps installs Debian's chromium package)";
    }
    if (access("/usr/bin/gnuplot", X_OK) != 0) {
      GTEST_SKIP() << "gnuplot is not installed (scripts/install-deps installs gnuplot-nox)";
    }
    std::string pattern = (fs::temp_directory_path() / "edgesweep-report-browser-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    folder_ = pattern;
    made_ = report_test::build_synthetic_store(folder_ / "edgesweep.db");
    const Store store = Store::open(folder_ / "edgesweep.db", Store::Mode::ReadOnly);
    html_ = render_report(store, made_.experiment_id, {});
  }
  void TearDown() override {
    std::error_code ignored;
    if (!folder_.empty() && !HasFailure()) fs::remove_all(folder_, ignored);
  }

  /// Writes the report with a script before </body> that records, in an element of its own, how many plots the
  /// browser laid out with a real size; returns the file.
  fs::path write_page_with_probe() {
    const std::string probe =
        "<script>(function () {\n"
        "  var plots = document.querySelectorAll('figure svg.plot');\n"
        "  var shown = 0;\n"
        "  plots.forEach(function (svg) { var box = svg.getBoundingClientRect();\n"
        "    if (box.width > 100 && box.height > 50 && svg.querySelectorAll('path').length > 0) shown++; });\n"
        "  var marker = document.createElement('p');\n"
        "  marker.id = 'plot-probe';\n"
        "  marker.textContent = 'plots=' + plots.length + ' shown=' + shown;\n"
        "  document.body.appendChild(marker);\n"
        "})();</script>\n";
    std::string page = html_;
    const size_t body_end = page.rfind("</body>");
    EXPECT_NE(body_end, std::string::npos);
    page.insert(body_end, probe);
    const fs::path file = folder_ / "report.html";
    std::ofstream(file) << page;
    return file;
  }

  fs::path folder_;
  report_test::SyntheticExperiment made_;
  std::string html_;
};

TEST_F(ReportBrowserTest, ChromiumLoadsThePageAndLaysOutEveryPlot) {
  const fs::path page = write_page_with_probe();
  size_t figures = 0;
  for (size_t at = html_.find("<figure>"); at != std::string::npos; at = html_.find("<figure>", at + 1)) ++figures;
  ASSERT_GT(figures, 0u);
  std::vector<std::string> command = browser_command(folder_ / "profile-dom");
  command.push_back("--dump-dom");
  command.push_back("file://" + page.string());
  const BrowserRun run = run_bounded(command, folder_, std::chrono::seconds(90));
  ASSERT_FALSE(run.timed_out) << "chromium did not finish in 90 s; stderr:\n" << run.err;
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string dom = run.out;
  // The script ran (its element is in the DOM) and found every plot laid out with a real size and drawn paths.
  const std::string expected = "plots=" + std::to_string(figures) + " shown=" + std::to_string(figures);
  EXPECT_NE(dom.find("<p id=\"plot-probe\">" + expected + "</p>"), std::string::npos)
      << "probe says: " << dom.substr(std::min(dom.find("plot-probe"), dom.size()), 60);
  // The parsed document holds the sections and the escaped description as text, not as an element.
  for (const char* id : {"experiment", "baseline", "methods", "pareto", "curves"}) {
    EXPECT_NE(dom.find(std::string("<section id=\"") + id + "\">"), std::string::npos) << id;
  }
  EXPECT_NE(dom.find("&lt;script&gt;alert('owned')&lt;/script&gt;"), std::string::npos);
  EXPECT_EQ(dom.find("alert('owned')</script>"), std::string::npos);
}

TEST_F(ReportBrowserTest, ChromiumPaintsAScreenshot) {
  const fs::path page = write_page_with_probe();
  const fs::path png = folder_ / "report.png";
  std::vector<std::string> command = browser_command(folder_ / "profile-shot");
  command.push_back("--hide-scrollbars");
  command.push_back("--window-size=1280,2400");
  command.push_back("--screenshot=" + png.string());
  command.push_back("file://" + page.string());
  const BrowserRun run = run_bounded(command, folder_, std::chrono::seconds(90));
  ASSERT_FALSE(run.timed_out) << "chromium did not finish in 90 s; stderr:\n" << run.err;
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string image = read_file(png);
  ASSERT_GT(image.size(), 24u) << "no screenshot written; stderr:\n" << run.err;
  EXPECT_EQ(image.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  // Width and height from the IHDR chunk (big-endian, right after the signature and the chunk header).
  const auto be32 = [&](size_t at) {
    return (static_cast<uint32_t>(static_cast<unsigned char>(image[at])) << 24) |
           (static_cast<uint32_t>(static_cast<unsigned char>(image[at + 1])) << 16) |
           (static_cast<uint32_t>(static_cast<unsigned char>(image[at + 2])) << 8) |
           static_cast<uint32_t>(static_cast<unsigned char>(image[at + 3]));
  };
  EXPECT_EQ(be32(16), 1280u);
  EXPECT_EQ(be32(20), 2400u);
  // A blank page compresses to almost nothing; text, tables and plots do not.
  EXPECT_GT(image.size(), 50u * 1024u);
}

}  // namespace
}  // namespace edgesweep
