// End-to-end resume: a finished experiment is skipped by `run --resume`, refused by `run` without it, and after a
// simulated crash (a trial left 'running', artifacts corrupted or deleted) exactly the affected trials run again,
// on MPI worker ranks when MPI is there, and stay done. A changed experiment file is refused.
#include <sqlite3.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <ostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/orchestrator/store_lock.h"

namespace edgesweep::apps_test {
namespace {

/// What a run may change about a task: its row, and how many metrics and artifacts it has.
struct TaskSnapshot {
  TrialStatus status = TrialStatus::Pending;
  int64_t attempts = 0;
  int64_t worker = 0;
  std::string started;
  std::string finished;
  size_t metric_count = 0;
  size_t artifact_count = 0;

  bool operator==(const TaskSnapshot& o) const {
    return status == o.status && attempts == o.attempts && worker == o.worker && started == o.started &&
           finished == o.finished && metric_count == o.metric_count && artifact_count == o.artifact_count;
  }
};

std::ostream& operator<<(std::ostream& out, const TaskSnapshot& s) {
  return out << fmt::format("{{{}, attempts {}, worker {}, started {}, finished {}, {} metrics, {} artifacts}}",
                            to_string(s.status), s.attempts, s.worker, s.started, s.finished, s.metric_count,
                            s.artifact_count);
}

std::map<int64_t, TaskSnapshot> snapshot(const fs::path& db, const std::string& experiment) {
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  std::map<int64_t, TaskSnapshot> tasks;
  for (const TrialRow& row : trials_of(store, experiment)) {
    tasks[row.id] = {row.status,   row.attempts,
                     row.worker,   row.started,
                     row.finished, store.metrics(row.id).size(),
                     store.artifacts(row.id).size()};
  }
  return tasks;
}

struct SqliteCloser {
  void operator()(sqlite3* connection) const { sqlite3_close_v2(connection); }
};

/// Runs `sql` on the database file directly, as another program (or a crashed run) would leave it.
void execute_directly(const fs::path& db, const std::string& sql) {
  sqlite3* raw = nullptr;
  const int opened = sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READWRITE, nullptr);
  std::unique_ptr<sqlite3, SqliteCloser> connection(raw);
  ASSERT_EQ(opened, SQLITE_OK) << sqlite3_errstr(opened);
  char* message = nullptr;
  const int result = sqlite3_exec(connection.get(), sql.c_str(), nullptr, nullptr, &message);
  const std::string error = message != nullptr ? message : "";
  sqlite3_free(message);
  ASSERT_EQ(result, SQLITE_OK) << sql << ": " << error;
  ASSERT_EQ(sqlite3_changes(connection.get()), 1) << sql;
}

using ResumeTest = AppTest;

TEST_F(ResumeTest, RunKilledMidTrialResumesWithoutRedoingDoneTrialsOrKeepingPartialOnes) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  const std::string spec_text = tiny_experiment("killed", results_dir_, "arch = \"small-cnn\"", R"toml([[pipeline]]
stage = "finetune"
epochs = 2
lr = [0.001, 0.002, 0.005, 0.01, 0.02]
optimizer = "adam"
batch_size = 32
)toml");
  const fs::path spec = write_file("killed.toml", spec_text);
  const fs::path db = results_dir_ / "edgesweep.db";
  const std::vector<std::string> args = {mpiexec_path(), "-np", "2", "--oversubscribe", EDGESWEEP_BINARY, "run",
                                         spec.string()};
  std::map<int64_t, TaskSnapshot> at_kill;
  {
    // The whole run (mpirun, rank 0, the worker) killed with SIGKILL once a trial is done and another is running.
    Child run(args, folder_ / "killed-run.log", mpi_environment());
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
    bool ready = false;
    while (!ready && std::chrono::steady_clock::now() < deadline && !run.ended()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (!fs::exists(db)) continue;
      try {
        at_kill = snapshot(db, "killed");
      } catch (const std::exception&) {
        continue;  // the experiment is not recorded yet
      }
      int trials_done = 0, running = 0;
      for (const auto& [id, task] : at_kill) {
        trials_done += task.status == TrialStatus::Done && id > 1 ? 1 : 0;
        running += task.status == TrialStatus::Running ? 1 : 0;
      }
      ready = trials_done >= 1 && running == 1;
    }
    ASSERT_TRUE(ready) << "no moment with a done trial and a running one; the run "
                       << (run.ended() ? "ended" : "was still going");
    run.stop(SIGKILL);
    at_kill = snapshot(db, "killed");  // what the kill left
  }
  int64_t interrupted = 0;
  for (const auto& [id, task] : at_kill) interrupted = task.status == TrialStatus::Running ? id : interrupted;
  ASSERT_NE(interrupted, 0);

