// Rank 0's side of the control plane: the experiment's tasks, handed out task-pull style over MPI (or run inline
// when rank 0 is alone), the worker ranks watched through their heartbeats, every result recorded in the store.
#include "edgesweep/orchestrator/scheduler.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/common/progress.h"
#include "edgesweep/common/task.h"
#include "edgesweep/orchestrator/choice_tables.h"
#include "edgesweep/orchestrator/farm.h"
#include "edgesweep/orchestrator/pareto.h"
#include "edgesweep/orchestrator/report.h"
#include "edgesweep/orchestrator/store.h"
#include "edgesweep/orchestrator/store_lock.h"
#include "edgesweep/orchestrator/tables.h"
#include "edgesweep/workers/run_task.h"
#include "unix_time.h"

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

/// Rank 0's view of the experiment: what is pending, running, done, and what can run next.
class Scheduler {
 public:
  Scheduler(Store& store, const ExperimentSpec& spec, const RunOptions& options)
      : store_(store), spec_(spec), options_(options) {}

  /// Records the experiment and its trials (or checks them against the store when resuming).
  void prepare() {
    const auto existing = store_.find_experiment(spec_.name);
    if (existing && !options_.resume) {
      throw InputError(fmt::format(
          "{}: experiment '{}' is already in '{}'\nhint: continue it with `edgesweep run --resume {}`, or give the "
          "experiment another name",
          spec_.path.string(), spec_.name, store_path(spec_).string(), spec_.path.string()));
    }
    if (existing && existing->spec_hash != spec_.hash) {
      if (!same_experiment(existing->spec_text, spec_.text)) {
        throw InputError(fmt::format(
            "{}: the experiment file changed since '{}' was recorded in '{}' (sha256 {} then, {} now); resuming "
            "would mix two experiments\nhint: restore the file, or run the changed experiment under another name",
            spec_.path.string(), spec_.name, store_path(spec_).string(), existing->spec_hash.substr(0, 12),
            spec_.hash.substr(0, 12)));
      }
      spdlog::info("resume: the text of {} changed since it was recorded, its settings did not", spec_.path.string());
    }
    const std::vector<TrialConfig> trials = expand_trials(spec_);
    store_.transaction([&] {
      experiment_id_ = existing ? existing->id : store_.create_experiment(spec_.name, spec_.text, spec_.hash);
      for (const TrialConfig& trial : trials) {
        const std::string bhash = baseline_hash(trial);
        if (!baseline_ids_.count(bhash)) {
          const Json baseline_config = Json{{"seed", trial.seed}, {"data", trial.data}, {"model", trial.model},
                                            {"baseline", trial.baseline}, {"pipeline", Json::array()}};
          baseline_ids_[bhash] = store_.add_trial(experiment_id_, "baseline", baseline_config, bhash);
        }
        const int64_t id = store_.add_trial(experiment_id_, "trial", Json(trial), trial_hash(trial));
        baseline_of_[id] = baseline_ids_[bhash];
      }
      store_.set_experiment_status(experiment_id_, "running");
      if (existing) {
        const int64_t requeued = store_.requeue_running(experiment_id_);
        if (requeued > 0) spdlog::info("resume: {} trial(s) that were running are queued again", requeued);
      }
    });
    store_.clear_workers(experiment_id_);  // this run's ranks replace the last run's
    for (const TrialRow& row : store_.trials(experiment_id_)) rows_[row.id] = row;
    if (existing) verify_done_artifacts();
    remove_unrecorded_archives();
    for (auto& [id, row] : rows_) {
      if (row.status == TrialStatus::Failed) {  // a new run gives failed trials a new chance
        store_.mark_pending(id);
        row.status = TrialStatus::Pending;
        row.attempts = 0;
      }
    }
    attempts_at_start_.clear();
    for (const auto& [id, row] : rows_) attempts_at_start_[id] = row.attempts;
    recount();
    const int64_t done = count(TrialStatus::Done);
    if (done > 0) spdlog::info("resume: {} of {} tasks are done and skipped", done, rows_.size());
    start_ = Clock::now();
  }

