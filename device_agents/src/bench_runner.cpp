// The isolated benchmark runner: start `edgesweep agent-bench` under the profile (process group, CPU affinity, thread
// count) through the process helper of common/process.h, enforce the timeout and the memory cap from the parent, and read the child's JSON,
// its exit status and its peak RSS (wait4).
//
// The memory cap is on resident memory (RSS), what a board's RAM limits, and is enforced by the parent: it reads the
// child's VmRSS every few milliseconds and kills the child's process group when it is over the cap, and after the
// child has ended it compares the kernel's exact high-water mark (ru_maxrss) with the cap, so a peak shorter than a
// poll still fails the run. Resource limits count something else: RLIMIT_AS and RLIMIT_DATA count address space that
// is reserved but never touched, and the runtime reserves plenty (OpenBLAS maps a 128 MB buffer at start and retries
// a refused mapping forever, so a child under a small RLIMIT_DATA hangs instead of failing); RLIMIT_RSS is not
// enforced by Linux; cgroups' memory.max needs delegated privileges. The price: a child may go a few milliseconds'
// worth of allocation over the cap before it is killed, so the host needs that much headroom.
#include "edgesweep/device_agents/bench_runner.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/process.h"
#include "edgesweep/device_agents/probes.h"

extern char** environ;

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

/// The runtime alone starts in a second or two; this only bounds a child that hangs while starting.
constexpr double kEmptyChildTimeoutSeconds = 120;

/// tegrastats' sampling period during a benchmark: a timed window of a second gets about ten samples.
constexpr int kTegrastatsIntervalMs = 100;

/// Job folders are named edgesweep-bench-<agent pid>-XXXXXX, so an agent can tell the folders of dead ones.
constexpr const char* kJobFolderPrefix = "edgesweep-bench-";

/// How a child ended.
struct ChildExit {
  bool cancelled = false;  ///< killed because the agent is stopping
  bool timed_out = false;
  bool over_memory_cap = false;  ///< killed by the agent for resident memory over the profile's cap
  double rss_at_kill_mb = 0;
  bool signaled = false;
  int signal = 0;
  int exit_code = 0;
  /// ru_maxrss of wait4: the child's high-water mark (the kernel also carries over the agent's own RSS at fork time
  /// through exec, a floor far below any LibTorch child).
  double peak_rss_mb = 0;
  double seconds = 0;
  std::string stderr_tail;
  Json output;  ///< the result file's JSON, null when there is none
};

std::string read_tail(const fs::path& path, size_t max_chars) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  if (text.size() > max_chars) text = "..." + text.substr(text.size() - max_chars);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

/// The resident memory of process `pid` (VmRSS) in MiB; -1 when it cannot be read (the process has ended).
double resident_mb(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

/// Starts `args` (args[0] is the executable) under `profile` in a process group of its own that dies with this
/// thread, and waits up to `timeout_seconds`, until `cancelled` is set or until its resident memory passes the cap.
ChildExit run_child(const std::vector<std::string>& args, const AgentProfile& profile, int64_t threads,
                    double timeout_seconds, const fs::path& output_file, const fs::path& stderr_file,
                    const std::atomic<bool>* cancelled) {
  ProcessOptions options;
  options.argv = args;
  std::vector<std::string>& environment = options.environment.emplace();
  for (char** e = environ; *e != nullptr; ++e) {
    if (strncmp(*e, "OMP_NUM_THREADS=", 16) != 0) environment.emplace_back(*e);
  }
  environment.push_back(fmt::format("OMP_NUM_THREADS={}", threads));
  // Killed with the agent, even by SIGKILL: the signal comes when the forking thread ends, and the agent's
  // benchmark thread lives until its child has been reaped.
  options.parent_death_signal = SIGKILL;
  options.cpus = profile.cpus;
  options.output_file = stderr_file;
  const double cap_mb = static_cast<double>(profile.memory_mb);

  const auto start = Clock::now();
  Process child(options);
  ChildExit exit;
  const auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_seconds));
  auto pause = std::chrono::milliseconds(2);
  const auto longest_pause = std::chrono::milliseconds(cap_mb > 0 ? 5 : 50);
  while (!child.ended()) {
    if (cancelled != nullptr && cancelled->load()) {
      exit.cancelled = true;
      break;
    }
    const double resident = cap_mb > 0 ? resident_mb(child.pid()) : -1;
    const bool over_cap = resident > cap_mb;
    if (over_cap || Clock::now() >= deadline) {
      exit.timed_out = !over_cap;
      exit.over_memory_cap = over_cap;
      exit.rss_at_kill_mb = resident;
      break;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, longest_pause);
  }
  child.kill_group(SIGKILL);  // the child when it is over time or memory, and anything it left behind in its group
  const ProcessExit ended = child.wait();
  exit.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  exit.peak_rss_mb = static_cast<double>(ended.usage.ru_maxrss) / 1024.0;  // kilobytes on Linux
  exit.signaled = ended.signal != 0;
  exit.signal = ended.signal;
  exit.exit_code = ended.exit_code;
  exit.stderr_tail = read_tail(stderr_file, 600);
  if (fs::exists(output_file)) {
    std::ifstream in(output_file);
    try {
      exit.output = Json::parse(in);
    } catch (const Json::exception&) {
      exit.output = nullptr;
    }
  }
  return exit;
}