  // The lock went with the killed run: a resume is not refused, and finishes the sweep.
  const ProcessResult resumed = edgesweep_mpi(2, {"run", "--resume", spec.string()});
  ASSERT_FALSE(resumed.timed_out) << describe(resumed);
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  const std::map<int64_t, TaskSnapshot> after = snapshot(db, "killed");
  ASSERT_EQ(after.size(), 6u);  // a baseline and five trials
  for (const auto& [id, task] : after) {
    SCOPED_TRACE("task " + std::to_string(id));
    EXPECT_EQ(task.status, TrialStatus::Done);
    EXPECT_EQ(task.artifact_count, 1u);
    if (at_kill.at(id).status == TrialStatus::Done) {
      EXPECT_EQ(task, at_kill.at(id));  // not run again
    }
  }
  EXPECT_EQ(after.at(interrupted).attempts, at_kill.at(interrupted).attempts + 1);
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  EXPECT_EQ(store.query("PRAGMA integrity_check"), Json::parse(R"([{"integrity_check": "ok"}])"));
  // Every archive in the folder is one the store records: nothing half-written is kept.
  std::set<std::string> recorded;
  for (const auto& [id, task] : after) {
    for (const ArtifactRow& a : store.artifacts(id)) recorded.insert(fs::path(a.path).filename().string());
  }
  for (const auto& entry : fs::directory_iterator(results_dir_ / "artifacts")) {
    EXPECT_TRUE(recorded.count(entry.path().filename().string())) << "unrecorded file " << entry.path();
  }
}

TEST_F(ResumeTest, ASecondRunOnAStoreInUseIsRefusedAndReadersStillWork) {
  const std::string spec_text = tiny_experiment("owned", results_dir_, "arch = \"small-cnn\"", R"toml([[pipeline]]
stage = "finetune"
epochs = 1
)toml");
  const fs::path spec = write_file("owned.toml", spec_text);
  const fs::path db = results_dir_ / "edgesweep.db";
  {
    Store store = Store::open(db, Store::Mode::ReadWrite);
    store.create_experiment("owned", spec_text, "0123");
  }
  // This test process stands for the run that owns the store.
  std::optional<StoreLock> owner;
  owner.emplace(db);
  for (const std::vector<std::string>& args : {std::vector<std::string>{"run", "--resume", spec.string()},
                                               std::vector<std::string>{"run", spec.string()}}) {
    const ProcessResult refused = edgesweep(args);
    ASSERT_FALSE(refused.timed_out) << describe(refused);
    EXPECT_EQ(refused.exit_code, 1) << describe(refused);
    EXPECT_TRUE(contains(refused.err, fmt::format("is in use by another run (pid {} on host", getpid())))
        << describe(refused);
  }
  const ProcessResult status = edgesweep({"status", db.string()});
  EXPECT_EQ(status.exit_code, 0) << describe(status);
  EXPECT_TRUE(contains(status.out, "owned")) << describe(status);
  const ProcessResult query = edgesweep({"query", db.string(), "SELECT count(*) AS n FROM trials"});
  EXPECT_EQ(query.exit_code, 0) << describe(query);
  EXPECT_TRUE(contains(query.out, "\"n\": 0")) << describe(query);  // the refused runs added nothing
  owner.reset();
}

