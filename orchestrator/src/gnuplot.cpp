// gnuplot as an SVG renderer for the report: script generation, a bounded child process, SVG clean-up.
#include "gnuplot.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

extern char** environ;

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

/// A temporary folder that removes itself.
struct TemporaryFolder {
  fs::path path;
  TemporaryFolder() {
    std::string pattern = (fs::temp_directory_path() / "edgesweep-plot-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error(fmt::format("cannot create a temporary folder from '{}': {}", pattern,
                                           std::strerror(errno)));
    }
    path = pattern;
  }
  ~TemporaryFolder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;
};

/// Runs `program script` with output to `log`; the exit code, or -1 with `timed_out` set when it was killed.
int run_bounded(const std::string& program, const fs::path& script, const fs::path& log,
                std::chrono::seconds timeout, bool& timed_out) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);  // its own group, so a timeout also ends anything it started
  std::vector<std::string> args = {program, script.string()};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, program.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawned != 0) throw std::runtime_error(fmt::format("cannot start '{}': {}", program, std::strerror(spawned)));

  // Wait for the end without reaping (WNOWAIT), so the group id stays ours until the group is killed below.
  timed_out = false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    siginfo_t info{};
    const int waited = waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (waited == 0 && info.si_pid == pid) break;
    if (waited < 0 && errno != EINTR) break;  // cannot happen for our own child; reaped below either way
    if (std::chrono::steady_clock::now() > deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(-pid, SIGKILL);  // on a timeout the whole group; else whatever the group left behind
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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
    TemporaryFolder folder;
    const fs::path script = folder.path / "plots.gp";
    const fs::path log = folder.path / "gnuplot.log";
    {
      std::ofstream out(script);
      out << gnuplot_script(plots, folder.path.string());
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
      const fs::path file = folder.path / fmt::format("plot{}.svg", p);
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
