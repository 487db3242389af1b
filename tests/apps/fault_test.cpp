// Faults from outside a run, each with real processes: a worker rank killed mid-trial, a worker stopped (SIGSTOP)
// past its heartbeat, rank 0 killed mid-trial, a task past its time limit, the disk filling up while trials write
// their archives, and a store whose file cannot be written. After each, nothing recorded is lost
// (PRAGMA integrity_check, every done trial and its archive as they were) and `run --resume` finishes the sweep.
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"
#include "edgesweep/common/hash.h"

namespace edgesweep::apps_test {
namespace {

using Clock = std::chrono::steady_clock;

/// A done trial as recorded: its row and its archives with their hashes.
struct DoneTrial {
  int64_t attempts = 0;
  std::string finished;
  std::vector<std::pair<std::string, std::string>> artifacts;  ///< path, sha256
  bool operator==(const DoneTrial& o) const {
    return attempts == o.attempts && finished == o.finished && artifacts == o.artifacts;
  }
};

/// The done trials of experiment `name`.
std::map<int64_t, DoneTrial> done_trials(const fs::path& db, const std::string& name) {
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  std::map<int64_t, DoneTrial> done;
  for (const TrialRow& row : trials_of(store, name)) {
    if (row.status != TrialStatus::Done) continue;
    DoneTrial trial{row.attempts, row.finished, {}};
    for (const ArtifactRow& a : store.artifacts(row.id)) trial.artifacts.emplace_back(a.path, a.sha256);
    done[row.id] = trial;
  }
  return done;
}

/// What every fault must leave: an intact store and every done trial's archive on disk with its recorded hash; with
/// `no_strays`, also no archive the store does not record (a process killed mid-write cannot clean up after itself,
/// the next run does).
void expect_nothing_lost(const fs::path& results, const std::string& name, bool no_strays = true) {
  const fs::path db = results / "edgesweep.db";
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  EXPECT_EQ(store.query("PRAGMA integrity_check"), Json::parse(R"([{"integrity_check": "ok"}])"));
  std::set<std::string> recorded;
  for (const auto& [id, trial] : done_trials(db, name)) {
    for (const auto& [path, sha] : trial.artifacts) {
      SCOPED_TRACE(fmt::format("trial {} archive {}", id, path));
      recorded.insert(fs::path(path).filename().string());
      ASSERT_TRUE(fs::exists(results / path));
      EXPECT_EQ(sha256_file(results / path), sha);
    }
  }
  for (const TrialRow& row : trials_of(store, name)) {
    for (const ArtifactRow& a : store.artifacts(row.id)) recorded.insert(fs::path(a.path).filename().string());
  }
  if (!no_strays || !fs::exists(results / "artifacts")) return;
  for (const auto& entry : fs::directory_iterator(results / "artifacts")) {
    EXPECT_TRUE(recorded.count(entry.path().filename().string())) << "unrecorded file " << entry.path();
  }
}

/// Waits (up to `seconds`, while `run` goes on) until experiment `name` has at least `count` done trials.
bool wait_for_done(Child& run, const fs::path& db, const std::string& name, size_t count, int seconds) {
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < deadline && !run.ended()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!fs::exists(db)) continue;
    try {
      if (done_trials(db, name).size() >= count) return true;
    } catch (const std::exception&) {
      // not recorded yet
    }
  }
  return false;
}

