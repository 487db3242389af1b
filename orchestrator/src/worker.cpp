// The worker ranks' side of the control plane: pull a task, run it while a heartbeat thread reports its progress
// to rank 0, send the result, until rank 0 says there is no more work.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edgesweep/common/json.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/common/task.h"
#include "edgesweep/orchestrator/scheduler.h"
#include "edgesweep/workers/run_task.h"

namespace edgesweep {
namespace {

using Clock = std::chrono::steady_clock;

/// What a worker rank tells rank 0 about itself when it starts: its host and pid, for messages and `status`.
std::string worker_hello(const MpiSession& session) {
  return Json{{"host", session.host()}, {"pid", static_cast<int64_t>(getpid())}}.dump();
}

/// While a task runs, sends rank 0 the task's progress every `interval` seconds: from a thread of its own when MPI
/// allows it (so a long step or an evaluation still counts as alive), else from the training loop's steps.
class HeartbeatSender {
 public:
  HeartbeatSender(MpiSession& session, double interval) : session_(session) {
    if (!session.threads_allowed()) {
      task_progress::set_listener([this](const TaskProgress& progress) { send(progress); }, interval);
      return;
    }
    thread_ = std::thread([this, interval] {
      const auto period = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(interval));
      std::unique_lock lock(mutex_);
      while (!stop_.wait_for(lock, period, [this] { return stopping_; })) {
        lock.unlock();
        send(task_progress::snapshot());
        lock.lock();
      }
    });
  }
  ~HeartbeatSender() {
    if (!thread_.joinable()) {
      task_progress::set_listener({}, 0);
      return;
    }
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    stop_.notify_all();
    thread_.join();
  }
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;

 private:
  void send(const TaskProgress& progress) {
    try {
      session_.send(0, Tag::Heartbeat, Json(progress).dump());
    } catch (const std::exception& e) {
      spdlog::warn("heartbeat to rank 0: {}", e.what());
    }
  }

  MpiSession& session_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable stop_;
  bool stopping_ = false;
};

}  // namespace

void serve_worker(MpiSession& session, const TaskRunner& runner) {
  session.send(0, Tag::Ready, worker_hello(session));
  while (true) {
    const auto message = session.receive(std::chrono::hours(24 * 365), std::chrono::milliseconds(5));
    if (!message || message->tag == Tag::Done) return;
    if (message->tag != Tag::Task) continue;
    TaskResult result;
    try {
      Task task;
      from_json(Json::parse(message->payload), task);
      spdlog::info("{} {} starting", task.kind, task.trial_id);
      const HeartbeatSender heartbeat(session, task.heartbeat_seconds);
      result = runner ? runner(task) : run_task(task);
      spdlog::info("{} {} {} in {:.1f}s", task.kind, task.trial_id, result.ok ? "done" : "failed", result.seconds);
    } catch (const std::exception& e) {
      result.ok = false;
      result.error = fmt::format("rank {} could not read its task: {}", session.rank(), e.what());
    }
    session.send(0, Tag::Result, Json(result).dump());
  }
}

void release_workers(MpiSession& session) {
  for (int rank = 1; rank < session.size(); ++rank) session.send(rank, Tag::Done, "");
}

}  // namespace edgesweep
