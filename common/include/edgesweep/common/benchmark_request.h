// What a device's benchmark child is asked to measure, typed and checked once. The farm writes it as JSON (its hash
// keys the stored measurement, so the JSON it writes is unchanged); the agent adds the model, threads and engine;
// the child reads it with parse_benchmark_request. The defaults are written here and nowhere else. LibTorch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"

namespace edgesweep {

/// Batch sizes measured when none are given: 1 (one camera frame) and 32 (throughput).
const std::vector<int64_t>& default_benchmark_batch_sizes();

/// The evaluation set of a benchmark: the device's own copy of the experiment's test split.
struct BenchmarkDataset {
  std::string id;                ///< "fashion-mnist" or "cifar10"
  std::string path;              ///< on the device
  int64_t limit = 0;             ///< images; 0: all
  std::vector<int64_t> classes;  ///< only these, relabelled by position; empty: all
  int64_t resize = 0;            ///< square side; 0: as stored
  bool rgb = false;              ///< grey replicated to three channels
};

struct BenchmarkRequest {
  std::string model;             ///< the artifact (filled in by the agent)
  int64_t threads = 1;
  std::string quantized_engine;  ///< empty: the artifact's own, else LibTorch's default
  std::vector<int64_t> batch_sizes = default_benchmark_batch_sizes();
  int64_t warmup_runs = 5;
  double warmup_seconds = 0.5;
  int64_t min_runs = 20;
  double min_seconds = 1.0;
  bool keep_latencies = true;
  uint64_t seed = 0;             ///< of the random inputs
  std::vector<int64_t> input_shape;  ///< [C, H, W]; empty: the artifact's
  std::optional<BenchmarkDataset> dataset;
  int64_t accuracy_batch_size = 256;
  std::string crash;             ///< test-only fault ("segv", "abort", "hang"); honoured only when allowed
};

/// Reads and checks a request: an object with only the keys above (unknown keys are refused, so a misspelt one is
/// not silently ignored), each of its type and in range (threads 1..1024, batch sizes 1..65536, runs and seconds not
/// negative and finite, min_runs at least 1, shape sides 1..65536, resize 0..4096, classes 0..9). Throws InputError
/// naming the key and the value.
BenchmarkRequest parse_benchmark_request(const Json& request);

}  // namespace edgesweep
