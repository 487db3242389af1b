// Sweeps through Slurm: a private one-node Slurm (scripts/slurm/local-cluster: munged, slurmctld and slurmd of this
// test, on ports of their own) runs scripts/slurm/edgesweep.sbatch as a user would submit it: a small sweep to the
// end, and a sweep cancelled mid-way (scancel) that a second submission of the same command resumes. Skipped where
// Slurm is not installed (scripts/install-deps installs it) or the tests do not run as root (slurmd runs jobs as
// their users).
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"

namespace edgesweep::apps_test {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kScripts = std::string(EDGESWEEP_SOURCE_DIR) + "/scripts/slurm/";

/// A loopback port nothing listens on (bound once, then released); 0 when none can be had.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

/// What is missing for a local Slurm here, or empty.
std::string missing_for_slurm() {
  if (mpiexec_path().empty()) return "built without MPI";
  if (::geteuid() != 0) return "slurmd needs root";
  for (const char* tool : {"/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged", "/usr/bin/sbatch",
                           "/usr/bin/scancel", "/usr/bin/scontrol"}) {
    if (!fs::exists(tool)) return fmt::format("{} is missing (scripts/install-deps installs slurm-wlm and munge)", tool);
  }
  return "";
}


class SlurmTest : public AppTest {
 protected:
  void SetUp() override {
    AppTest::SetUp();
    const std::string missing = missing_for_slurm();
    if (!missing.empty()) GTEST_SKIP() << missing;
    cluster_ = folder_ / "slurm";
    const int controller = free_port();
    int node = free_port();
    while (node == controller) node = free_port();
    const ProcessResult started =
        run_process({kScripts + "local-cluster", "start", cluster_.string(), std::to_string(controller),
                     std::to_string(node), "4"},
                    folder_, std::chrono::seconds(90));
    ASSERT_EQ(started.exit_code, 0) << describe(started);
    running_ = true;
  }
  void TearDown() override {
    if (running_) {
      const ProcessResult stopped =
          run_process({kScripts + "local-cluster", "stop", cluster_.string()}, folder_, std::chrono::seconds(60));
      EXPECT_EQ(stopped.exit_code, 0) << describe(stopped);
    }
    AppTest::TearDown();
  }

  std::map<std::string, std::string> slurm_environment() const {
    std::map<std::string, std::string> env = mpi_environment();
    env["SLURM_CONF"] = (cluster_ / "slurm.conf").string();
    env["EDGESWEEP"] = EDGESWEEP_BINARY;
    return env;
  }

  /// Submits the sbatch script for `spec` on three tasks; returns the job id.
  std::string submit(const fs::path& spec, const std::string& log) {
    const ProcessResult submitted =
        run_process({"/usr/bin/sbatch", "--parsable", "--ntasks=3", "--chdir=" + folder_.string(),
                     "--output=" + (folder_ / log).string(), kScripts + "edgesweep.sbatch", spec.string()},
                    folder_, std::chrono::seconds(60), slurm_environment());
    EXPECT_EQ(submitted.exit_code, 0) << describe(submitted);
    std::string id = submitted.out.substr(0, submitted.out.find_first_of(";\n"));
    EXPECT_FALSE(id.empty()) << describe(submitted);
    return id;
  }

  /// The job's state as scontrol reports it (PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, ...).
  std::string job_state(const std::string& id) const {
    const ProcessResult shown = run_process({"/usr/bin/scontrol", "show", "job", id}, folder_,
                                            std::chrono::seconds(30), slurm_environment());
    const size_t at = shown.out.find("JobState=");
    if (at == std::string::npos) return "";
    const size_t start = at + 9;
    return shown.out.substr(start, shown.out.find_first_of(" \n", start) - start);
  }

  /// Whether a job in `state` has not ended yet.
  static bool unfinished(const std::string& state) {
    return state.empty() || state == "PENDING" || state == "CONFIGURING" || state == "RUNNING" ||
           state == "COMPLETING";
  }

