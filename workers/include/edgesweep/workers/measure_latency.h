// In-process latency of a TorchScript model: warm-up by count and by time, then timed runs until both a minimum
// count and a minimum duration are met, summarised as min, mean, percentiles and throughput.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/script.h>

#include "edgesweep/common/task.h"
#include "edgesweep/workers/graph.h"

namespace edgesweep {

/// How long to measure. Both warm-up limits and both timed limits must be reached before moving on.
struct LatencyOptions {
  int64_t warmup_runs = 3;      ///< untimed runs, at least this many
  double warmup_seconds = 0.1;  ///< and at least this long
  int64_t min_runs = 10;        ///< timed runs, at least this many
  double min_seconds = 0.3;     ///< and at least this long
  int64_t threads = 0;          ///< LibTorch intra-op threads while measuring (0: leave as set)
};

/// The options for a budget of `seconds` per batch size: a quarter of it for warm-up, the rest timed.
LatencyOptions latency_options_for(double seconds, int64_t threads);

/// Statistics of per-run latencies, in milliseconds.
struct LatencyStats {
  int64_t batch_size = 0;
  int64_t runs = 0;
  double min_ms = 0;
  double mean_ms = 0;
  double std_ms = 0;
  double p50_ms = 0;
  double p90_ms = 0;
  double p99_ms = 0;
  double images_per_second = 0;  ///< batch_size / mean
};

/// The `q`-th quantile (0..1) of `sorted_ms`, interpolating linearly between neighbouring order statistics.
double latency_quantile(const std::vector<double>& sorted_ms, double q);

/// Summarises per-run latencies of one batch size. `ms` must not be empty.
LatencyStats summarize_latencies(std::vector<double> ms, int64_t batch_size);

/// Every timed run of one measurement, with how the warm-up went and when the timed runs began and ended.
struct LatencyRuns {
  std::vector<double> ms;            ///< latency of each timed run, in run order
  int64_t warmup_runs = 0;           ///< untimed runs made
  double warmup_seconds = 0;         ///< and how long they took
  double timed_start_seconds = 0;    ///< steady (monotonic) clock at the first timed run, in seconds
  double timed_end_seconds = 0;      ///< and after the last one
};

/// Runs `module` (switched to eval mode) on `input` without autograd, as the options say, and keeps every run.
LatencyRuns time_latency_runs(torch::jit::Module& module, const torch::Tensor& input, const LatencyOptions& options);

/// Runs `module` (switched to eval mode) on `input` without autograd, as the options say, and times every run.
LatencyStats measure_latency(torch::jit::Module& module, const torch::Tensor& input, const LatencyOptions& options);

/// The form a loaded archive runs in.
enum class InferenceForm {
  Archive,    ///< as torch::jit::load returns it: what the device agent times
  Frozen,     ///< torch::jit::freeze: attributes inlined as constants, conv + batch norm folded
  Optimized,  ///< torch::jit::optimize_for_inference: frozen, then oneDNN layouts and prepacked weights where built in
};

/// "archive", "frozen" or "optimized"; anything else is an InputError naming the value.
InferenceForm inference_form_from_name(const std::string& name);
const char* inference_form_name(InferenceForm form);

/// `module` (in eval mode) turned into `form`; the same module for Archive.
torch::jit::Module prepare_for_inference(torch::jit::Module module, InferenceForm form);

/// Loads the TorchScript file `artifact` with torch::jit::load, turns it into `form` and measures it at batch 1 and 32
/// on random inputs of `input` shape, spending about `seconds` per batch size with `threads` threads. Returns the final
/// metrics latency_b1_ms, latency_b1_p90_ms, latency_b32_ms, latency_b32_p90_ms (the plain names are medians); none
/// when `seconds` is 0.
std::vector<Metric> measure_artifact_latency(const std::filesystem::path& artifact, const Shape& input, double seconds,
                                             int64_t threads, InferenceForm form = InferenceForm::Archive);

}  // namespace edgesweep