std::string with_stderr(const std::string& message, const ChildExit& exit) {
  return exit.stderr_tail.empty() ? message : message + "; its stderr ends: " + exit.stderr_tail;
}

/// The outcome of a finished child: its result, or one line saying what happened to it.
BenchOutcome interpret(const ChildExit& exit, const AgentProfile& profile, double timeout_seconds) {
  BenchOutcome outcome;
  const std::string cap =
      profile.memory_mb > 0 ? fmt::format(" under the memory cap of {} MB", profile.memory_mb) : std::string();
  if (exit.cancelled) {
    outcome.error = fmt::format("agent stopping: the benchmark was stopped after {:.1f} s (its child was killed)",
                                exit.seconds);
    return outcome;
  }
  if (exit.over_memory_cap) {
    outcome.error = fmt::format("out of memory: resident memory reached {:.0f} MB, over the memory cap of {} MB "
                                "(the agent killed the benchmark child)",
                                exit.rss_at_kill_mb, profile.memory_mb);
    return outcome;
  }
  if (exit.timed_out) {
    outcome.error = fmt::format("timeout after {:g} s (the benchmark child was killed)", timeout_seconds);
    return outcome;
  }
  if (profile.memory_mb > 0 && exit.peak_rss_mb > static_cast<double>(profile.memory_mb)) {
    outcome.error = fmt::format("out of memory: peak RSS {:.0f} MB is over the memory cap of {} MB (between two "
                                "polls; a board with {} MB would not have held it)",
                                exit.peak_rss_mb, profile.memory_mb, profile.memory_mb);
    return outcome;
  }
  if (exit.signaled) {
    std::string message = fmt::format("killed by signal {} (peak RSS {:.0f} MB)", signal_name(exit.signal),
                                      exit.peak_rss_mb);
    if (exit.signal == SIGKILL) {
      message += "; not by the agent: the kernel's out-of-memory killer ends processes this way";
    }
    outcome.error = with_stderr(message, exit);
    return outcome;
  }
  if (exit.output.is_object() && exit.output.value("ok", false) && exit.output.contains("result")) {
    outcome.ok = true;
    outcome.result = exit.output.at("result");
    return outcome;
  }
  if (exit.output.is_object() && exit.output.contains("error")) {
    const std::string kind = exit.output.value("kind", std::string("error"));
    const std::string error = exit.output.value("error", std::string());
    outcome.error = kind == "out_of_memory" ? fmt::format("out of memory{} (peak RSS {:.0f} MB): {}", cap,
                                                          exit.peak_rss_mb, error)
                                            : error;
    return outcome;
  }
  if (exit.exit_code == 125) {
    outcome.error = "the benchmark child found its agent gone before it started";
    return outcome;
  }
  if (exit.exit_code == 127 || exit.exit_code == 126) {
    outcome.error = with_stderr(fmt::format("the benchmark child could not start (exit code {})", exit.exit_code),
                                exit);
    return outcome;
  }
  outcome.error = with_stderr(
      fmt::format("the benchmark child exited with code {} without a result{}", exit.exit_code, cap), exit);
  return outcome;
}

