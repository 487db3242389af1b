// End-to-end device farm: `edgesweep run` on a tiny experiment (a custom two-layer model, one epoch on a small
// Fashion-MNIST subset) measures every artifact on loopback agents: one it spawns itself; one the test starts and
// kills mid-benchmark (the job runs again after `run --resume`, and is recorded once); and an address where nothing
// listens (jobs failed naming the device, trials kept, exit code 1); and a result with more timed runs than one
// control frame holds, recorded whole. Every process the test starts is stopped by pid.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/ip/tcp.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"

namespace edgesweep::apps_test {
namespace {

using Clock = std::chrono::steady_clock;

/// A two-layer custom model: one conv, one linear.
const std::string two_layer_model = conv_linear_model(4);

/// Fine-tuning at two learning rates: with the baseline, three artifacts.
const char* const two_trials = R"toml([[pipeline]]
stage = "finetune"
epochs = 1
lr = [0.001, 0.01]
)toml";

/// A loopback port nothing listens on (bound once, then released).
int free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

/// The children of process `pid`, started by any of its threads (from /proc/<pid>/task/<tid>/children).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator(fmt::format("/proc/{}/task", pid), ec)) {
    std::ifstream in(task.path() / "children");
    pid_t child = 0;
    while (in >> child) children.push_back(child);
  }
  return children;
}