TEST_F(ResumeTest, SkipsDoneTasksAndRerunsExactlyTheBrokenOnes) {
  const std::string spec_text = tiny_experiment("resume", results_dir_, "arch = \"small-cnn\"", R"toml([[pipeline]]
stage = "finetune"
epochs = 1
lr = [0.001, 0.005, 0.01]
optimizer = "adam"
batch_size = 64
)toml");
  const fs::path spec = write_file("resume.toml", spec_text);
  const fs::path db = results_dir_ / "edgesweep.db";

  const ProcessResult first = edgesweep({"run", spec.string()});
  ASSERT_FALSE(first.timed_out) << describe(first);
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const std::map<int64_t, TaskSnapshot> after_first = snapshot(db, "resume");
  ASSERT_EQ(after_first.size(), 4u);  // a baseline and three trials
  for (const auto& [id, task] : after_first) {
    EXPECT_EQ(task.status, TrialStatus::Done) << "task " << id;
    EXPECT_EQ(task.attempts, 1) << "task " << id;
    EXPECT_EQ(task.artifact_count, 1u) << "task " << id;
    EXPECT_GT(task.metric_count, 0u) << "task " << id;
  }

  // `run` again without --resume: refused with a hint, the store untouched.
  const ProcessResult again = edgesweep({"run", spec.string()});
  ASSERT_FALSE(again.timed_out) << describe(again);
  EXPECT_EQ(again.exit_code, 2) << describe(again);
  EXPECT_TRUE(contains(again.err, "--resume")) << describe(again);
  EXPECT_EQ(snapshot(db, "resume"), after_first);

  // `run --resume` on a finished experiment: everything skipped, nothing trained, nothing recorded.
  const ProcessResult resumed = edgesweep({"run", "--resume", spec.string()});
  ASSERT_FALSE(resumed.timed_out) << describe(resumed);
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  EXPECT_TRUE(contains(resumed.out + resumed.err, "4 of 4 tasks are done and skipped")) << describe(resumed);
  EXPECT_EQ(snapshot(db, "resume"), after_first);
  EXPECT_LT(resumed.seconds, 0.6 * first.seconds)
      << "a resume with nothing to do took " << resumed.seconds << " s; the first run took " << first.seconds << " s";

  // A crash: one trial left 'running', one trial's artifact corrupted, another's deleted.
  std::vector<int64_t> trial_ids;
  for (const auto& [id, task] : after_first) {
    const Store store = Store::open(db, Store::Mode::ReadOnly);
    if (store.trial(id)->kind == "trial") trial_ids.push_back(id);
  }
  ASSERT_EQ(trial_ids.size(), 3u);
  const int64_t was_running = trial_ids[0];
  const int64_t corrupted = trial_ids[1];
  const int64_t deleted = trial_ids[2];
  std::map<int64_t, ArtifactRow> old_artifact;
  {
    const Store store = Store::open(db, Store::Mode::ReadOnly);
    for (int64_t id : trial_ids) old_artifact[id] = store.artifacts(id).front();
  }
  execute_directly(db, fmt::format("UPDATE trials SET status = 'running' WHERE id = {}", was_running));
  {
    std::ofstream out(results_dir_ / old_artifact[corrupted].path, std::ios::binary | std::ios::trunc);
    out << "not a TorchScript archive";
  }
  ASSERT_TRUE(fs::remove(results_dir_ / old_artifact[deleted].path));

  // The recovery runs on two worker ranks when MPI is there: other thread counts than the first run, so the rebuilt
  // archives may differ in bytes from the lost ones, and the stale artifact rows must not matter afterwards.
  const std::vector<std::string> resume_args = {"run", "--resume", spec.string()};
  const ProcessResult recovered = mpiexec_path().empty() ? edgesweep(resume_args) : edgesweep_mpi(3, resume_args);
  ASSERT_FALSE(recovered.timed_out) << describe(recovered);
  ASSERT_EQ(recovered.exit_code, 0) << describe(recovered);
  const std::string recovery_log = recovered.out + recovered.err;
  EXPECT_TRUE(contains(recovery_log, "1 trial(s) that were running are queued again")) << describe(recovered);
  EXPECT_TRUE(contains(recovery_log, "1 of 4 tasks are done and skipped")) << describe(recovered);
  EXPECT_TRUE(contains(recovery_log, old_artifact[corrupted].sha256)) << describe(recovered);
  EXPECT_TRUE(contains(recovery_log, old_artifact[deleted].sha256)) << describe(recovered);

  const std::map<int64_t, TaskSnapshot> after_recovery = snapshot(db, "resume");
  ASSERT_EQ(after_recovery.size(), after_first.size());
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  for (const auto& [id, task] : after_recovery) {
    SCOPED_TRACE(fmt::format("task {}", id));
    EXPECT_EQ(task.status, TrialStatus::Done);
    const bool rerun = id == was_running || id == corrupted || id == deleted;
    if (!rerun) {
      EXPECT_EQ(task, after_first.at(id)) << "a task that was fine ran again";
      continue;
    }
    EXPECT_EQ(task.attempts, 2);
    EXPECT_EQ(task.artifact_count, 2u);
    if (!mpiexec_path().empty()) {
      EXPECT_TRUE(task.worker == 1 || task.worker == 2) << "worker " << task.worker;
    }
    EXPECT_EQ(task.metric_count, 2 * after_first.at(id).metric_count);
    // Its newest artifact is the one in use, and its file matches it again.
    const ArtifactRow newest = store.artifacts(id).back();
    const fs::path file = results_dir_ / newest.path;
    ASSERT_TRUE(fs::is_regular_file(file)) << file;
    EXPECT_EQ(sha256_file(file), newest.sha256);
    const double accuracy = final_metrics(store, id).at("test_accuracy");
    EXPECT_GT(accuracy, 10.0);
    EXPECT_LE(accuracy, 100.0);
  }
  const auto experiment = store.find_experiment("resume");
  ASSERT_TRUE(experiment.has_value());
  EXPECT_EQ(experiment->status, "done");

  // Recovered for good: one more resume finds every task done and its artifacts intact.
  const ProcessResult settled = edgesweep({"run", "--resume", spec.string()});
  ASSERT_EQ(settled.exit_code, 0) << describe(settled);
  EXPECT_TRUE(contains(settled.out + settled.err, "4 of 4 tasks are done and skipped")) << describe(settled);
  EXPECT_EQ(snapshot(db, "resume"), after_recovery);

  // Comments, blank lines and spacing changed, the settings not: it resumes (nothing to do).
  write_file("resume.toml", "# measured: about a minute\n\n" + spec_text + "\n# the end\n");
  const ProcessResult commented = edgesweep({"run", "--resume", spec.string()});
  ASSERT_EQ(commented.exit_code, 0) << describe(commented);
  EXPECT_TRUE(contains(commented.out + commented.err, "its settings did not")) << describe(commented);
  EXPECT_TRUE(contains(commented.out + commented.err, "4 of 4 tasks are done and skipped")) << describe(commented);
  EXPECT_EQ(snapshot(db, "resume"), after_recovery);

  // The experiment file changed since it was recorded: resuming would mix two experiments, so it is refused.
  std::string changed_text = spec_text;
  const size_t seed = changed_text.find("seed = 11");
  ASSERT_NE(seed, std::string::npos);
  changed_text.replace(seed, 9, "seed = 12");
  write_file("resume.toml", changed_text);
  const ProcessResult changed = edgesweep({"run", "--resume", spec.string()});
  ASSERT_FALSE(changed.timed_out) << describe(changed);
  EXPECT_EQ(changed.exit_code, 2) << describe(changed);
  EXPECT_TRUE(contains(changed.err, "changed")) << describe(changed);
  EXPECT_TRUE(contains(changed.err, spec.string())) << describe(changed);
  EXPECT_EQ(snapshot(db, "resume"), after_recovery);
}

}  // namespace
}  // namespace edgesweep::apps_test
