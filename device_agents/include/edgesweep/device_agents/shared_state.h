// What all connections of one agent share: its settings, the content-addressed model folder, the client nonces
// already accepted, and the benchmark queue with the one thread that runs benchmarks, one at a time.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "edgesweep/common/json.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/bench_runner.h"
#include "edgesweep/device_agents/frame.h"

namespace edgesweep {

/// Runs one benchmark to its end (blocking); never called on the network thread.
using BenchmarkFunction = std::function<BenchOutcome(const BenchJob&)>;

/// Settings of a running agent, already checked.
struct AgentSettings {
  std::filesystem::path data_dir;       ///< models are kept in data_dir/models/<sha256>.pt
  std::string token;                    ///< shared token; empty: no authentication (loopback only)
  FrameLimits limits;                   ///< frame size caps
  uint64_t max_upload_bytes = uint64_t{4} << 30;  ///< largest model accepted
  double auth_timeout_seconds = 30;     ///< a connection that has not authenticated by then is closed
  double max_benchmark_seconds = 3600;  ///< largest timeout a client may ask for
  Json hardware;                        ///< sent in hello
  AgentProfile profile;                 ///< sent in hello, used by every benchmark
  BenchmarkFunction benchmark;          ///< runs one job
};

/// The JSON form of a profile, as sent in hello.
Json profile_to_json(const AgentProfile& profile);

class SharedState {
 public:
  /// Creates data_dir/models and starts the benchmark thread. Throws Error naming the folder.
  explicit SharedState(AgentSettings settings);
  ~SharedState();
  SharedState(const SharedState&) = delete;
  SharedState& operator=(const SharedState&) = delete;

  const AgentSettings& settings() const { return settings_; }
  NonceRegistry& nonces() { return nonces_; }

  /// The folder of stored models.
  std::filesystem::path models_dir() const;
  /// Where the model with this sha256 (already checked to be a hex digest) is kept.
  std::filesystem::path model_path(const std::string& sha256) const;

  /// Called on the benchmark thread with the outcome of a queued job.
  using BenchmarkDone = std::function<void(BenchOutcome)>;
  /// Queues a job; jobs run one at a time in order of arrival.
  void enqueue_benchmark(BenchJob job, BenchmarkDone done);
  /// Jobs waiting or running.
  size_t pending_benchmarks() const;

  /// Drops waiting jobs (each told "agent stopping"), waits for the running one, and ends the thread. Idempotent.
  void stop();

 private:
  void run_benchmarks();

  AgentSettings settings_;
  NonceRegistry nonces_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::pair<BenchJob, BenchmarkDone>> queue_;
  bool running_job_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace edgesweep
