// The isolated benchmark of a device agent: each candidate model is measured by a fresh child process
// (`edgesweep agent-bench`) under the agent's profile (threads, CPU affinity, memory cap, quantized engine), so a
// crash, an allocation failure or a hang of a bad model cannot take the agent down. LibTorch-free.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"

namespace edgesweep {

/// What a device agent stands for: several profiles on one host act as boards of different capacity.
struct AgentProfile {
  std::string name;        ///< label of the profile in results
  int64_t threads = 0;     ///< LibTorch threads of the child; 0: one per CPU of `cpus`, or of the host
  std::vector<int> cpus;   ///< CPU affinity of the child; empty: all CPUs
  int64_t memory_mb = 0;   ///< cap on the child's resident memory (RSS), enforced by the agent; 0: none
  std::string engine;      ///< quantized engine ("onednn", "qnnpack"); empty: the artifact's own
};

/// One benchmark: an artifact and the request keys for the child (see workers/benchmark_artifact.h; "model",
/// "threads" and, when the profile names one, "quantized_engine" are filled in by the runner).
struct BenchJob {
  std::filesystem::path model;
  Json request;
  double timeout_seconds = 300;  ///< wall-clock limit of the child; it is killed (its process group) after it
  /// Set by the agent when it stops: the running child is killed (its process group) and the job fails with
  /// "agent stopping". Null: never cancelled.
  std::shared_ptr<const std::atomic<bool>> cancelled;
};

/// The result of a benchmark: `result` when ok, else a one-line `error` saying what happened to the child.
struct BenchOutcome {
  bool ok = false;
  std::string error;
  Json result;
};

/// Runs `executable agent-bench` on `job` in a child process under `profile` and waits for it (one benchmark at a time
/// per process: concurrent calls queue). On success `result` is the child's JSON with "profile", "hardware" and a
/// "memory" object added: peak_rss_mb (the child's high-water mark from wait4), empty_peak_rss_mb (of a child that
/// only starts LibTorch, measured once per profile and cached) and model_rss_mb (their difference). Failures are
/// outcomes, never exceptions: "timeout after N s", "killed by signal SIGSEGV", "out of memory: ... over the memory
/// cap of N MB", or the child's own error message.
BenchOutcome run_benchmark_child(const std::filesystem::path& executable, const BenchJob& job,
                                 const AgentProfile& profile);

/// Runs `executable agent-bench --empty` under `profile` (no cache): result holds "runtime" (LibTorch version,
/// threads, quantized engines) and "memory" {"peak_rss_mb"}. What the agent reports of its LibTorch in HELLO.
BenchOutcome run_empty_child(const std::filesystem::path& executable, const AgentProfile& profile,
                             double timeout_seconds = 60);

/// Removes the job folders (edgesweep-bench-<pid>-*) under `folder` whose agent process no longer exists: what an
/// agent killed by SIGKILL mid-benchmark left behind. Returns how many were removed.
size_t remove_stale_job_folders(const std::filesystem::path& folder);

/// The thread count the child gets under `profile` (0 resolved as documented in AgentProfile::threads).
int64_t profile_threads(const AgentProfile& profile);

/// The name of signal `signal` ("SIGSEGV"), or "signal N" when it has none.
std::string signal_name(int signal);

}  // namespace edgesweep
