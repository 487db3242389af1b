// The model folder and the benchmark queue of an agent.
#include "edgesweep/device_agents/shared_state.h"

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

void SharedState::enqueue_benchmark(BenchJob job, BenchmarkDone done) {
  job.cancelled = cancel_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!stopping_) {
      queue_.emplace_back(std::move(job), std::move(done));
      wake_.notify_one();
      return;
    }
  }
  BenchOutcome outcome;
  outcome.error = "agent stopping";
  done(std::move(outcome));
}

size_t SharedState::pending_benchmarks() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size() + (running_job_ ? 1 : 0);
}

void SharedState::stop() {
  std::deque<std::pair<BenchJob, BenchmarkDone>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    cancel_->store(true);  // the running benchmark's child is killed within a poll
    dropped.swap(queue_);
    wake_.notify_all();
  }
  for (auto& [job, done] : dropped) {
    BenchOutcome outcome;
    outcome.error = "agent stopping: the request was dropped before it ran";
    done(std::move(outcome));
  }
  if (thread_.joinable()) thread_.join();
}

void SharedState::run_benchmarks() {
  for (;;) {
    std::pair<BenchJob, BenchmarkDone> next;
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
      spdlog::info("benchmark of {} started", next.first.model.filename().string());
      outcome = settings_.benchmark(next.first);
    } catch (const std::exception& e) {
      outcome = BenchOutcome{};
      outcome.error = e.what();
    }
    if (!outcome.ok && outcome.error.empty()) outcome.error = "benchmark failed without a message";
    spdlog::info("benchmark of {} {}", next.first.model.filename().string(),
                 outcome.ok ? "done" : "failed: " + outcome.error);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_job_ = false;
    }
    next.second(std::move(outcome));
  }
}

}  // namespace edgesweep