Json profile_json(const AgentProfile& profile) {
  return Json{{"name", profile.name},
              {"threads", profile_threads(profile)},
              {"cpus", profile.cpus},
              {"memory_mb", profile.memory_mb},
              {"engine", profile.engine}};
}

/// Writes `request`, runs the child on it and interprets how it ended.
BenchOutcome run_request(const fs::path& executable, const Json& request, const AgentProfile& profile, bool empty,
                         double timeout_seconds, double* peak_rss_mb, const std::atomic<bool>* cancelled = nullptr) {
  if (!fs::is_regular_file(executable)) {
    return BenchOutcome{false, fmt::format("benchmark executable '{}' does not exist", executable.string()), {}};
  }
  if (!(timeout_seconds > 0)) {
    return BenchOutcome{false, fmt::format("benchmark timeout must be positive, got {}", timeout_seconds), {}};
  }
  // Named after this agent's pid, so an agent can tell the folders of dead ones (remove_stale_job_folders).
  const TemporaryFolder folder(fmt::format("{}{}-", kJobFolderPrefix, getpid()));
  const fs::path request_file = folder / "request.json";
  const fs::path output_file = folder / "result.json";
  {
    std::ofstream out(request_file);
    out << request.dump() << "\n";
    check(out.good(), "benchmark: cannot write '{}'", request_file.string());
  }
  std::vector<std::string> args = {executable.string(), "agent-bench", "--request", request_file.string(),
                                   "--output", output_file.string()};
  if (empty) args.push_back("--empty");
  const ChildExit exit = run_child(args, profile, profile_threads(profile), timeout_seconds, output_file,
                                   folder / "stderr.txt", cancelled);
  if (peak_rss_mb) *peak_rss_mb = exit.peak_rss_mb;
  BenchOutcome outcome = interpret(exit, profile, timeout_seconds);
  if (outcome.ok) outcome.result["wall_seconds"] = exit.seconds;
  return outcome;
}

Json base_request(const AgentProfile& profile) {
  Json request{{"threads", profile_threads(profile)}};
  if (!profile.engine.empty()) request["quantized_engine"] = profile.engine;
  return request;
}

/// Adds, to each batch of `result`, what tegrastats saw during its timed window (power as the mean total).
void add_power(Json& result, const std::vector<TegrastatsSample>& samples) {
  for (Json& batch : result.at("batches")) {
    const Json& window = batch.at("timed_window");
    const WindowSummary s = summarize_window(samples, window.at(0).get<double>(), window.at(1).get<double>());
    batch["tegrastats"] = Json{{"samples", s.samples},
                               {"mean_power_mw", s.samples > 0 ? Json(s.mean_power_mw) : Json()},
                               {"power_source", s.power_source},
                               {"max_ram_used_mb", s.max_ram_used_mb},
                               {"mean_cpu_load_percent", s.mean_cpu_load_percent},
                               {"mean_gpu_load_percent", s.mean_gpu_load_percent}};
  }
  result["tegrastats"] = Json{{"samples", samples.size()}, {"interval_ms", kTegrastatsIntervalMs}};
}

/// One benchmark at a time per agent process, so measurements do not disturb each other.
std::mutex& bench_mutex() {
  static std::mutex mutex;
  return mutex;
}

BenchOutcome empty_child_locked(const fs::path& executable, const AgentProfile& profile, double timeout_seconds) {
  double peak = 0;
  BenchOutcome outcome = run_request(executable, base_request(profile), profile, true, timeout_seconds, &peak);
  if (outcome.ok) {
    outcome.result["memory"] = Json{{"peak_rss_mb", peak}};
    outcome.result["profile"] = profile_json(profile);
  } else {
    outcome.error = "the benchmark runtime alone (an empty child) failed under profile '" + profile.name +
                    "': " + outcome.error;
  }
  return outcome;
}

}  // namespace