  /// Archives in the results folder that no artifact row records: written by a worker whose result never reached the
  /// store (a run killed between the two), or staged and cut short. This run owns the store (its lock), so no live
  /// process is writing them; rows of every experiment in the store count.
  void remove_unrecorded_archives() {
    const fs::path folder = spec_.run.results_dir / "artifacts";
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) return;
    std::set<std::string> recorded;
    for (const std::string& path : store_.artifact_paths()) recorded.insert(fs::path(path).filename().string());
    size_t removed = 0;
    for (const auto& entry : fs::directory_iterator(folder, ec)) {
      if (!entry.is_regular_file(ec) || recorded.count(entry.path().filename().string())) continue;
      std::error_code ignored;
      removed += fs::remove(entry.path(), ignored) ? 1 : 0;
    }
    if (removed > 0) {
      spdlog::info("removed {} archive(s) in '{}' that no trial recorded (left by a run that was stopped)", removed,
                   folder.string());
    }
  }

  /// The next task that can run, marked running on `worker` (one of `workers`); nullopt when nothing can start now.
  /// Of the tasks that can start, trials whose earlier stages another worker is computing now wait for it (the worker
  /// that finishes them reuses them) while others can go first.
  std::optional<Task> next_task(int worker, int64_t workers, int64_t ranks_per_task = 1) {
    // The pending tasks in id order, up to the first one pick_next_task would take without looking further (no
    // shared stages, or none running): a dispatch costs a few steps, not a pass over every task.
    std::vector<int64_t> ready;
    std::vector<std::string> keys;
    for (const int64_t id : pending_) {
      if (rows_.at(id).kind != "baseline" && rows_.at(baseline_of(id)).status != TrialStatus::Done) continue;
      ready.push_back(id);
      keys.push_back(shared_key(id));
      if (keys.back().empty() || running_keys_.count(keys.back()) == 0) break;
    }
    if (ready.empty()) return std::nullopt;
    const int64_t id = ready[pick_next_task(keys, running_keys_)];
    TrialRow& row = rows_.at(id);
    Task task;
    task.kind = row.kind;
    task.trial_id = id;
    task.results_dir = spec_.run.results_dir.string();
    task.cache_dir = baseline_cache_dir(spec_).string();
    task.eval_batch_size = spec_.run.eval_batch_size;
    task.latency_seconds = spec_.run.latency_seconds;
    task.timeout_seconds = spec_.run.trial_timeout_seconds;
    task.heartbeat_seconds = spec_.run.heartbeat_seconds;
    task.device = spec_.run.device;
    task.memory_format = spec_.run.memory_format;
    // Cores are shared by the tasks that will run side by side (the running ones and those about to start), each on
    // `ranks_per_task` ranks.
    const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
    const int64_t side_by_side =
        std::max<int64_t>(1, std::min(workers, count(TrialStatus::Running) + runnable(workers)));
    task.threads = spec_.run.threads > 0 ? spec_.run.threads
                                         : std::max<int64_t>(1, cores / (side_by_side * ranks_per_task));
    from_json(row.config, task.config);
    if (row.kind != "baseline") {
      const auto artifacts = store_.artifacts(baseline_of(id));
      EDGESWEEP_ASSERT(!artifacts.empty());
      task.baseline_path = artifacts.back().path;
      task.baseline_sha256 = artifacts.back().sha256;
    }
    store_.mark_running(id, worker);
    set_status(id, TrialStatus::Running);
    row.worker = worker;
    ++row.attempts;
    return task;
  }

  /// Measurement jobs are queued on `farm` for every artifact a task records from now on.
  void set_farm(Farm* farm) { farm_ = farm; }

  /// Records a task's result in one transaction, then queues the measurements of its artifacts.
  void record(const TaskResult& result) {
    TrialRow& row = rows_.at(result.trial_id);
    std::vector<ArtifactRow> recorded;
    store_.transaction([&] {
      if (result.ok) {
        std::vector<MetricRow> metrics;
        for (const Metric& m : result.metrics) metrics.push_back({row.id, m.step, m.name, m.value});
        metrics.push_back({row.id, -1, "seconds", result.seconds});
        if (row.kind == "baseline") metrics.push_back({row.id, -1, "cached", result.cached ? 1.0 : 0.0});
        store_.add_metrics(metrics);
        for (const ArtifactRecord& a : result.artifacts) {
          ArtifactRow artifact{0, row.id, a.kind, a.path, a.sha256, a.bytes, a.params, a.macs, a.format, a.metadata};
          artifact.id = store_.add_artifact(artifact);
          recorded.push_back(std::move(artifact));
        }
        store_.mark_done(row.id);
        set_status(row.id, TrialStatus::Done);
      } else if (row.attempts - attempts_at_start_[row.id] < spec_.run.max_attempts) {
        spdlog::warn("{} {} failed (attempt {}), queued again: {}", row.kind, row.id, row.attempts, result.error);
        store_.mark_failed(row.id, result.error);
        store_.mark_pending(row.id);
        set_status(row.id, TrialStatus::Pending);
      } else {
        store_.mark_failed(row.id, result.error);
        set_status(row.id, TrialStatus::Failed);
        spdlog::warn("{} {} failed: {}", row.kind, row.id, result.error);
        if (row.kind == "baseline") fail_dependents(row.id, result.error);
      }
    });
    if (farm_ != nullptr && row.status == TrialStatus::Done) farm_->add_jobs(recorded);
    ++finished_this_run_;
    if (options_.progress) print_progress();
  }

  /// Marks a running task failed because its worker is gone.
  void abandon(int64_t trial_id, const std::string& reason) {
    TaskResult result;
    result.trial_id = trial_id;
    result.error = reason;
    record(result);
  }

  bool finished() const { return count(TrialStatus::Pending) == 0 && count(TrialStatus::Running) == 0; }
  bool any_running() const { return count(TrialStatus::Running) > 0; }
  int64_t experiment_id() const { return experiment_id_; }
  Store& store() { return store_; }
  const std::string& kind_of(int64_t trial_id) const { return rows_.at(trial_id).kind; }

  /// Ends the run: the experiment is done when every task is, failed otherwise (failures, or tasks left when the
  /// run lost its ranks); returns the exit code.
  int finish() {
    const bool failures = count(TrialStatus::Failed) > 0 || !finished();
    store_.set_experiment_status(experiment_id_, failures ? "failed" : "done");
    if (!failures) remove_kept_stages();
    return failures ? 1 : 0;
  }

 private:
  int64_t baseline_of(int64_t trial_id) const {
    auto it = baseline_of_.find(trial_id);
    if (it != baseline_of_.end()) return it->second;
    // Trials recorded by an earlier run: their baseline is the one with their baseline hash.
    TrialConfig config;
    from_json(rows_.at(trial_id).config, config);
    return baseline_ids_.at(baseline_hash(config));
  }

  /// Every trial is done, so no trial will start from the models kept after its first stages (run_task): they go.
  /// After failures they stay for the trials that `--resume` runs again.
  void remove_kept_stages() {
    const fs::path kept = spec_.run.results_dir / "prefixes";
    std::error_code error;
    if (!fs::exists(kept, error)) return;
    const auto removed = fs::remove_all(kept, error);
    if (error) {
      spdlog::warn("cannot remove the kept stages in '{}': {}", kept.string(), error.message());
    } else {
      spdlog::info("removed {} file(s) of kept stages in '{}'", removed, kept.string());
    }
  }

  /// The shared-stages key of a trial (empty for baselines and one-stage pipelines), computed once.
  const std::string& shared_key(int64_t id) {
    auto it = shared_keys_.find(id);
    if (it == shared_keys_.end()) {
      std::string key;
      if (rows_.at(id).kind == "trial") {
        TrialConfig config;
        from_json(rows_.at(id).config, config);
        key = shared_stages_key(config);
      }
      it = shared_keys_.emplace(id, std::move(key)).first;
    }
    return it->second;
  }

  /// Pending tasks whose baseline (if any) is done: what could start now, counted up to `limit`.
  int64_t runnable(int64_t limit) const {
    int64_t n = 0;
    for (const int64_t id : pending_) {
      if (n >= limit) break;
      const TrialRow& row = rows_.at(id);
      if (row.kind == "baseline" || rows_.at(baseline_of(id)).status == TrialStatus::Done) ++n;
    }
    return n;
  }

  int64_t count(TrialStatus status) const { return counts_[static_cast<size_t>(status)]; }

  /// Moves a task to `status`, keeping the counts, the pending set and the running tasks' shared-stages keys.
  void set_status(int64_t id, TrialStatus status) {
    TrialRow& row = rows_.at(id);
    leave(id, row.status);
    row.status = status;
    enter(id, status);
  }
  void enter(int64_t id, TrialStatus status) {
    ++counts_[static_cast<size_t>(status)];
    if (status == TrialStatus::Pending) pending_.insert(id);
    if (status == TrialStatus::Running) running_keys_.insert(shared_key(id));
  }
  void leave(int64_t id, TrialStatus status) {
    --counts_[static_cast<size_t>(status)];
    if (status == TrialStatus::Pending) pending_.erase(id);
    if (status == TrialStatus::Running) running_keys_.erase(running_keys_.find(shared_key(id)));
  }
  /// The counts, the pending set and the running keys from the rows (after prepare() set them directly).
  void recount() {
    counts_.fill(0);
    pending_.clear();
    running_keys_.clear();
    for (const auto& [id, row] : rows_) enter(id, row.status);
  }

  void fail_dependents(int64_t baseline_id, const std::string& error) {
    for (auto& [id, row] : rows_) {
      if (row.kind == "trial" && row.status == TrialStatus::Pending && baseline_of(id) == baseline_id) {
        store_.mark_failed(id, "its baseline (task " + std::to_string(baseline_id) + ") failed: " + error);
        set_status(id, TrialStatus::Failed);
      }
    }
  }

  /// A done task whose artifact is missing or changed is run again, never trusted. Only the newest artifact of each
  /// kind is in use (a rerun adds rows; the rows of earlier attempts stay as history and are not checked).
  void verify_done_artifacts() {
    for (auto& [id, row] : rows_) {
      if (row.status != TrialStatus::Done) continue;
      std::map<std::string, ArtifactRow> newest;  // kind -> newest artifact (rows come in id order)
      for (const ArtifactRow& a : store_.artifacts(id)) newest[a.kind] = a;
      for (const auto& [kind, a] : newest) {
        const fs::path file = spec_.run.results_dir / a.path;
        const bool intact = fs::exists(file) && sha256_file(file) == a.sha256;
        if (!intact) {
          const std::string reason = fmt::format("artifact '{}' is missing or no longer matches its sha256 {}",
                                                 file.string(), a.sha256);
          spdlog::warn("{} {}: {}; running it again", row.kind, id, reason);
          // The store only re-queues running or failed trials: a done trial with a lost artifact is failed first.
          store_.transaction([&] {
            store_.mark_failed(id, reason);
            store_.mark_pending(id);
          });
          row.status = TrialStatus::Pending;
          break;
        }
      }
    }
  }

  void print_progress() {
    const int64_t total = static_cast<int64_t>(rows_.size());
    const int64_t done = count(TrialStatus::Done);
    const int64_t failed = count(TrialStatus::Failed);
    const int64_t running = count(TrialStatus::Running);
    const int64_t remaining = total - done - failed;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    std::string eta = "?";
    if (finished_this_run_ > 0 && remaining > 0) {
      const double parallel = std::max<int64_t>(1, std::max(running, int64_t{1}));
      eta = format_duration(elapsed / static_cast<double>(finished_this_run_) * static_cast<double>(remaining) /
                            parallel);
    } else if (remaining == 0) {
      eta = "0s";
    }
    fmt::print(stderr, "[{}/{}] done {}, failed {}, running {}, elapsed {}, ETA {}\n", done + failed, total, done,
               failed, running, format_duration(elapsed), eta);
  }

  Store& store_;
  const ExperimentSpec& spec_;
  RunOptions options_;
  int64_t experiment_id_ = 0;
  std::map<int64_t, TrialRow> rows_;
  std::map<std::string, int64_t> baseline_ids_;
  std::map<int64_t, int64_t> baseline_of_;
  std::map<int64_t, int64_t> attempts_at_start_;
  std::map<int64_t, std::string> shared_keys_;
  std::array<int64_t, 4> counts_{};          // tasks per status (TrialStatus order)
  std::set<int64_t> pending_;                // pending tasks, in id order
  std::multiset<std::string> running_keys_;  // shared-stages keys of the running tasks
  int64_t finished_this_run_ = 0;
  Clock::time_point start_;
  Farm* farm_ = nullptr;
};

