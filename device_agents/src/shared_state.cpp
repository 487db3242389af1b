// The model folder and the benchmark queue of an agent.
#include "edgesweep/device_agents/shared_state.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"

namespace edgesweep {

Json profile_to_json(const AgentProfile& profile) {
  return Json{{"name", profile.name},
              {"threads", profile.threads},
              {"cpus", profile.cpus},
              {"memory_mb", profile.memory_mb},
              {"engine", profile.engine}};
}

SharedState::SharedState(AgentSettings settings) : settings_(std::move(settings)) {
  EDGESWEEP_ASSERT(settings_.benchmark != nullptr);
  std::error_code ec;
  std::filesystem::create_directories(models_dir(), ec);
  check(!ec && std::filesystem::is_directory(models_dir()), "cannot create the model folder '{}': {}",
        models_dir().string(), ec.message());
  // Uploads cut short by an agent that was killed (.upload-<pid>-<nonce>.part of a pid that is gone): never
  // verified, so never usable. Those of a live agent on the same folder are left alone.
  size_t stale = 0;
  for (const auto& entry : std::filesystem::directory_iterator(models_dir(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".upload-", 0) != 0 || entry.path().extension() != ".part") continue;
    const std::string pid_text = name.substr(8, name.find('-', 8) - 8);
    const bool has_pid = !pid_text.empty() && pid_text.find_first_not_of("0123456789") == std::string::npos &&
                         pid_text.size() < 10;
    const long owner = has_pid ? std::stol(pid_text) : 0;
    if (has_pid && (owner == getpid() || ::kill(static_cast<pid_t>(owner), 0) == 0 || errno != ESRCH)) continue;
    std::error_code ignored;
    stale += std::filesystem::remove(entry.path(), ignored) ? 1 : 0;
  }
  if (stale > 0) spdlog::info("removed {} unfinished upload(s) left in '{}'", stale, models_dir().string());
  thread_ = std::thread([this] { run_benchmarks(); });
}

SharedState::~SharedState() { stop(); }

std::filesystem::path SharedState::models_dir() const { return settings_.data_dir / "models"; }

std::filesystem::path SharedState::model_path(const std::string& sha256) const {
  EDGESWEEP_ASSERT(is_hex_digest(sha256));
  return models_dir() / (sha256 + ".pt");
}

bool SharedState::admit_unauthenticated() {
  size_t now = unauthenticated_.load();
  do {
    if (now >= settings_.max_unauthenticated) return false;
  } while (!unauthenticated_.compare_exchange_weak(now, now + 1));
  return true;
}

void SharedState::release_unauthenticated() { --unauthenticated_; }

void SharedState::enqueue_benchmark(const void* owner, BenchJob job, BenchmarkDone done) {
  job.cancelled = cancel_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_) {
      if (queue_.size() >= settings_.max_queued) {
        throw ProtocolError(fmt::format("the benchmark queue is full ({} waiting); try again later", queue_.size()));
      }
      const auto mine = std::count_if(queue_.begin(), queue_.end(), [&](const Queued& q) { return q.owner == owner; });
      if (static_cast<size_t>(mine) >= settings_.max_queued_per_connection) {
        throw ProtocolError(fmt::format("this connection already has {} benchmarks waiting (the most one connection "
                                        "may queue); wait for their results",
                                        mine));
      }
      queue_.push_back(Queued{owner, std::move(job), std::move(done)});
      wake_.notify_one();
      return;
    }
  }
  BenchOutcome outcome;
  outcome.error = "agent stopping";
  done(std::move(outcome));
}

size_t SharedState::drop_benchmarks_of(const void* owner) {
  std::deque<Queued> dropped;  // destroyed outside the lock: their callbacks hold connections
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::deque<Queued> kept;
    for (Queued& q : queue_) (q.owner == owner ? dropped : kept).push_back(std::move(q));
    queue_.swap(kept);
  }
  return dropped.size();
}

size_t SharedState::pending_benchmarks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size() + (running_job_ ? 1 : 0);
}

void SharedState::stop() {
  std::deque<Queued> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    cancel_->store(true);  // the running benchmark's child is killed within a poll
    dropped.swap(queue_);
    wake_.notify_all();
  }
  for (Queued& q : dropped) {
    BenchOutcome outcome;
    outcome.error = "agent stopping: the request was dropped before it ran";
    q.done(std::move(outcome));
  }
  if (thread_.joinable()) thread_.join();
}

void SharedState::run_benchmarks() {
  for (;;) {
    Queued next;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      next = std::move(queue_.front());
      queue_.pop_front();
      running_job_ = true;
    }
    BenchOutcome outcome;
    try {
      spdlog::info("benchmark of {} started", next.job.model.filename().string());
      outcome = settings_.benchmark(next.job);
    } catch (const std::exception& e) {
      outcome = BenchOutcome{};
      outcome.error = e.what();
    }
    if (!outcome.ok && outcome.error.empty()) outcome.error = "benchmark failed without a message";
    spdlog::info("benchmark of {} {}", next.job.model.filename().string(),
                 outcome.ok ? "done" : "failed: " + outcome.error);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_job_ = false;
    }
    next.done(std::move(outcome));
  }
}

}  // namespace edgesweep
