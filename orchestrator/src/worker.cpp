// The worker ranks' side of the control plane: take rank 0's layout of the worker groups, then pull a task, run it
// (with the group's members, which the leader passes it to) while a heartbeat thread reports its progress to rank 0,
// send the result, until rank 0 says there is no more work.
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edgesweep/common/collective.h"
#include "edgesweep/common/error.h"
#include "edgesweep/common/json.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/common/task.h"
#include "edgesweep/orchestrator/scheduler.h"
#include "edgesweep/workers/device.h"
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

/// Runs one task on this rank (in its group, when it has one) while heartbeats report its progress.
TaskResult run_one(MpiSession& session, const TaskRunner& runner, const std::string& payload, Collective* group,
                   Collective* tensors) {
  TaskResult result;
  try {
    Task task;
    from_json(Json::parse(payload), task);
    spdlog::info("{} {} starting{}", task.kind, task.trial_id,
                 group != nullptr ? fmt::format(" (rank {} of its group of {})", group->rank(), group->size()) : "");
    const HeartbeatSender heartbeat(session, task.heartbeat_seconds);
    const task_group::Scope scope(group, tensors);
    result = runner ? runner(task) : run_task(task);
    spdlog::info("{} {} {} in {:.1f}s", task.kind, task.trial_id, result.ok ? "done" : "failed", result.seconds);
    if (!result.ok) spdlog::info("{} {}: {}", task.kind, task.trial_id, result.error);
  } catch (const std::exception& e) {
    result.ok = false;
    result.error = fmt::format("rank {} could not read its task: {}", session.rank(), e.what());
  }
  return result;
}

struct Layout {
  int ranks_per_trial = 1;
  std::string device = "cpu";
};

/// Waits for rank 0's first word: the groups' layout (Setup) or Done (it cannot run the experiment).
std::optional<Layout> receive_layout(MpiSession& session) {
  while (true) {
    const auto message = session.receive(std::chrono::hours(24 * 365), std::chrono::milliseconds(5));
    if (!message || message->tag == Tag::Done) return std::nullopt;
    if (message->tag != Tag::Setup) continue;
    try {
      const Json setup = Json::parse(message->payload);
      return Layout{setup.at("ranks_per_trial").get<int>(), setup.value("device", "cpu")};
    } catch (const std::exception& e) {
      throw Error(fmt::format("rank {}: unreadable layout from rank 0: {}", session.rank(), e.what()));
    }
  }
}

/// A group on CUDA exchanges its tensors over NCCL when this build has it and every member can use its GPU (agreed
/// over the group's MPI collective first, so that no member waits for a communicator another cannot join); else
/// over MPI, staged through host memory. None for groups of one.
std::unique_ptr<Collective> tensor_collective(Collective* group, const std::string& device, int rank) {
  if (group == nullptr || device != "cuda" || !nccl_available()) return nullptr;
  std::string reason;
  int64_t gpu = -1;
  try {
    gpu = resolve_device(device).index();
  } catch (const std::exception& e) {
    reason = e.what();
  }
  float unusable = reason.empty() ? 0.0f : 1.0f;
  group->allreduce_sum(&unusable, 1);
  if (unusable > 0) {
    spdlog::warn("rank {}: the group's gradients go over MPI through host memory, not NCCL: {}", rank,
                 reason.empty() ? "another member cannot use its GPU" : reason);
    return nullptr;
  }
  spdlog::info("rank {}: the group's tensors go over NCCL on cuda:{}", rank, gpu);
  return nccl_collective(*group, static_cast<int>(gpu));
}

}  // namespace

void serve_worker(MpiSession& session, const TaskRunner& runner) {
  const std::optional<Layout> layout = receive_layout(session);
  if (!layout) return;
  const WorkerGroups groups{session.size() - 1, layout->ranks_per_trial};
  const int rank = session.rank();
  const int leader = groups.leader_of(rank);
  // Every rank takes part in the split, rank 0 too (alone in its own).
  std::unique_ptr<Collective> group;
  if (groups.ranks_per_trial > 1) group = session.split(leader, rank);
  const std::unique_ptr<Collective> tensors = tensor_collective(group.get(), layout->device, rank);
  session.send(0, Tag::Ready, worker_hello(session));
  const std::vector<int> members = groups.members_of(leader);
  while (true) {
    const auto message = session.receive(std::chrono::hours(24 * 365), std::chrono::milliseconds(5));
    if (!message) return;
    if (message->tag == Tag::Done) {
      // A leader passes the end on, unless rank 0 told every rank itself (release_workers).
      if (rank == leader && message->payload != "all") {
        for (const int member : members) session.send(member, Tag::Done, "");
      }
      return;
    }
    if (message->tag != Tag::Task) continue;
    if (rank != leader) {  // a member: trains with its leader; the leader's result is the task's
      run_one(session, runner, message->payload, group.get(), tensors.get());
      continue;
    }
    for (const int member : members) session.send(member, Tag::Task, message->payload);
    const TaskResult result = run_one(session, runner, message->payload, group.get(), tensors.get());
    session.send(0, Tag::Result, Json(result).dump());
  }
}

void release_workers(MpiSession& session) {
  for (int rank = 1; rank < session.size(); ++rank) session.send(rank, Tag::Done, "all");
}

}  // namespace edgesweep