/// Rank 0's turn for the device farm: measurements are handed out while trials train when [measure] allows it.
void poll_farm(Farm& farm, const Scheduler& scheduler, const ExperimentSpec& spec) {
  farm.poll(spec.measure.during_training || scheduler.finished());
}

void run_inline(Scheduler& scheduler, Farm& farm, const ExperimentSpec& spec, const TaskRunner& runner,
                const MpiSession& session) {
  // Rank 0 is its own worker: its row in the store follows the task's progress from the training loop.
  WorkerRow self{scheduler.experiment_id(), 0, session.host(), static_cast<int64_t>(getpid()), "idle", 0,
                 Json::object(), unix_now()};
  const auto save = [&] {
    try {
      scheduler.store().record_workers({self});
    } catch (const std::exception& e) {
      spdlog::warn("cannot record the progress of task {}: {}", self.trial_id, e.what());
    }
  };
  task_progress::set_listener(
      [&](const TaskProgress& progress) {
        self.progress = Json(progress);
        self.heard = unix_now();
        save();
      },
      spec.run.heartbeat_seconds);
  struct ListenerGuard {
    ~ListenerGuard() { task_progress::set_listener({}, 0); }
  } listener_guard;
  poll_farm(farm, scheduler, spec);
  while (auto task = scheduler.next_task(0, 1)) {
    self.state = "busy";
    self.trial_id = task->trial_id;
    const TaskResult result = runner ? runner(*task) : run_task(*task);
    self.state = "idle";
    self.trial_id = 0;
    self.progress = Json::object();
    self.heard = unix_now();
    save();
    scheduler.record(result);
    poll_farm(farm, scheduler, spec);
  }
  self.state = "released";
  self.trial_id = 0;
  save();
}

