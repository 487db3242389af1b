// The current task's progress, shared between the thread that trains and the thread that sends heartbeats.
#include "edgesweep/common/progress.h"

#include "edgesweep/common/collective.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>

namespace edgesweep {
namespace {

using Clock = std::chrono::steady_clock;

struct State {
  std::mutex mutex;
  TaskProgress progress;
  Clock::time_point started = Clock::now();
  std::optional<Clock::time_point> deadline;
  double limit_seconds = 0;
  bool enforce = true;  ///< whether step(), begin_stage() and check_deadline() throw past the deadline
  std::function<void(const TaskProgress&)> listener;
  double listener_interval = 0;
  std::optional<Clock::time_point> last_reported;
};

State& state() {
  static State instance;
  return instance;
}

/// The progress with its elapsed time; the caller holds the mutex.
TaskProgress current(State& s) {
  TaskProgress progress = s.progress;
  progress.seconds = std::chrono::duration<double>(Clock::now() - s.started).count();
  return progress;
}

/// Calls the listener when its interval has passed (outside the lock, so it may call snapshot()).
void report(State& s, std::unique_lock<std::mutex>& lock, bool force) {
  if (!s.listener) return;
  const auto now = Clock::now();
  if (!force && s.last_reported &&
      std::chrono::duration<double>(now - *s.last_reported).count() < s.listener_interval) {
    return;
  }
  s.last_reported = now;
  const TaskProgress progress = current(s);
  const auto listener = s.listener;
  lock.unlock();
  listener(progress);
}

void throw_if_late(const State& s) {
  if (s.enforce && s.deadline && Clock::now() > *s.deadline) throw TrialTimeout(s.limit_seconds);
}

}  // namespace

std::string describe(const TaskProgress& p) {
  if (p.stage.empty()) return "starting";
  std::string text = p.stages > 0 ? fmt::format("stage {}/{} {}", p.stage_index + 1, p.stages, p.stage) : p.stage;
  if (p.epochs > 0) text += fmt::format(", epoch {}/{}", p.epoch, p.epochs);
  if (p.steps > 0) text += fmt::format(", step {}/{}", p.step, p.steps);
  return text;
}

namespace task_progress {

void begin_task(int64_t trial_id, double timeout_seconds, bool enforce_limit) {
  State& s = state();
  std::unique_lock lock(s.mutex);
  s.progress = TaskProgress{};
  s.progress.trial_id = trial_id;
  s.started = Clock::now();
  s.limit_seconds = timeout_seconds;
  s.enforce = enforce_limit;
  s.deadline.reset();
  if (timeout_seconds > 0) {
    s.deadline = s.started + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_seconds));
  }
  s.last_reported.reset();
  report(s, lock, true);
}

void end_task() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.deadline.reset();
  s.limit_seconds = 0;
}

void begin_stage(const std::string& name, int64_t index, int64_t count) {
  State& s = state();
  std::unique_lock lock(s.mutex);
  s.progress.stage = name;
  s.progress.stage_index = index;
  s.progress.stages = count;
  s.progress.epoch = s.progress.epochs = s.progress.step = s.progress.steps = 0;
  throw_if_late(s);
  report(s, lock, true);
}

void step(int64_t epoch, int64_t epochs, int64_t step, int64_t steps) {
  State& s = state();
  std::unique_lock lock(s.mutex);
  s.progress.epoch = epoch;
  s.progress.epochs = epochs;
  s.progress.step = step;
  s.progress.steps = steps;
  throw_if_late(s);
  report(s, lock, false);
}

void check_deadline() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  throw_if_late(s);
}

bool past_deadline() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  return s.deadline && Clock::now() > *s.deadline;
}

double limit_seconds() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  return s.limit_seconds;
}

TaskProgress snapshot() {
  State& s = state();
  std::lock_guard lock(s.mutex);
  return current(s);
}

void set_listener(std::function<void(const TaskProgress&)> listener, double interval_seconds) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  s.listener = std::move(listener);
  s.listener_interval = interval_seconds;
  s.last_reported.reset();
}

}  // namespace task_progress

namespace task_group {
namespace {
std::atomic<Collective*> current_group{nullptr};
std::atomic<Collective*> current_tensors{nullptr};
}  // namespace
Collective* current() { return current_group.load(); }
Collective* tensors() {
  Collective* group = current_group.load();
  Collective* tensors = current_tensors.load();
  return group != nullptr && tensors != nullptr ? tensors : group;
}
Scope::Scope(Collective* group, Collective* tensors)
    : previous_(current_group.exchange(group != nullptr && group->size() > 1 ? group : nullptr)),
      previous_tensors_(current_tensors.exchange(tensors)) {}
Scope::~Scope() {
  current_group.store(previous_);
  current_tensors.store(previous_tensors_);
}
}  // namespace task_group
}  // namespace edgesweep