/// Whether a process with this pid exists (and is not a zombie).
bool process_alive(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string line;
  if (!std::getline(in, line)) return false;
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z';
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Waits up to 60 s for an agent started by the test to say it listens in its log.
bool wait_listening(const fs::path& log) {
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    if (read_text(log).find("listening on") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

/// [measure] settings that keep a benchmark short (tiny runs, 200 test images on the device).
std::string quick_measure(const std::string& extra, double min_seconds = 0.05) {
  return fmt::format(
      "[measure]\nbatch_sizes = [1, 4]\nwarmup_runs = 1\nwarmup_seconds = 0\nmin_runs = 3\nmin_seconds = {}\n"
      "accuracy_images = 200\nretry_seconds = 0.2\nheartbeat_seconds = 0.5\n{}\n",
      min_seconds, extra);
}

/// Measurement jobs and measurements of the experiment, read through the store API.
struct FarmSnapshot {
  std::vector<MeasurementJobRow> jobs;
  std::vector<MeasurementRow> measurements;
  std::vector<DeviceRow> devices;
  std::vector<TrialRow> trials;
};

FarmSnapshot snapshot(const fs::path& db, const std::string& name) {
  const Store store = Store::open(db, Store::Mode::ReadOnly);
  FarmSnapshot s;
  const auto experiment = store.find_experiment(name);
  if (!experiment) return s;
  s.jobs = store.measurement_jobs(experiment->id);
  s.measurements = store.measurements(experiment->id);
  s.devices = store.devices();
  s.trials = store.trials(experiment->id);
  return s;
}

void expect_sane(const MeasurementRow& m) {
  EXPECT_GT(m.latency_min_ms, 0);
  EXPECT_LE(m.latency_min_ms, m.latency_p50_ms);
  EXPECT_LE(m.latency_p50_ms, m.latency_p90_ms);
  EXPECT_LE(m.latency_p90_ms, m.latency_p99_ms);
  EXPECT_NEAR(m.fps, 1000.0 * static_cast<double>(m.batch) / m.latency_mean_ms, 1e-6 * m.fps);
  EXPECT_GT(m.peak_rss_mb, 10);
  EXPECT_GE(m.accuracy, 0);
  EXPECT_LE(m.accuracy, 100);
  EXPECT_EQ(m.raw.at("accuracy").at("images"), 200);
  EXPECT_TRUE(m.raw.at("batch").contains("latencies_ms"));
}

/// Each job's measurements: one row per batch size, recorded once.
void expect_one_measurement_per_job(const FarmSnapshot& s, size_t batch_sizes) {
  std::map<std::pair<int64_t, int64_t>, std::multiset<int64_t>> batches;  // (artifact, device) -> batch sizes
  for (const MeasurementRow& m : s.measurements) batches[{m.artifact_id, m.device_id}].insert(m.batch);
  for (const MeasurementJobRow& job : s.jobs) {
    const auto& seen = batches[{job.artifact_id, job.device_id}];
    EXPECT_EQ(seen.size(), batch_sizes) << "job " << job.id;
    EXPECT_EQ(std::set<int64_t>(seen.begin(), seen.end()).size(), seen.size()) << "job " << job.id;
  }
  EXPECT_EQ(s.measurements.size(), s.jobs.size() * batch_sizes);
}

using FarmRunTest = AppTest;

TEST_F(FarmRunTest, SpawnedAgentMeasuresEveryArtifactOnce) {
  const std::string address = fmt::format("127.0.0.1:{}", free_port());
  const std::string devices = fmt::format(
      "[[devices]]\nname = \"loop\"\naddress = \"{}\"\nspawn = true\nprofile = \"one-thread\"\nthreads = 1\n"
      "memory_mb = 2048\n",
      address);
  const fs::path spec = write_file(
      "farm.toml", tiny_experiment("farm", results_dir_, two_layer_model, two_trials) + quick_measure("") + devices);
  const ProcessResult run = edgesweep({"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  EXPECT_EQ(run.exit_code, 0) << describe(run);
  EXPECT_TRUE(contains(run.out, "loop")) << "a Pareto table for the device\n" << describe(run);

  const FarmSnapshot s = snapshot(results_dir_ / "edgesweep.db", "farm");
  ASSERT_EQ(s.trials.size(), 3u);
  ASSERT_EQ(s.jobs.size(), 3u) << "one job per artifact (baseline included) on the one device";
  for (const MeasurementJobRow& job : s.jobs) {
    EXPECT_EQ(job.status, JobStatus::Done) << job.error;
    EXPECT_EQ(job.attempts, 1);
  }
  expect_one_measurement_per_job(s, 2);
  for (const MeasurementRow& m : s.measurements) expect_sane(m);
  ASSERT_EQ(s.devices.size(), 1u);
  EXPECT_EQ(s.devices[0].name, "loop");
  EXPECT_EQ(s.devices[0].address, address);
  EXPECT_FALSE(s.devices[0].last_seen.empty());
  EXPECT_EQ(s.devices[0].hardware.at("profile").at("name"), "one-thread");
  EXPECT_GT(s.devices[0].hardware.size(), 1u) << s.devices[0].hardware.dump();

  // The spawned agent was stopped when the run ended.
  const std::string log = run.err + run.out;
  const size_t at = log.find("started a loopback agent (pid ");
  ASSERT_NE(at, std::string::npos) << describe(run);
  const pid_t agent = std::stoi(log.substr(at + std::string("started a loopback agent (pid ").size()));
  EXPECT_FALSE(process_alive(agent)) << "agent pid " << agent;
  if (process_alive(agent)) ::kill(agent, SIGKILL);
}

TEST_F(FarmRunTest, AgentKilledMidBenchmarkIsMeasuredAgainOnceAfterResume) {
  const std::string address = fmt::format("127.0.0.1:{}", free_port());
  const fs::path data = folder_ / "agent-data";
  const std::vector<std::string> agent_argv = {EDGESWEEP_BINARY, "agent", "--listen", address, "--data", data.string(),
                                               "--threads", "1"};
  // Slow benchmarks (2 s per batch size) leave time to kill the agent while one runs; one attempt per run.
  const std::string devices = fmt::format("[[devices]]\nname = \"victim\"\naddress = \"{}\"\n", address);
  const fs::path spec = write_file(
      "killed.toml", tiny_experiment("killed", results_dir_, two_layer_model, two_trials) +
                         quick_measure("max_attempts = 1\noffline_after = 1", 2.0) + devices);
  const fs::path db = results_dir_ / "edgesweep.db";

  int64_t killed_job = 0;
  {
    Child agent(agent_argv, folder_ / "agent-1.log");
    ASSERT_TRUE(wait_listening(folder_ / "agent-1.log")) << read_text(folder_ / "agent-1.log");
    Child run({EDGESWEEP_BINARY, "run", spec.string()}, folder_ / "run-1.log");
    // Wait until a job is running and the agent has a benchmark child, then kill both by pid.
    const auto deadline = Clock::now() + std::chrono::seconds(240);
    std::vector<pid_t> benchmark;
    while (Clock::now() < deadline && !run.ended()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (!fs::exists(db)) continue;
      FarmSnapshot s;
      try {
        s = snapshot(db, "killed");
      } catch (const std::exception&) {
        continue;  // the schema is still being created
      }
      for (const MeasurementJobRow& job : s.jobs) {
        if (job.status == JobStatus::Running) killed_job = job.id;
      }
      benchmark = children_of(agent.pid());
      if (killed_job != 0 && !benchmark.empty()) break;
    }
    ASSERT_NE(killed_job, 0) << read_text(folder_ / "run-1.log");
    ASSERT_FALSE(benchmark.empty()) << read_text(folder_ / "agent-1.log");
    agent.stop(SIGKILL);
    for (pid_t child : benchmark) ::kill(child, SIGKILL);  // the benchmark runs in its own process group
    ASSERT_TRUE(run.wait(std::chrono::seconds(240))) << read_text(folder_ / "run-1.log");
    EXPECT_EQ(run.exit_code(), 1) << "a measurement failed\n" << read_text(folder_ / "run-1.log");
  }
  FarmSnapshot after_kill = snapshot(db, "killed");
  for (const TrialRow& trial : after_kill.trials) EXPECT_EQ(trial.status, TrialStatus::Done) << trial.error;
  const auto killed = std::find_if(after_kill.jobs.begin(), after_kill.jobs.end(),
                                   [&](const MeasurementJobRow& j) { return j.id == killed_job; });
  ASSERT_NE(killed, after_kill.jobs.end());
  EXPECT_EQ(killed->status, JobStatus::Failed);
  EXPECT_TRUE(contains(killed->error, "device 'victim'")) << killed->error;
  for (const MeasurementRow& m : after_kill.measurements) EXPECT_NE(m.artifact_id, killed->artifact_id);

  // The agent is back: `run --resume` measures what failed, once.
  {
    Child agent(agent_argv, folder_ / "agent-2.log");
    ASSERT_TRUE(wait_listening(folder_ / "agent-2.log")) << read_text(folder_ / "agent-2.log");
    const ProcessResult resumed = edgesweep({"run", "--resume", spec.string()});
    ASSERT_FALSE(resumed.timed_out) << describe(resumed);
    EXPECT_EQ(resumed.exit_code, 0) << describe(resumed);
    agent.stop(SIGTERM);
  }
  const FarmSnapshot s = snapshot(db, "killed");
  ASSERT_EQ(s.jobs.size(), 3u);
  for (const MeasurementJobRow& job : s.jobs) EXPECT_EQ(job.status, JobStatus::Done) << job.error;
  expect_one_measurement_per_job(s, 2);
  for (const MeasurementRow& m : s.measurements) expect_sane(m);
}

TEST_F(FarmRunTest, ResultWithMoreRunsThanAControlFrameHoldsIsRecordedWhole) {
  // At least 100,000 timed runs of a small model: the result carries each of them, well over the agent's 1 MiB
  // control frame however fast the machine is (the run count is a minimum, not a time).
  const std::string address = fmt::format("127.0.0.1:{}", free_port());
  const std::string devices =
      fmt::format("[[devices]]\nname = \"fast\"\naddress = \"{}\"\nspawn = true\nthreads = 1\n", address);
  const std::string measure =
      "[measure]\nbatch_sizes = [1]\nwarmup_runs = 1\nwarmup_seconds = 0\nmin_runs = 100000\nmin_seconds = 0\n"
      "accuracy_images = 200\nretry_seconds = 0.2\nheartbeat_seconds = 0.5\n";
  const std::string one_trial = "[[pipeline]]\nstage = \"finetune\"\nepochs = 1\nlr = 0.001\n";
  const fs::path spec =
      write_file("fast.toml", tiny_experiment("fast", results_dir_, two_layer_model, one_trial) + measure + devices);
  const ProcessResult run = edgesweep({"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  EXPECT_EQ(run.exit_code, 0) << describe(run);

  const FarmSnapshot s = snapshot(results_dir_ / "edgesweep.db", "fast");
  ASSERT_EQ(s.jobs.size(), 2u);
  for (const MeasurementJobRow& job : s.jobs) EXPECT_EQ(job.status, JobStatus::Done) << job.error;
  expect_one_measurement_per_job(s, 1);
  for (const MeasurementRow& m : s.measurements) {
    expect_sane(m);
    const Json& batch = m.raw.at("batch");
    EXPECT_GT(batch.dump().size(), size_t{1} << 20) << "the premise: one measurement is longer than a frame";
    EXPECT_EQ(batch.at("latencies_ms").size(), batch.at("runs").get<size_t>());
    EXPECT_GE(batch.at("runs").get<int64_t>(), 100000);
  }
}

TEST_F(FarmRunTest, TheEndOfRunParetoTableUsesABatchSizeTheDevicesMeasured) {
  // Batch 1 is not measured: the table is made at batch 2, not declared empty.
  const std::string address = fmt::format("127.0.0.1:{}", free_port());
  const std::string devices =
      fmt::format("[[devices]]\nname = \"pairs\"\naddress = \"{}\"\nspawn = true\nthreads = 1\n", address);
  const std::string measure =
      "[measure]\nbatch_sizes = [2]\nwarmup_runs = 1\nwarmup_seconds = 0\nmin_runs = 3\nmin_seconds = 0\n"
      "accuracy_images = 200\nretry_seconds = 0.2\nheartbeat_seconds = 0.5\n";
  const std::string one_trial = "[[pipeline]]\nstage = \"finetune\"\nepochs = 1\nlr = 0.001\n";
  const fs::path spec =
      write_file("pairs.toml", tiny_experiment("pairs", results_dir_, two_layer_model, one_trial) + measure + devices);
  const ProcessResult run = edgesweep({"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  EXPECT_EQ(run.exit_code, 0) << describe(run);
  EXPECT_FALSE(contains(run.out, "no device measurement")) << describe(run);
  EXPECT_TRUE(contains(run.out, "pairs")) << describe(run);
  expect_one_measurement_per_job(snapshot(results_dir_ / "edgesweep.db", "pairs"), 1);
}

TEST_F(FarmRunTest, UnreachableDeviceFailsItsJobsAndTheTrialsStillFinish) {
  const std::string address = fmt::format("127.0.0.1:{}", free_port());
  const std::string devices = fmt::format("[[devices]]\nname = \"nowhere\"\naddress = \"{}\"\n", address);
  const fs::path spec = write_file(
      "unreachable.toml", tiny_experiment("unreachable", results_dir_, two_layer_model, two_trials) +
                              quick_measure("max_attempts = 2") + devices);
  const ProcessResult run = edgesweep({"run", spec.string()});
  ASSERT_FALSE(run.timed_out) << describe(run);
  EXPECT_EQ(run.exit_code, 1) << "measurements failed: exit 1\n" << describe(run);
  EXPECT_TRUE(contains(run.err, "measurements: 3 of 3 failed")) << describe(run);

  const FarmSnapshot s = snapshot(results_dir_ / "edgesweep.db", "unreachable");
  ASSERT_EQ(s.trials.size(), 3u);
  const Store store = Store::open(results_dir_ / "edgesweep.db", Store::Mode::ReadOnly);
  for (const TrialRow& trial : s.trials) {
    EXPECT_EQ(trial.status, TrialStatus::Done) << trial.error;
    for (const ArtifactRow& a : store.artifacts(trial.id)) EXPECT_TRUE(fs::exists(results_dir_ / a.path)) << a.path;
  }
  ASSERT_EQ(s.jobs.size(), 3u);
  for (const MeasurementJobRow& job : s.jobs) {
    EXPECT_EQ(job.status, JobStatus::Failed);
    EXPECT_EQ(job.attempts, 2);
    EXPECT_TRUE(contains(job.error, fmt::format("device 'nowhere' ({})", address))) << job.error;
    EXPECT_TRUE(contains(job.error, "cannot connect")) << job.error;
  }
  EXPECT_TRUE(s.measurements.empty());
  ASSERT_EQ(s.devices.size(), 1u);
  EXPECT_EQ(s.devices[0].status, "offline");
}

}  // namespace
}  // namespace edgesweep::apps_test