/// Rank 0's record of the worker ranks: what each holds, when it was last heard from, and the rows `status` shows
/// (written to the store at most once a second, and at once when a rank is lost or released).
class WorkerBook {
 public:
  WorkerBook(Store& store, int64_t experiment_id, int workers) : store_(store) {
    const double now = unix_now();
    for (int rank = 1; rank <= workers; ++rank) {
      rows_[rank] = WorkerRow{experiment_id, rank, "", 0, "idle", 0, Json::object(), now};
    }
  }

  WorkerRow& operator[](int rank) { return rows_.at(rank); }
  bool known(int rank) const { return rows_.count(rank) > 0; }

  /// "rank 2 (pid 123 on node1)", as far as it is known.
  std::string name(int rank) const {
    const WorkerRow& row = rows_.at(rank);
    if (row.pid > 0) return fmt::format("rank {} (pid {} on {})", rank, row.pid, row.host);
    return fmt::format("rank {}", rank);
  }

  void touch(int rank) {
    rows_.at(rank).heard = unix_now();
    dirty_ = true;
  }
  void changed() { dirty_ = true; }

  /// Writes the rows when they changed and a second has passed since the last write (or at once with `now`).
  void save(bool now = false) {
    if (!dirty_) return;
    if (!now && Clock::now() - saved_ < std::chrono::seconds(1)) return;
    std::vector<WorkerRow> rows;
    for (const auto& [rank, row] : rows_) rows.push_back(row);
    try {
      store_.record_workers(rows);
      dirty_ = false;
    } catch (const std::exception& e) {
      spdlog::warn("cannot record the worker ranks: {}", e.what());
    }
    saved_ = Clock::now();
  }

