// Parsing tegrastats lines (RAM, CPU and GPU load, temperatures, INA3221 power rails), the board's total power over a
// measurement window, and a sampler running tegrastats beside a benchmark.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cctype>
#include <cmath>
#include <cstring>
#include <regex>

#include <fmt/format.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/process.h"
#include "edgesweep/device_agents/probes.h"

namespace edgesweep {
namespace {

std::vector<std::string> split_blanks(const std::string& line) {
  std::vector<std::string> tokens;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    const size_t start = i;
    while (i < line.size() && !std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    if (i > start) tokens.push_back(line.substr(start, i - start));
  }
  return tokens;
}

[[noreturn]] void malformed(const std::string& line, const std::string& what) {
  throw InputError(fmt::format("tegrastats line: {} in \"{}\"", what, line));
}

/// "2185/3956MB" -> used, total (MB).
std::pair<double, double> used_total(const std::string& token, const std::string& line) {
  static const std::regex pattern(R"((\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)MB)");
  std::smatch m;
  if (!std::regex_match(token, m, pattern)) malformed(line, fmt::format("'{}' is not used/totalMB", token));
  return {std::stod(m[1]), std::stod(m[2])};
}

/// Skips a parenthesised group "(lfb 112x4MB)" or "(cached 0MB)" starting at `i`.
size_t skip_group(const std::vector<std::string>& tokens, size_t i) {
  if (i < tokens.size() && tokens[i].front() == '(') {
    while (i < tokens.size() && tokens[i].back() != ')') ++i;
    ++i;
  }
  return i;
}

}  // namespace

TegrastatsSample parse_tegrastats_line(const std::string& line) {
  static const std::regex rail_name(R"([A-Za-z][A-Za-z0-9_]*)");
  static const std::regex rail_value(R"((\d+(?:\.\d+)?)(?:mW)?/(\d+(?:\.\d+)?)(?:mW)?)");
  static const std::regex temperature(R"(([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C)");
  static const std::regex core(R"((\d+(?:\.\d+)?)%(?:@\d+)?)");
  static const std::regex percent(R"((\d+(?:\.\d+)?)%.*)");

  const std::vector<std::string> tokens = split_blanks(line);
  TegrastatsSample sample;
  bool has_ram = false;
  size_t i = 0;
  while (i < tokens.size()) {
    const std::string& token = tokens[i];
    const std::string next = i + 1 < tokens.size() ? tokens[i + 1] : "";
    std::smatch m;
    if (token == "RAM" || token == "SWAP") {
      const auto [used, total] = used_total(next, line);
      (token == "RAM" ? sample.ram_used_mb : sample.swap_used_mb) = used;
      (token == "RAM" ? sample.ram_total_mb : sample.swap_total_mb) = total;
      has_ram = has_ram || token == "RAM";
      i = skip_group(tokens, i + 2);
    } else if (token == "IRAM") {
      i = skip_group(tokens, i + 2);
    } else if (token == "CPU" && !next.empty() && next.front() == '[') {
      if (next.back() != ']') malformed(line, fmt::format("CPU field '{}' has no closing ]", next));
      const std::string list = next.substr(1, next.size() - 2);
      size_t start = 0;
      while (start <= list.size()) {
        const size_t comma = std::min(list.find(',', start), list.size());
        const std::string item = list.substr(start, comma - start);
        if (item == "off") {
          sample.cpu_load_percent.push_back(-1);
        } else if (std::regex_match(item, m, core)) {
          sample.cpu_load_percent.push_back(std::stod(m[1]));
        } else {
          malformed(line, fmt::format("CPU core '{}' is not N%@MHz or off", item));
        }
        start = comma + 1;
      }
      i += 2;
    } else if (token == "GR3D_FREQ") {
      if (!std::regex_match(next, m, percent)) malformed(line, fmt::format("GR3D_FREQ '{}' is not N%", next));
      sample.gpu_load_percent = std::stod(m[1]);
      i += 2;
    } else if (std::regex_match(token, m, temperature)) {
      const double celsius = std::stod(m[2]);
      if (celsius > -200) sample.temperatures_c.emplace_back(m[1], celsius);  // -256C: the sensor is off
      ++i;
    } else if (std::regex_match(token, rail_name) && std::regex_match(next, m, rail_value)) {
      sample.rails.push_back(PowerRail{token, std::stod(m[1]), std::stod(m[2])});
      i += 2;
    } else {
      ++i;  // frequencies, engines (APE, VIC_FREQ, NVENC, ...) and a leading date and time
    }
  }
  if (!has_ram) malformed(line, "no RAM field");
  double sum = 0;
  int on = 0;
  for (double load : sample.cpu_load_percent) {
    if (load >= 0) {
      sum += load;
      ++on;
    }
  }
  sample.cpu_load_mean_percent = on > 0 ? sum / on : 0.0;
  return sample;
}

TotalPower total_power(const TegrastatsSample& sample) {
  // Named totals first: adding a total to its own sub-rails would count the same power twice.
  for (const char* total : {"POM_5V_IN", "VDD_IN", "VIN_SYS_5V0"}) {
    for (const PowerRail& rail : sample.rails) {
      if (rail.name == total) return TotalPower{rail.current_mw, rail.name};
    }
  }
  if (sample.rails.empty()) return TotalPower{0, "none"};
  double sum = 0;
  for (const PowerRail& rail : sample.rails) sum += rail.current_mw;
  return TotalPower{sum, "sum"};
}

WindowSummary summarize_window(const std::vector<TegrastatsSample>& samples, double start_seconds,
                               double end_seconds) {
  WindowSummary summary;
  double power = 0, cpu = 0, gpu = 0;
  int64_t gpu_samples = 0;
  for (const TegrastatsSample& s : samples) {
    if (s.time_seconds < start_seconds || s.time_seconds > end_seconds) continue;
    const TotalPower total = total_power(s);
    power += total.mw;
    summary.power_source = total.source;
    cpu += s.cpu_load_mean_percent;
    if (s.gpu_load_percent >= 0) {
      gpu += s.gpu_load_percent;
      ++gpu_samples;
    }
    summary.max_ram_used_mb = std::max(summary.max_ram_used_mb, s.ram_used_mb);
    ++summary.samples;
  }
  if (summary.samples > 0) {
    summary.mean_power_mw = power / static_cast<double>(summary.samples);
    summary.mean_cpu_load_percent = cpu / static_cast<double>(summary.samples);
  }
  if (gpu_samples > 0) summary.mean_gpu_load_percent = gpu / static_cast<double>(gpu_samples);
  return summary;
}

Json sample_json(const TegrastatsSample& sample) {
  Json rails = Json::object();
  for (const PowerRail& r : sample.rails) {
    rails[r.name] = Json{{"current_mw", r.current_mw}, {"average_mw", r.average_mw}};
  }
  Json temperatures = Json::object();
  for (const auto& [name, celsius] : sample.temperatures_c) temperatures[name] = celsius;
  const TotalPower total = total_power(sample);
  return Json{{"ram_used_mb", sample.ram_used_mb},
              {"ram_total_mb", sample.ram_total_mb},
              {"swap_used_mb", sample.swap_used_mb},
              {"swap_total_mb", sample.swap_total_mb},
              {"cpu_load_percent", sample.cpu_load_percent},
              {"cpu_load_mean_percent", sample.cpu_load_mean_percent},
              {"gpu_load_percent", sample.gpu_load_percent},
              {"rails", rails},
              {"temperatures_c", temperatures},
              {"total_power_mw", total.mw},
              {"total_power_source", total.source}};
}

std::filesystem::path tegrastats_program() {
  const char* configured = std::getenv("EDGESWEEP_TEGRASTATS");
  if (configured != nullptr && *configured != '\0') return configured;
  if (access("/usr/bin/tegrastats", X_OK) == 0) return "/usr/bin/tegrastats";
  return {};
}

TegrastatsSampler::TegrastatsSampler(const std::filesystem::path& program, int interval_ms) {
  if (program.empty()) return;
  int pipe_fds[2];
  check(pipe2(pipe_fds, O_CLOEXEC) == 0, "tegrastats: pipe failed: {}", strerror(errno));
  ProcessOptions options;
  options.argv = {program.string(), "--interval", std::to_string(interval_ms)};
  options.output_fd = pipe_fds[1];
  options.error_file = "/dev/null";
  try {
    process_ = std::make_unique<Process>(options);
  } catch (...) {
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    throw;
  }
  close(pipe_fds[1]);
  fd_ = pipe_fds[0];
  reader_ = std::thread([this] { read_lines(); });
}

void TegrastatsSampler::read_lines() {
  std::string pending;
  char buffer[4096];
  for (;;) {
    const ssize_t n = read(fd_, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buffer, static_cast<size_t>(n));
    size_t newline;
    while ((newline = pending.find('\n')) != std::string::npos) {
      const std::string line = pending.substr(0, newline);
      pending.erase(0, newline + 1);
      const double now =
          std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
      try {
        TegrastatsSample sample = parse_tegrastats_line(line);
        sample.time_seconds = now;
        std::lock_guard<std::mutex> lock(mutex_);
        samples_.push_back(std::move(sample));
      } catch (const InputError&) {
        // Not a sample line (a banner, a partial line at exit): nothing to keep.
      }
    }
  }
}

std::vector<TegrastatsSample> TegrastatsSampler::stop() {
  if (process_) {
    process_->kill_group(SIGTERM);
    process_->wait();  // and whatever of its group ignored the request is killed
    process_.reset();
  }
  if (reader_.joinable()) reader_.join();
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  return std::move(samples_);
}

TegrastatsSampler::~TegrastatsSampler() { stop(); }

}  // namespace edgesweep
