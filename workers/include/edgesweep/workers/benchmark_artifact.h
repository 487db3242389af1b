// The benchmark a device agent's child process runs on one TorchScript artifact: load time, latency statistics per
// batch size (with every run kept), top-1 accuracy on the device's own copy of the evaluation set, and the runtime
// that measured it. The header is LibTorch-free so the command line can call it without LibTorch's headers.
#pragma once

#include <filesystem>

#include "edgesweep/common/json.h"

namespace edgesweep {

/// Measures the artifact `request["model"]`. Request keys (all but "model" optional):
///   threads (1), quantized_engine ("": the artifact's meta.json `quantized_engine`, else LibTorch's default),
///   batch_sizes ([1, 32]), warmup_runs (5), warmup_seconds (0.5), min_runs (20), min_seconds (1.0),
///   keep_latencies (true), seed (0: of the random inputs),
///   dataset ({"id": "fashion-mnist" | "cifar10", "path": folder, "limit": 0 = all, "classes": [] = all: only these
///   classes, relabelled by their position as in training; before the limit}), accuracy_batch_size (256).
/// Throws InputError naming the file or key for a missing or malformed model, request or dataset.
Json benchmark_artifact(const Json& request);

/// What an empty benchmark child reports: LibTorch started with the request's threads and engine, one tiny
/// operation run, no model loaded (its peak RSS is the runtime's own share).
Json benchmark_runtime_only(const Json& request);

/// The `edgesweep agent-bench` subcommand: reads the request JSON at `request_file`, runs benchmark_artifact (or
/// benchmark_runtime_only when `empty`) and writes {"ok": true, "result": ...} or {"ok": false, "error": ...,
/// "kind": "input" | "error" | "out_of_memory"} to `output_file`. Returns the exit code (0, 2 bad input, 1 failure).
/// With EDGESWEEP_TEST_FAULTS=1 in the environment, request["crash"] = "segv" | "abort" | "hang" makes the process
/// fault on purpose before any work (for tests of the runner); otherwise the key is refused.
int run_benchmark_request(const std::filesystem::path& request_file, const std::filesystem::path& output_file,
                          bool empty);

}  // namespace edgesweep