 private:
  Store& store_;
  std::map<int, WorkerRow> rows_;
  bool dirty_ = true;
  Clock::time_point saved_{};
};

/// A task a group's leader holds: since when, and when the leader and each of its members were last heard from.
struct Assignment {
  int64_t trial_id = 0;
  Clock::time_point started;
  Clock::time_point heard;
  std::map<int, Clock::time_point> members_heard;
};

/// Runs the experiment over the worker ranks; returns why each rank lost on the way was given up on (silent past
/// heartbeat_timeout_seconds while holding a task, or still running one long past trial_timeout_seconds).
std::vector<std::string> run_over_mpi(Scheduler& scheduler, MpiSession& session, Farm& farm, const ExperimentSpec& spec,
                                      const WorkerGroups& groups) {
  std::set<int> idle;                      // leaders waiting for work
  std::map<int, Assignment> running;       // leader -> its group's task
  std::vector<int> lost;                   // ranks given up on
  std::vector<std::string> lost_reasons;
  int active = groups.groups();            // groups neither released nor lost
  WorkerBook book(scheduler.store(), scheduler.experiment_id(), session.size() - 1);
  // A group's rows in the book: its leader's, then its members'.
  const auto group_of = [&](int leader) {
    std::vector<int> ranks{leader};
    for (const int member : groups.members_of(leader)) ranks.push_back(member);
    return ranks;
  };
  const auto silence_limit =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(spec.run.heartbeat_timeout_seconds));
  // A task past its limit stops itself at its next step; a rank that has not stopped it this much later is stuck.
  const double stuck_after = spec.run.trial_timeout_seconds + spec.run.heartbeat_timeout_seconds;
  const auto dispatch = [&](int worker) {
    if (auto task = scheduler.next_task(worker, groups.groups(), groups.ranks_per_trial)) {
      session.send(worker, Tag::Task, Json(*task).dump());
      const auto now = Clock::now();
      Assignment assignment{task->trial_id, now, now, {}};
      for (const int member : groups.members_of(worker)) assignment.members_heard[member] = now;
      running[worker] = std::move(assignment);
      idle.erase(worker);
      TaskProgress starting;
      starting.trial_id = task->trial_id;
      for (const int rank : group_of(worker)) {
        WorkerRow& row = book[rank];
        row.state = "busy";
        row.trial_id = task->trial_id;
        row.progress = Json(starting);
      }
      book.changed();
      return true;
    }
    return false;
  };
  // Gives up on the group of `leader` because `silent` (the leader or one of its members) `why`.
  const auto lose = [&](int leader, int silent, const std::string& why) {
    const Assignment held = running.at(leader);
    TaskProgress progress;
    try {
      from_json(book[silent].progress, progress);
    } catch (const std::exception&) {
      // a row without progress yet
    }
    std::string reason = fmt::format("{} {}; it held {} {} ({})", book.name(silent), why,
                                     scheduler.kind_of(held.trial_id), held.trial_id, describe(progress));
    if (groups.ranks_per_trial > 1) {
      reason += fmt::format(" in the group of ranks {}-{}", leader, leader + groups.ranks_per_trial - 1);
    }
    spdlog::error("{}; no more work goes to {}", reason, groups.ranks_per_trial > 1 ? "its group" : "it");
    running.erase(leader);
    lost_reasons.push_back(reason);
    --active;
    for (const int rank : group_of(leader)) {
      lost.push_back(rank);
      book[rank].state = "lost";
    }
    book.changed();
    scheduler.abandon(held.trial_id, reason);
    book.save(true);
  };
  // One message from a worker rank.
  const auto handle = [&](const Message* message) {
    const int source = message->source;
    if (!book.known(source)) {
      spdlog::warn("rank 0: message from rank {}, which is not a worker of this run; ignored", source);
      return;
    }
    if (std::find(lost.begin(), lost.end(), source) != lost.end()) {
      // A rank given up on that answers again (it was stopped, then continued): its task is already failed.
      if (message->tag == Tag::Result) {
        spdlog::warn("rank 0: {} answered after it was given up on; its result is not recorded", book.name(source));
      }
      return;
    }
    book.touch(source);
    if (message->tag == Tag::Ready) {
      try {
        const Json hello = Json::parse(message->payload);
        book[source].host = hello.at("host").get<std::string>();
        book[source].pid = hello.at("pid").get<int64_t>();
      } catch (const std::exception& e) {
        spdlog::warn("rank 0: rank {} introduced itself unreadably: {}", source, e.what());
      }
      if (groups.leads(source)) idle.insert(source);
    } else if (message->tag == Tag::Heartbeat) {
      auto held = running.find(groups.leader_of(source));
      if (held == running.end()) return;  // sent just before its result; nothing to update
      if (groups.leads(source)) {
        held->second.heard = Clock::now();
      } else {
        held->second.members_heard[source] = Clock::now();
      }
      try {
        Json progress = Json::parse(message->payload);
        // Alive either way; the progress only counts once it is that of the task rank 0 handed out.
        if (progress.value("trial_id", int64_t{0}) == held->second.trial_id) book[source].progress = std::move(progress);
      } catch (const std::exception& e) {
        spdlog::warn("rank 0: unreadable heartbeat from {}: {}", book.name(source), e.what());
      }
    } else if (message->tag == Tag::Result) {
      TaskResult result;
      try {
        from_json(Json::parse(message->payload), result);
      } catch (const std::exception& e) {
        result.ok = false;
        result.error = fmt::format("rank {} sent an unreadable result: {}", source, e.what());
      }
      auto task = running.find(source);
      if (task == running.end()) {
        spdlog::warn("rank 0: result from rank {}, which {}; ignored", source,
                     groups.leads(source) ? "runs no task" : "does not lead a group");
        return;
      }
      result.trial_id = task->second.trial_id;  // rank 0's own record of what that worker runs
      running.erase(task);
      scheduler.record(result);
      idle.insert(source);
      for (const int rank : group_of(source)) {
        WorkerRow& row = book[rank];
        row.state = "idle";
        row.trial_id = 0;
        row.progress = Json::object();
      }
      book.changed();
    } else {
      spdlog::warn("rank 0: unexpected message tag {} from rank {}", static_cast<int>(message->tag), source);
    }
  };
  while (active > 0) {
    // Hand work to idle workers; release them all once nothing is left to run.
    for (int worker : std::vector<int>(idle.begin(), idle.end())) dispatch(worker);
    if (scheduler.finished()) {
      for (int worker : idle) {
        session.send(worker, Tag::Done, "");  // the leader passes it on to its members
        for (const int rank : group_of(worker)) book[rank].state = "released";
        book.changed();
        --active;
      }
      idle.clear();
      if (active == 0) break;
    }
    poll_farm(farm, scheduler, spec);
    // Wait for a message, then take every one already there before judging who went silent: heartbeats that queued
    // while rank 0 was busy (recording, measuring) count.
    for (auto message = session.receive(std::chrono::milliseconds(200), std::chrono::milliseconds(5)); message;
         message = session.receive(std::chrono::milliseconds(0))) {
      handle(&*message);
    }
    // Ranks that hold a task and have gone silent, or run it far past its limit.
    const auto now = Clock::now();
    for (const auto& [worker, held] : std::map<int, Assignment>(running)) {
      // The rank of the group heard from longest ago.
      int quiet = worker;
      Clock::time_point heard = held.heard;
      for (const auto& [member, when] : held.members_heard) {
        if (when < heard) {
          quiet = member;
          heard = when;
        }
      }
      const double silent = std::chrono::duration<double>(now - heard).count();
      const double busy = std::chrono::duration<double>(now - held.started).count();
      if (now - heard > silence_limit) {
        lose(worker, quiet,
             fmt::format("stopped answering: no heartbeat for {:.1f} s (limit {:g} s)", silent,
                         spec.run.heartbeat_timeout_seconds));
      } else if (spec.run.trial_timeout_seconds > 0 && busy > stuck_after) {
        lose(worker, worker,
             fmt::format("did not stop its task at the limit: timeout after {:g} s, still running {:.0f} s after it "
                         "started",
                         spec.run.trial_timeout_seconds, busy));
      }
    }
    if (active == 0) break;
    book.save();
  }
  book.save(true);
  return lost_reasons;
}