/// The pid of the process whose environment holds both `mark` and `variable`, or -1.
pid_t process_with(const std::string& mark, const std::string& variable) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "environ", std::ios::binary);
    const std::string environ((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::set<std::string> variables;
    size_t start = 0;
    while (start < environ.size()) {
      const size_t end = environ.find('\0', start);
      variables.insert(environ.substr(start, end == std::string::npos ? std::string::npos : end - start));
      if (end == std::string::npos) break;
      start = end + 1;
    }
    if (variables.count(mark) && variables.count(variable)) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

/// A small tmpfs mounted on a folder for one test (needs the right to mount: root, or CAP_SYS_ADMIN).
class SmallDisk {
 public:
  SmallDisk(const fs::path& where, size_t bytes) : where_(where) {
    fs::create_directories(where);
    const std::string options = fmt::format("size={}", bytes);
    if (::mount("tmpfs", where.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      error_ = std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~SmallDisk() {
    if (mounted_) ::umount2(where_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  /// Makes the mount read-only (true) or writable again.
  bool set_read_only(bool read_only) {
    return ::mount("tmpfs", where_.c_str(), "tmpfs", MS_REMOUNT | (read_only ? MS_RDONLY : 0), nullptr) == 0;
  }

 private:
  fs::path where_;
  bool mounted_ = false;
  std::string error_;
};

/// Fills the file system of `folder` with `file` until it has no room left; returns the bytes written.
size_t fill_disk(const fs::path& file) {
  std::FILE* out = std::fopen(file.c_str(), "wb");
  if (out == nullptr) return 0;
  std::setvbuf(out, nullptr, _IONBF, 0);
  const std::string block(4096, 'x');
  size_t written = 0;
  while (std::fwrite(block.data(), 1, block.size(), out) == block.size()) written += block.size();
  while (std::fwrite(block.data(), 1, 1, out) == 1) ++written;  // the last bytes
  std::fclose(out);
  return written;
}

/// The row rank 0 keeps of worker `rank` in experiment `name`, when there is one.
std::optional<WorkerRow> worker_row(const fs::path& db, const std::string& name, int64_t rank) {
  try {
    const Store store = Store::open(db, Store::Mode::ReadOnly);
    const auto experiment = store.find_experiment(name);
    if (!experiment) return std::nullopt;
    for (const WorkerRow& row : store.workers(experiment->id)) {
      if (row.rank == rank) return row;
    }
  } catch (const std::exception&) {
    // not there yet
  }
  return std::nullopt;
}

bool process_alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

/// Waits (up to 120 s, while `run` goes on) until rank `rank`'s row shows it training a task; its row then.
std::optional<WorkerRow> wait_until_training(Child& run, const fs::path& db, const std::string& name, int64_t rank) {
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline && !run.ended()) {
    const std::optional<WorkerRow> row = worker_row(db, name, rank);
    if (row && row->state == "busy" && row->progress.value("epochs", 0) > 0) return row;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::nullopt;
}

/// The run's heartbeats: a worker is heard from every 0.5 s and lost after 10 s of silence (twenty missed beats:
/// a busy machine delays a heartbeat thread by far less).
const char* const kFastHeartbeats = "heartbeat_seconds = 0.5\nheartbeat_timeout_seconds = 10\n";

/// Faults of runs on three ranks (rank 0 hands out work, ranks 1 and 2 train) whose processes the test finds by a
/// mark in their environment.
class FaultTest : public AppTest {
 protected:
  /// Starts `spec` under mpirun on three ranks, output in <name>-run.log.
  std::unique_ptr<Child> start_run(const fs::path& spec, const std::string& name) const {
    std::map<std::string, std::string> env = mpi_environment();
    env["EDGESWEEP_FAULT_TEST"] = std::to_string(getpid());
    return std::make_unique<Child>(
        std::vector<std::string>{mpiexec_path(), "-np", "3", "--oversubscribe", "--bind-to", "none", EDGESWEEP_BINARY,
                                 "run", spec.string()},
        folder_ / (name + "-run.log"), env);
  }
  /// The pid of rank `rank` of the run start_run started, or -1.
  static pid_t rank_pid(int rank) {
    return process_with(fmt::format("EDGESWEEP_FAULT_TEST={}", getpid()), fmt::format("OMPI_COMM_WORLD_RANK={}", rank));
  }
  /// After a fault that ended the run of experiment `name` (a baseline and five trials): what was done before it
  /// is unchanged and nothing recorded is lost; then `--resume` on `ranks` ranks finishes the sweep redoing none of
  /// it.
  void expect_resume_finishes(const fs::path& spec, const std::string& name,
                              const std::map<int64_t, DoneTrial>& before, int ranks = 2) {
    const fs::path db = results_dir_ / "edgesweep.db";
    const std::map<int64_t, DoneTrial> after_fault = done_trials(db, name);
    for (const auto& [id, trial] : before) EXPECT_EQ(after_fault.at(id), trial) << "trial " << id;
    expect_nothing_lost(results_dir_, name, false);
    const ProcessResult resumed = edgesweep_mpi(ranks, {"run", "--resume", spec.string()});
    ASSERT_FALSE(resumed.timed_out) << describe(resumed);
    ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
    const std::map<int64_t, DoneTrial> finished = done_trials(db, name);
    EXPECT_EQ(finished.size(), 6u);  // a baseline and five trials
    for (const auto& [id, trial] : after_fault) EXPECT_EQ(finished.at(id), trial) << "trial " << id << " was redone";
    expect_nothing_lost(results_dir_, name);
  }
  /// Runs experiment `name` on three ranks and kills rank `rank` with SIGKILL once two tasks are done; the launcher
  /// must end the job (no rank left behind). `before`: the done trials at the kill; `exit_code` and `log` of the run.
  void kill_rank_mid_trial(const fs::path& spec, const std::string& name, int rank,
                           std::map<int64_t, DoneTrial>& before, int& exit_code, std::string& log) {
    const fs::path db = results_dir_ / "edgesweep.db";
    {
      const std::unique_ptr<Child> run = start_run(spec, name);
      ASSERT_TRUE(wait_for_done(*run, db, name, 2, 240)) << "no two done trials in time";
      const pid_t victim = rank_pid(rank);  // whatever it is doing
      ASSERT_GT(victim, 0) << "rank " << rank << " not found";
      before = done_trials(db, name);
      ASSERT_EQ(::kill(victim, SIGKILL), 0);
      // Open MPI ends the job when a rank dies: the run stops by itself, it does not hang.
      ASSERT_TRUE(run->wait(std::chrono::seconds(60))) << "the job went on after rank " << rank << " was killed";
      exit_code = run->exit_code();
      for (int other = 0; other < 3; ++other) {
        const pid_t left = rank_pid(other);
        EXPECT_FALSE(process_alive(left)) << "rank " << other << " outlived the job";
        if (process_alive(left)) ::kill(left, SIGKILL);
      }
    }
    log = read_log(folder_ / (name + "-run.log"));
  }
};

TEST_F(FaultTest, AWorkerRankKilledMidTrialEndsTheRunAndResumeFinishesIt) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  const fs::path spec = write_file("worker.toml", tiny_experiment("worker", results_dir_, "arch = \"small-cnn\"",
                                                                  kFiveFinetunes));
  std::map<int64_t, DoneTrial> before;
  int exit_code = 0;
  std::string log;
  ASSERT_NO_FATAL_FAILURE(kill_rank_mid_trial(spec, "worker", 2, before, exit_code, log));
  EXPECT_NE(exit_code, 0);
  EXPECT_TRUE(contains(log, "rank 2")) << log;
  expect_resume_finishes(spec, "worker", before);
}

TEST_F(FaultTest, RankZeroKilledMidTrialEndsTheJobAndResumeFinishesIt) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  const fs::path spec = write_file("rank0.toml", tiny_experiment("rank0", results_dir_, "arch = \"small-cnn\"",
                                                                 kFiveFinetunes));
  std::map<int64_t, DoneTrial> before;
  int exit_code = 0;
  std::string log;
  ASSERT_NO_FATAL_FAILURE(kill_rank_mid_trial(spec, "rank0", 0, before, exit_code, log));
  EXPECT_NE(exit_code, 0);
  expect_resume_finishes(spec, "rank0", before);
}

TEST_F(FaultTest, AWorkerStoppedPastItsHeartbeatIsReportedWithItsTaskAndTheRunEndsThenResumes) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  const fs::path spec = write_file(
      "stopped.toml",
      tiny_experiment("stopped", results_dir_, "arch = \"small-cnn\"", kFiveFinetunes) + kFastHeartbeats);
  const fs::path db = results_dir_ / "edgesweep.db";
  std::map<int64_t, DoneTrial> before;
  pid_t worker = -1;
  int64_t held = 0;
  int run_exit = 0;
  {
    const std::unique_ptr<Child> run_pointer = start_run(spec, "stopped");
    Child& run = *run_pointer;
    ASSERT_TRUE(wait_for_done(run, db, "stopped", 2, 240)) << "no two done trials in time";
    worker = rank_pid(2);
    ASSERT_GT(worker, 0) << "worker rank 2 not found";
    // Rank 2 mid-trial: its heartbeats show a trial being trained, and `status` shows where it is.
    const std::optional<WorkerRow> busy = wait_until_training(run, db, "stopped", 2);
    ASSERT_TRUE(busy.has_value()) << "rank 2 was never seen training";
    EXPECT_EQ(busy->pid, worker);
    const ProcessResult status = edgesweep({"status", db.string()});
    EXPECT_EQ(status.exit_code, 0) << describe(status);
    EXPECT_TRUE(contains(status.out, "ranks of 'stopped'")) << status.out;
    EXPECT_TRUE(contains(status.out, "finetune, epoch ")) << status.out;
    ASSERT_EQ(::kill(worker, SIGSTOP), 0);
    before = done_trials(db, "stopped");
    // Rank 1 finishes the sweep; the stopped rank is reported once silent for 10 s, and the run ends, not hangs.
    const bool ended = run.wait(std::chrono::seconds(240));
    if (process_alive(worker)) ::kill(worker, SIGKILL);  // whatever the job left, this test started it
    ASSERT_TRUE(ended) << "the run hung on a stopped worker";
    run_exit = run.exit_code();
  }
  EXPECT_NE(run_exit, 0);
  const std::string log = read_log(folder_ / "stopped-run.log");
  EXPECT_TRUE(contains(log, fmt::format("lost: rank 2 (pid {} on ", worker))) << log;
  EXPECT_TRUE(contains(log, "stopped answering: no heartbeat for")) << log;
  EXPECT_TRUE(contains(log, "--resume")) << log;
  {
    // The one trial rank 2 held is failed with the reason; rank 1 ran the rest.
    const Store store = Store::open(db, Store::Mode::ReadOnly);
    for (const TrialRow& row : trials_of(store, "stopped")) {
      if (row.status == TrialStatus::Failed) {
        EXPECT_EQ(held, 0) << "a second failed trial " << row.id;
        held = row.id;
        EXPECT_EQ(row.worker, 2);
        EXPECT_TRUE(contains(row.error, "rank 2")) << row.error;
        EXPECT_TRUE(contains(row.error, "stopped answering")) << row.error;
      } else {
        EXPECT_EQ(row.status, TrialStatus::Done) << "trial " << row.id;
      }
    }
    EXPECT_GT(held, 0) << "no trial failed with the stopped rank";
    EXPECT_TRUE(contains(log, fmt::format("it held trial {} (", held))) << log;
    const std::optional<WorkerRow> row = worker_row(db, "stopped", 2);
    ASSERT_TRUE(row.has_value());
    EXPECT_EQ(row->state, "lost");
    EXPECT_EQ(row->trial_id, held);
  }
  const ProcessResult status = edgesweep({"status", db.string()});
  EXPECT_TRUE(contains(status.out, "lost")) << status.out;
  expect_resume_finishes(spec, "stopped", before);
}

TEST_F(FaultTest, AMemberOfADataParallelGroupStoppedLosesTheGroupWithItsTaskAndResumeFinishes) {
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI";
  const fs::path spec = write_file("member.toml", tiny_experiment("member", results_dir_, "arch = \"small-cnn\"",
                                                                  kFiveFinetunes) +
                                                      kFastHeartbeats + "ranks_per_trial = 2\n");
  const fs::path db = results_dir_ / "edgesweep.db";
  std::map<int64_t, DoneTrial> before;
  pid_t member = -1;
  int run_exit = 0;
  {
    const std::unique_ptr<Child> run_pointer = start_run(spec, "member");
    Child& run = *run_pointer;
    ASSERT_TRUE(wait_for_done(run, db, "member", 2, 240)) << "no two done trials in time";
    member = rank_pid(2);
    ASSERT_GT(member, 0) << "rank 2 not found";
    // Rank 2 trains with rank 1, and its own heartbeats show it.
    const std::optional<WorkerRow> busy = wait_until_training(run, db, "member", 2);
    ASSERT_TRUE(busy.has_value()) << "rank 2 was never seen training";
    EXPECT_EQ(busy->pid, member);
    ASSERT_EQ(::kill(member, SIGSTOP), 0);
    before = done_trials(db, "member");
    // Its leader waits for it in the gradient exchange; rank 0 notices the member's silence, gives up on the group,
    // and the run ends, not hangs (no other group is left to finish the sweep).
    const bool ended = run.wait(std::chrono::seconds(240));
    for (int rank = 0; rank < 3; ++rank) {  // whatever the job left, this test started it
      const pid_t left = rank_pid(rank);
      if (process_alive(left)) ::kill(left, SIGKILL);
    }
    ASSERT_TRUE(ended) << "the run hung on a stopped member";
    run_exit = run.exit_code();
  }
  EXPECT_NE(run_exit, 0);
  const std::string log = read_log(folder_ / "member-run.log");
  EXPECT_TRUE(contains(log, fmt::format("lost: rank 2 (pid {} on ", member))) << log;
  EXPECT_TRUE(contains(log, "in the group of ranks 1-2")) << log;
  {
    const Store store = Store::open(db, Store::Mode::ReadOnly);
    int64_t held = 0;
    for (const TrialRow& row : trials_of(store, "member")) {
      if (row.status != TrialStatus::Failed) continue;
      EXPECT_EQ(held, 0) << "a second failed trial " << row.id;
      held = row.id;
      EXPECT_EQ(row.worker, 1);  // the group's leader held it
      EXPECT_TRUE(contains(row.error, "rank 2")) << row.error;
      EXPECT_TRUE(contains(row.error, "stopped answering")) << row.error;
    }
    EXPECT_GT(held, 0) << "no trial failed with the stopped member";
    for (const int64_t rank : {1, 2}) {
      const std::optional<WorkerRow> row = worker_row(db, "member", rank);
      ASSERT_TRUE(row.has_value()) << "rank " << rank;
      EXPECT_EQ(row->state, "lost") << "rank " << rank;
    }
  }
  expect_resume_finishes(spec, "member", before, 3);
}

/// Two baselines (two learning rates) that each train far longer than the limit (1000 epochs: over a minute here,
/// the limit is 4 s), with five trials each.
std::string slow_baselines(const std::string& name, const fs::path& results_dir) {
  return tiny_experiment(name, results_dir, "arch = \"small-cnn\"", kFiveFinetunes,
                         "epochs = 1000\nlr = [0.05, 0.1]\nbatch_size = 64\n") +
         "trial_timeout_seconds = 4\n";
}

TEST_F(FaultTest, ATaskPastItsTimeLimitIsRecordedFailedAndItsRankTakesTheNextTask) {
  const auto check_timed_out = [](const fs::path& db, const std::string& name, bool mpi) {
    const Store store = Store::open(db, Store::Mode::ReadOnly);
    std::set<int64_t> ranks;
    size_t baselines = 0;
    for (const TrialRow& row : trials_of(store, name)) {
      EXPECT_EQ(row.status, TrialStatus::Failed) << "task " << row.id;
      if (row.kind != "baseline") {
        EXPECT_TRUE(contains(row.error, "its baseline")) << row.error;
        continue;
      }
      ++baselines;
      ranks.insert(row.worker);
      EXPECT_EQ(row.error.rfind("timeout after 4 s (reached stage 1/1 train, epoch ", 0), 0u) << row.error;
      EXPECT_TRUE(store.artifacts(row.id).empty());
    }
    EXPECT_EQ(baselines, 2u);
    // Both ran on the one worker there is (rank 0 itself when alone): the first one's timeout freed it.
    EXPECT_EQ(ranks, std::set<int64_t>{mpi ? 1 : 0});
    // The worker's row: released at the end, holding nothing, with its host and pid.
    const std::optional<WorkerRow> row = worker_row(db, name, mpi ? 1 : 0);
    ASSERT_TRUE(row.has_value()) << "no row of the worker rank";
    EXPECT_EQ(row->state, "released");
    EXPECT_EQ(row->trial_id, 0);
    EXPECT_GT(row->pid, 0);
    EXPECT_FALSE(row->host.empty());
  };
  const fs::path inline_spec = write_file("inline.toml", slow_baselines("inline", results_dir_));
  const ProcessResult alone = edgesweep({"run", inline_spec.string()});
  ASSERT_FALSE(alone.timed_out) << describe(alone);
  EXPECT_EQ(alone.exit_code, 1) << describe(alone);
  check_timed_out(results_dir_ / "edgesweep.db", "inline", false);
  if (mpiexec_path().empty()) GTEST_SKIP() << "built without MPI (the run in one process passed)";
  const fs::path mpi_spec = write_file("mpi.toml", slow_baselines("mpi", folder_ / "mpi-results"));
  const ProcessResult over_mpi = edgesweep_mpi(2, {"run", mpi_spec.string()});
  ASSERT_FALSE(over_mpi.timed_out) << describe(over_mpi);
  EXPECT_EQ(over_mpi.exit_code, 1) << describe(over_mpi);
  check_timed_out(folder_ / "mpi-results" / "edgesweep.db", "mpi", true);
  // A data-parallel group (ranks 1 and 2) stops together at its leader's limit, and takes the next task.
  const fs::path group_spec =
      write_file("group.toml", slow_baselines("group", folder_ / "group-results") + "ranks_per_trial = 2\n");
  const ProcessResult in_group = edgesweep_mpi(3, {"run", group_spec.string()});
  ASSERT_FALSE(in_group.timed_out) << describe(in_group);
  EXPECT_EQ(in_group.exit_code, 1) << describe(in_group);
  check_timed_out(folder_ / "group-results" / "edgesweep.db", "group", true);
  const std::optional<WorkerRow> member = worker_row(folder_ / "group-results" / "edgesweep.db", "group", 2);
  ASSERT_TRUE(member.has_value()) << "no row of the group's member";
  EXPECT_EQ(member->state, "released");
}

TEST_F(FaultTest, TheDiskFillingUpMidSweepLosesNothingAndResumeFinishesOnceThereIsRoom) {
  SmallDisk disk(results_dir_, 32u << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a small tmpfs here (" << disk.error() << "; needs root)";
  const fs::path spec = write_file("full.toml", tiny_experiment("full", results_dir_, "arch = \"small-cnn\"",
                                                                kFiveFinetunes));
  const fs::path db = results_dir_ / "edgesweep.db";
  const fs::path filler = results_dir_ / "filler";
  std::map<int64_t, DoneTrial> before;
  {
    Child run({EDGESWEEP_BINARY, "run", spec.string()}, folder_ / "full-run.log");
    ASSERT_TRUE(wait_for_done(run, db, "full", 2, 240)) << "no two done trials in time";
    before = done_trials(db, "full");
    ASSERT_GT(fill_disk(filler), 0u);
    // The next archive (or the store's next write) finds no room: the run must end, not hang or crash.
    ASSERT_TRUE(run.wait(std::chrono::seconds(240))) << "the run went on with a full disk";
    EXPECT_NE(run.exit_code(), 0);
    EXPECT_LT(run.exit_code(), 128) << "the run died of a signal on a full disk";
  }
  const std::string log = read_log(folder_ / "full-run.log");
  EXPECT_TRUE(contains(log, "No space left on device") || contains(log, "disk is full")) << log;
  fs::remove(filler);
  const std::map<int64_t, DoneTrial> after_fault = done_trials(db, "full");
  for (const auto& [id, trial] : before) EXPECT_EQ(after_fault.at(id), trial) << "trial " << id;
  expect_nothing_lost(results_dir_, "full");

  const ProcessResult resumed = edgesweep({"run", "--resume", spec.string()});
  ASSERT_FALSE(resumed.timed_out) << describe(resumed);
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  const std::map<int64_t, DoneTrial> finished = done_trials(db, "full");
  EXPECT_EQ(finished.size(), 6u);
  for (const auto& [id, trial] : after_fault) EXPECT_EQ(finished.at(id), trial) << "trial " << id << " was redone";
  expect_nothing_lost(results_dir_, "full");
}

TEST_F(FaultTest, AStoreThatCannotBeWrittenIsRefusedNamedAndLeftAsItWas) {
  const bool root = ::geteuid() == 0;
  std::unique_ptr<SmallDisk> disk;
  if (root) {
    // Root writes through file modes: only a read-only mount stops it.
    disk = std::make_unique<SmallDisk>(results_dir_, 32u << 20);
    if (!disk->mounted()) GTEST_SKIP() << "running as root without the right to mount (" << disk->error() << ")";
  }
  const fs::path spec = write_file("ro.toml", tiny_experiment("ro", results_dir_, "arch = \"small-cnn\"",
                                                              R"toml([[pipeline]]
stage = "finetune"
epochs = 1
lr = [0.001, 0.01]
)toml"));
  const fs::path db = results_dir_ / "edgesweep.db";
  const ProcessResult first = edgesweep({"run", spec.string()});
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  const std::map<int64_t, DoneTrial> before = done_trials(db, "ro");
  ASSERT_EQ(before.size(), 3u);
  if (root) {
    ASSERT_TRUE(disk->set_read_only(true)) << std::strerror(errno);
  } else {
    fs::permissions(db, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  }
  const ProcessResult refused = edgesweep({"run", "--resume", spec.string()});
  ASSERT_FALSE(refused.timed_out) << describe(refused);
  EXPECT_EQ(refused.exit_code, 2) << describe(refused);  // bad input: the store given cannot be written
  EXPECT_TRUE(contains(refused.err, results_dir_.string())) << describe(refused);
  EXPECT_TRUE(contains(refused.err, "read-only")) << describe(refused);
  // Readers still work on it.
  const ProcessResult status = edgesweep({"status", db.string()});
  EXPECT_EQ(status.exit_code, 0) << describe(status);
  if (root) {
    ASSERT_TRUE(disk->set_read_only(false)) << std::strerror(errno);
  } else {
    fs::permissions(db, fs::perms::owner_read | fs::perms::owner_write);
  }
  EXPECT_EQ(done_trials(db, "ro"), before);
  expect_nothing_lost(results_dir_, "ro");
  const ProcessResult resumed = edgesweep({"run", "--resume", spec.string()});
  ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
  EXPECT_EQ(done_trials(db, "ro"), before);
}

}  // namespace
}  // namespace edgesweep::apps_test
