// What all connections of one agent share: its settings, the content-addressed model folder, the client nonces
// already accepted, and the benchmark queue with the one thread that runs benchmarks, one at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "edgesweep/common/json.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/bench_runner.h"
#include "edgesweep/device_agents/frame.h"

namespace edgesweep {

class TlsContext;

/// Runs one benchmark to its end (blocking); never called on the network thread.
using BenchmarkFunction = std::function<BenchOutcome(const BenchJob&)>;

/// Settings of a running agent, already checked.
struct AgentSettings {
  std::filesystem::path data_dir;       ///< models are kept in data_dir/models/<sha256>.pt
  std::string token;                    ///< shared token; empty: no authentication (loopback only)
  std::shared_ptr<TlsContext> tls;      ///< TLS of every connection (token or certificate); null: plaintext
  FrameLimits limits;                   ///< frame size caps
  uint64_t max_upload_bytes = uint64_t{4} << 30;  ///< largest model accepted
  double auth_timeout_seconds = 30;     ///< a connection that has not authenticated by then is closed
  size_t max_auth_bytes = 4096;         ///< before authentication only a control frame this long (auth) is read
  size_t max_unauthenticated = 32;      ///< connections waiting for authentication at once; more are refused
  size_t max_queued = 256;              ///< benchmarks waiting at once, over all connections
  size_t max_queued_per_connection = 32;  ///< benchmarks one connection may have waiting
  double max_benchmark_seconds = 3600;  ///< largest timeout a client may ask for
  Json hardware;                        ///< sent in hello
  AgentProfile profile;                 ///< sent in hello, used by every benchmark
  BenchmarkFunction benchmark;          ///< runs one job
};

/// The JSON form of a profile, as sent in hello.
Json profile_to_json(const AgentProfile& profile);

class SharedState {
 public:
  /// Creates data_dir/models, removes the unfinished uploads an agent that was killed left there, and starts the
  /// benchmark thread. Throws Error naming the folder.
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
  /// Queues a job of connection `owner`; jobs run one at a time in order of arrival. Throws ProtocolError when the
  /// queue is full (max_queued in all, max_queued_per_connection for this owner); when stopping, `done` is called
  /// at once with "agent stopping".
  void enqueue_benchmark(const void* owner, BenchJob job, BenchmarkDone done);
  /// Removes the waiting jobs of `owner` (a connection that has gone; nobody would read their results). The running
  /// job, if it is one of them, runs to its end. Returns how many were removed; their done callbacks are not called.
  size_t drop_benchmarks_of(const void* owner);
  /// Jobs waiting or running.
  size_t pending_benchmarks() const;

  /// Takes one of the max_unauthenticated places of a connection that has not authenticated yet; false when all
  /// are taken. Thread-safe.
  bool admit_unauthenticated();
  /// Gives the place back (on authentication or close).
  void release_unauthenticated();

  /// Answers waiting jobs with "agent stopping", stops the running one (its child is killed; its requester is told
  /// so) and ends the thread. Idempotent; returns once every job's done callback has been called.
  void stop();

 private:
  void run_benchmarks();

  AgentSettings settings_;
  NonceRegistry nonces_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  struct Queued {
    const void* owner = nullptr;
    BenchJob job;
    BenchmarkDone done;
  };
  std::deque<Queued> queue_;
  bool running_job_ = false;
  bool stopping_ = false;
  std::shared_ptr<std::atomic<bool>> cancel_ = std::make_shared<std::atomic<bool>>(false);
  std::atomic<size_t> unauthenticated_{0};
  std::thread thread_;
};

}  // namespace edgesweep