/// Checks [run] ranks_per_trial against the worker ranks, tells every worker how they are grouped, and makes the
/// groups' communicators (every rank takes part in the split; rank 0 is alone in its own). Throws InputError before
/// any worker is told when the layout is impossible.
WorkerGroups start_workers(MpiSession& session, const ExperimentSpec& spec) {
  const int workers = session.size() - 1;
  const auto per_trial = static_cast<int>(spec.run.ranks_per_trial);
  if (workers == 0) {
    check_input(per_trial == 1,
                "{}: [run] ranks_per_trial = {} needs worker ranks, and this run has none: start it with `mpirun -n "
                "{} edgesweep run ...` (rank 0 and {} workers), or set ranks_per_trial = 1",
                spec.path.string(), per_trial, per_trial + 1, per_trial);
    return WorkerGroups{0, 1};
  }
  check_input(workers % per_trial == 0,
              "{}: [run] ranks_per_trial = {} does not divide the {} worker rank(s) of this run (mpirun -n {}): start "
              "{} ranks (rank 0 and a multiple of {} workers), or change ranks_per_trial",
              spec.path.string(), per_trial, workers, session.size(), 1 + per_trial * std::max(1, workers / per_trial),
              per_trial);
  for (int rank = 1; rank <= workers; ++rank) {
    session.send(rank, Tag::Setup, Json{{"ranks_per_trial", per_trial}, {"device", spec.run.device}}.dump());
  }
  if (per_trial > 1) session.split(0, 0);  // rank 0's own group of one, freed at once
  return WorkerGroups{workers, per_trial};
}

}  // namespace