size_t remove_stale_job_folders(const fs::path& folder) {
  size_t removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kJobFolderPrefix, 0) != 0 || !it->is_directory(ec)) continue;
    const std::string rest = name.substr(strlen(kJobFolderPrefix));
    const size_t dash = rest.find('-');
    if (dash == 0 || dash == std::string::npos || rest.find_first_not_of("0123456789") != dash) continue;
    const long owner = std::strtol(rest.substr(0, dash).c_str(), nullptr, 10);
    // A live owner (or a pid reused by another process) keeps its folder; kill(pid, 0) fails with ESRCH when none.
    if (owner <= 0 || owner == getpid() || kill(static_cast<pid_t>(owner), 0) == 0 || errno != ESRCH) continue;
    std::error_code remove_ec;
    if (fs::remove_all(it->path(), remove_ec) > 0 && !remove_ec) ++removed;
  }
  return removed;
}

int64_t profile_threads(const AgentProfile& profile) {
  if (profile.threads > 0) return profile.threads;
  if (!profile.cpus.empty()) return static_cast<int64_t>(profile.cpus.size());
  return std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
}

std::string signal_name(int signal) {
  const char* abbreviation = sigabbrev_np(signal);
  return abbreviation ? std::string("SIG") + abbreviation : fmt::format("signal {}", signal);
}

BenchOutcome run_empty_child(const fs::path& executable, const AgentProfile& profile, double timeout_seconds) {
  try {
    std::lock_guard<std::mutex> lock(bench_mutex());
    return empty_child_locked(executable, profile, timeout_seconds);
  } catch (const std::exception& e) {
    return BenchOutcome{false, e.what(), {}};
  }
}

BenchOutcome run_benchmark_child(const fs::path& executable, const BenchJob& job, const AgentProfile& profile) {
  try {
    std::lock_guard<std::mutex> lock(bench_mutex());
    if (!job.request.is_null() && !job.request.is_object()) {
      return BenchOutcome{false, fmt::format("benchmark request must be a JSON object, got {}", job.request.dump()),
                          {}};
    }
    // The runtime's own share, once per (executable, profile).
    static std::map<std::string, double> empty_peak_rss_mb;
    const std::string key = executable.string() + " " + profile_json(profile).dump();
    if (empty_peak_rss_mb.count(key) == 0) {
      const BenchOutcome empty = empty_child_locked(executable, profile, kEmptyChildTimeoutSeconds);
      if (!empty.ok) return empty;
      empty_peak_rss_mb[key] = empty.result.at("memory").at("peak_rss_mb").get<double>();
    }
    Json request = job.request.is_null() ? Json::object() : job.request;
    const Json from_profile = base_request(profile);
    for (const auto& [name, value] : from_profile.items()) request[name] = value;
    request["model"] = job.model.string();
    double peak = 0;
    // On a Jetson, RAM, loads and power rails are sampled beside the child; power is averaged per timed window.
    TegrastatsSampler sampler(tegrastats_program(), kTegrastatsIntervalMs);
    BenchOutcome outcome =
        run_request(executable, request, profile, false, job.timeout_seconds, &peak, job.cancelled.get());
    const std::vector<TegrastatsSample> samples = sampler.stop();
    if (!outcome.ok) return outcome;
    if (!samples.empty()) add_power(outcome.result, samples);
    const double empty = empty_peak_rss_mb[key];
    outcome.result["memory"] = Json{{"peak_rss_mb", peak},
                                    {"empty_peak_rss_mb", empty},
                                    {"model_rss_mb", std::max(0.0, peak - empty)},
                                    {"cap_mb", profile.memory_mb}};
    outcome.result["profile"] = profile_json(profile);
    outcome.result["hardware"] = probe_hardware();
    return outcome;
  } catch (const std::exception& e) {
    return BenchOutcome{false, e.what(), {}};
  }
}

}  // namespace edgesweep
