// In-process latency measurement of TorchScript models.
#include "edgesweep/workers/measure_latency.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include "edgesweep/common/benchmark_request.h"
#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

/// Sets LibTorch's intra-op thread count for its lifetime (0: leaves it alone).
class ThreadCount {
 public:
  explicit ThreadCount(int64_t threads) : previous_(at::get_num_threads()), changed_(threads > 0) {
    if (changed_) at::set_num_threads(static_cast<int>(threads));
  }
  ~ThreadCount() {
    if (changed_) at::set_num_threads(previous_);
  }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int previous_;
  bool changed_;
};

}  // namespace

LatencyOptions latency_options_for(double seconds, int64_t threads) {
  LatencyOptions options;
  options.warmup_seconds = 0.25 * seconds;
  options.min_seconds = 0.75 * seconds;
  options.threads = threads;
  return options;
}

double latency_quantile(const std::vector<double>& sorted_ms, double q) {
  EDGESWEEP_ASSERT(!sorted_ms.empty());
  const double position = q * static_cast<double>(sorted_ms.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, sorted_ms.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return sorted_ms[below] + fraction * (sorted_ms[above] - sorted_ms[below]);
}

LatencyStats summarize_latencies(std::vector<double> ms, int64_t batch_size) {
  EDGESWEEP_ASSERT(!ms.empty());
  std::sort(ms.begin(), ms.end());
  LatencyStats stats;
  stats.batch_size = batch_size;
  stats.runs = static_cast<int64_t>(ms.size());
  double sum = 0;
  for (double x : ms) sum += x;
  stats.mean_ms = sum / static_cast<double>(ms.size());
  double squares = 0;
  for (double x : ms) squares += (x - stats.mean_ms) * (x - stats.mean_ms);
  stats.std_ms = ms.size() > 1 ? std::sqrt(squares / static_cast<double>(ms.size() - 1)) : 0.0;
  stats.min_ms = ms.front();
  stats.p50_ms = latency_quantile(ms, 0.5);
  stats.p90_ms = latency_quantile(ms, 0.9);
  stats.p99_ms = latency_quantile(ms, 0.99);
  stats.images_per_second = stats.mean_ms > 0 ? 1000.0 * static_cast<double>(batch_size) / stats.mean_ms : 0.0;
  return stats;
}

LatencyRuns time_latency_runs(torch::jit::Module& module, const torch::Tensor& input, const LatencyOptions& options) {
  check_input(options.min_runs >= 1, "latency: at least one timed run is needed, got min_runs = {}", options.min_runs);
  ThreadCount threads(options.threads);
  module.eval();
  c10::InferenceMode inference;
  const std::vector<torch::jit::IValue> inputs = {input};

  LatencyRuns runs;
  const auto warmup_start = Clock::now();
  for (; runs.warmup_runs < options.warmup_runs || seconds_since(warmup_start) < options.warmup_seconds;
       ++runs.warmup_runs) {
    module.forward(inputs);
  }
  runs.warmup_seconds = seconds_since(warmup_start);
  const auto timed_start = Clock::now();
  while (static_cast<int64_t>(runs.ms.size()) < options.min_runs || seconds_since(timed_start) < options.min_seconds) {
    const auto start = Clock::now();
    module.forward(inputs);
    runs.ms.push_back(1000.0 * seconds_since(start));
  }
  const auto timed_end = Clock::now();
  runs.timed_start_seconds = std::chrono::duration<double>(timed_start.time_since_epoch()).count();
  runs.timed_end_seconds = std::chrono::duration<double>(timed_end.time_since_epoch()).count();
  return runs;
}

LatencyStats measure_latency(torch::jit::Module& module, const torch::Tensor& input, const LatencyOptions& options) {
  return summarize_latencies(time_latency_runs(module, input, options).ms, input.size(0));
}

InferenceForm inference_form_from_name(const std::string& name) {
  if (name == "archive") return InferenceForm::Archive;
  if (name == "frozen") return InferenceForm::Frozen;
  if (name == "optimized") return InferenceForm::Optimized;
  throw InputError(fmt::format("unknown inference form '{}' (archive, frozen or optimized)", name));
}

const char* inference_form_name(InferenceForm form) {
  switch (form) {
    case InferenceForm::Archive:
      return "archive";
    case InferenceForm::Frozen:
      return "frozen";
    case InferenceForm::Optimized:
      return "optimized";
  }
  return "archive";
}

torch::jit::Module prepare_for_inference(torch::jit::Module module, InferenceForm form) {
  module.eval();
  if (form == InferenceForm::Frozen) return torch::jit::freeze(module);
  if (form == InferenceForm::Optimized) return torch::jit::optimize_for_inference(module);
  return module;
}

std::vector<Metric> measure_artifact_latency(const std::filesystem::path& artifact, const Shape& input, double seconds,
                                             int64_t threads, InferenceForm form) {
  std::vector<Metric> metrics;
  if (seconds <= 0) return metrics;
  torch::jit::Module module = prepare_for_inference(torch::jit::load(artifact.string()), form);
  const LatencyOptions options = latency_options_for(seconds, threads);
  torch::Generator generator = at::detail::createCPUGenerator(0);
  for (int64_t batch : default_benchmark_batch_sizes()) {
    const auto x = torch::randn({batch, input.channels, input.height, input.width}, generator);
    const LatencyStats stats = measure_latency(module, x, options);
    metrics.push_back({-1, fmt::format("latency_b{}_ms", batch), stats.p50_ms});
    metrics.push_back({-1, fmt::format("latency_b{}_p90_ms", batch), stats.p90_ms});
  }
  return metrics;
}

}  // namespace edgesweep