fs::path store_path(const ExperimentSpec& spec) { return spec.run.results_dir / "edgesweep.db"; }

fs::path baseline_cache_dir(const ExperimentSpec& spec) { return spec.run.results_dir.parent_path() / "cache"; }

namespace {

/// The Pareto table of every device of the experiment (batch 1, the experiment's [objectives]) and the HTML report.
void print_device_fronts(const Store& store, const ExperimentSpec& spec, int64_t experiment_id) {
  try {
    ParetoOptions options;
    options.objectives = spec.objectives.objectives;
    options.constraints = spec.objectives.constraints;
    // The devices measured the batch sizes of [measure]: batch 1 (one frame) when among them, else the first.
    const std::vector<int64_t>& measured = spec.measure.batch_sizes;
    options.batch = measured.empty() || std::find(measured.begin(), measured.end(), 1) != measured.end()
                        ? 1
                        : measured.front();
    std::vector<DeviceFront> fronts;
    for (DeviceFront& front : select_pareto(load_candidates(store, experiment_id, options.batch), options)) {
      for (const DeviceSpec& device : spec.devices) {
        if (device.name == front.device) fronts.push_back(std::move(front));
      }
    }
    if (fronts.empty()) {
      fmt::print("pareto: no device measurement at batch {} to choose from\n", options.batch);
    } else {
      fmt::print("{}", format_pareto(fronts, options, "table"));
    }
  } catch (const std::exception& e) {
    spdlog::warn("pareto: {}", e.what());
  }
  const fs::path report = spec.run.results_dir / "report.html";
  try {
    write_report(store, experiment_id, report);
    fmt::print("report: {}\n", report.string());
  } catch (const std::exception& e) {
    spdlog::warn("report: cannot write '{}': {}", report.string(), e.what());
  }
}

}  // namespace