  /// Waits up to `seconds` for the job to end; returns its last state.
  std::string wait_for_end(const std::string& id, int seconds) const {
    const auto deadline = Clock::now() + std::chrono::seconds(seconds);
    std::string state;
    while (Clock::now() < deadline) {
      state = job_state(id);
      if (!unfinished(state)) return state;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    return state;
  }

  /// The tasks of experiment `name` by status.
  std::map<TrialStatus, int> counts(const std::string& name) const {
    std::map<TrialStatus, int> by_status;
    const fs::path db = results_dir_ / "edgesweep.db";
    if (!fs::exists(db)) return by_status;
    try {
      const Store store = Store::open(db, Store::Mode::ReadOnly);
      for (const TrialRow& row : trials_of(store, name)) ++by_status[row.status];
    } catch (const std::exception&) {
      // not recorded yet
    }
    return by_status;
  }

  fs::path cluster_;
  bool running_ = false;
};

TEST_F(SlurmTest, ASweepSubmittedWithSbatchRunsToTheEnd) {
  const fs::path spec = write_file("small.toml", tiny_experiment("small", results_dir_, "arch = \"small-cnn\"",
                                                                 R"toml([[pipeline]]
stage = "finetune"
epochs = 1
lr = [0.001, 0.01]
)toml"));
  const std::string job = submit(spec, "small-job.log");
  ASSERT_FALSE(job.empty());
  const std::string state = wait_for_end(job, 300);
  const std::string log = read_log(folder_ / "small-job.log");
  ASSERT_EQ(state, "COMPLETED") << log;
  EXPECT_TRUE(contains(log, "on 2 worker rank(s)")) << log;  // srun started three ranks of one MPI world
  EXPECT_EQ(counts("small"), (std::map<TrialStatus, int>{{TrialStatus::Done, 3}})) << log;
}

TEST_F(SlurmTest, ACancelledJobIsResumedByTheSameSubmission) {
  const fs::path spec =
      write_file("cancel.toml", tiny_experiment("cancel", results_dir_, "arch = \"small-cnn\"", kFiveFinetunes));
  const fs::path db = results_dir_ / "edgesweep.db";
  const std::string first = submit(spec, "first-job.log");
  ASSERT_FALSE(first.empty());
  // Mid-sweep: two tasks done (the baseline and a trial), the others still to run.
  const auto deadline = Clock::now() + std::chrono::seconds(240);
  while (Clock::now() < deadline && counts("cancel")[TrialStatus::Done] < 2) {
    const std::string state = job_state(first);
    ASSERT_TRUE(unfinished(state)) << "the job ended (" << state << ") before it could be cancelled";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_GE(counts("cancel")[TrialStatus::Done], 2) << "no two done tasks in time";
  const ProcessResult cancelled =
      run_process({"/usr/bin/scancel", first}, folder_, std::chrono::seconds(30), slurm_environment());
  ASSERT_EQ(cancelled.exit_code, 0) << describe(cancelled);
  EXPECT_EQ(wait_for_end(first, 120), "CANCELLED");
  std::map<int64_t, std::string> done_before;  // id -> finished
  {
    const Store store = Store::open(db, Store::Mode::ReadOnly);
    EXPECT_EQ(store.query("PRAGMA integrity_check"), Json::parse(R"([{"integrity_check": "ok"}])"));
    for (const TrialRow& row : trials_of(store, "cancel")) {
      if (row.status == TrialStatus::Done) done_before[row.id] = row.finished;
    }
  }
  ASSERT_LT(done_before.size(), 6u) << "the sweep ended before the cancel";

  // The same submission again: it resumes, runs the rest, and redoes nothing that was done.
  const std::string second = submit(spec, "second-job.log");
  ASSERT_FALSE(second.empty());
  const std::string state = wait_for_end(second, 300);
  const std::string log = read_log(folder_ / "second-job.log");
  ASSERT_EQ(state, "COMPLETED") << log;
  EXPECT_TRUE(contains(log, "are done and skipped")) << log;
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  EXPECT_EQ(store.query("PRAGMA integrity_check"), Json::parse(R"([{"integrity_check": "ok"}])"));
  size_t done = 0;
  for (const TrialRow& row : trials_of(store, "cancel")) {
    EXPECT_EQ(row.status, TrialStatus::Done) << "task " << row.id << ": " << row.error;
    done += row.status == TrialStatus::Done ? 1 : 0;
    if (done_before.count(row.id)) {
      EXPECT_EQ(row.finished, done_before.at(row.id)) << "task " << row.id << " redone";
    }
  }
  EXPECT_EQ(done, 6u);
}

}  // namespace
}  // namespace edgesweep::apps_test