int orchestrate(const ExperimentSpec& spec, const RunOptions& options, MpiSession& session) {
  std::vector<std::string> lost;  // worker ranks given up on, and why
  int code = 0;
  const WorkerGroups groups = start_workers(session, spec);
  {
    Store::check_writable(store_path(spec));  // a read-only store is named before its lock is even tried
    const StoreLock lock(store_path(spec));  // before anything is read or written: one run per store
    Store store = Store::open(store_path(spec), Store::Mode::ReadWrite);
    Scheduler scheduler(store, spec, options);
    scheduler.prepare();
    Farm farm(store, spec, scheduler.experiment_id());
    scheduler.set_farm(&farm);
    farm.start(options.resume);
    if (session.size() == 1) {
      spdlog::info("running '{}' in this process (no worker ranks)", spec.name);
      run_inline(scheduler, farm, spec, options.runner, session);
    } else {
      if (groups.ranks_per_trial > 1) {
        spdlog::info("running '{}' on {} worker rank(s) in {} group(s) of {} (data-parallel tasks)", spec.name,
                     groups.workers, groups.groups(), groups.ranks_per_trial);
      } else {
        spdlog::info("running '{}' on {} worker rank(s)", spec.name, session.size() - 1);
      }
      lost = run_over_mpi(scheduler, session, farm, spec, groups);
    }
    code = scheduler.finish();
    bool measurements_complete = true;
    if (farm.enabled()) {
      measurements_complete = farm.wait(spec.measure.timeout_seconds);
      farm.stop();
      const FarmCounts counts = farm.counts();
      if (!measurements_complete) {
        spdlog::warn("measurements: not finished {} s after the trials ({} pending); `edgesweep run --resume {}` "
                     "continues them",
                     spec.measure.timeout_seconds, counts.pending, spec.path.string());
      }
      if (counts.failed > 0) {
        spdlog::warn("measurements: {} of {} failed; `edgesweep query {} \"SELECT id, status, error FROM "
                     "measurement_jobs WHERE status = 'failed'\"` lists them, `run --resume` retries them",
                     counts.failed, counts.done + counts.failed + counts.pending, spec.path.string());
      }
      // Trials finished but measurements failed or unfinished: the run did not do everything it was asked to.
      if (counts.failed > 0 || !measurements_complete) code = std::max(code, 1);
    }
    if (options.summary) {
      fmt::print("{}", format_trials(store, scheduler.experiment_id(), "table"));
      if (farm.enabled()) print_device_fronts(store, spec, scheduler.experiment_id());
    }
    fmt::print("results: {}\n", store_path(spec).string());
  }  // the store is closed and its lock released
  if (!lost.empty()) {
    // A lost rank never reaches MPI_Finalize, where the others would wait for it: the job ends here, every rank
    // with it, once everything is recorded.
    code = std::max(code, 1);
    for (const std::string& reason : lost) fmt::print(stderr, "lost: {}\n", reason);
    fmt::print(stderr,
               "{} worker rank(s) lost; the tasks they held are recorded failed, and `edgesweep run --resume {}` runs "
               "them again\n",
               lost.size(), spec.path.string());
    std::fflush(stdout);
    std::fflush(stderr);
    spdlog::shutdown();
    session.abort(code);
  }
  return code;
}

}  // namespace edgesweep
