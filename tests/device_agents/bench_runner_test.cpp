// Tests of the isolated benchmark runner with the real edgesweep binary as the child: a real model measured with
// sane figures and its memory share; a file that is not a model, a crash (SIGSEGV, SIGABRT), a hang and a memory
// cap too small (for the runtime, for a batch) each end as a clear error while the runner stays usable; tegrastats
// (a recorded stand-in) sampled during each timed window. Faults are injected through the child's
// test-only request key "crash", honoured because this process sets EDGESWEEP_TEST_FAULTS=1.
#include "edgesweep/device_agents/bench_runner.h"

#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "../workers/temp_folder.h"
#include "edgesweep/device_agents/probes.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

const fs::path kBinary = EDGESWEEP_BINARY;
const fs::path kModelMaker = EDGESWEEP_BENCH_MODEL_MAKER;

/// Quick measurement settings: a benchmark of a few tenths of a second.
Json quick_request() {
  return Json{{"batch_sizes", {1, 8}}, {"warmup_runs", 2}, {"warmup_seconds", 0.02}, {"min_runs", 5},
              {"min_seconds", 0.1}};
}

AgentProfile one_thread() {
  AgentProfile profile;
  profile.name = "one-thread";
  profile.threads = 1;
  profile.cpus = {0};
  return profile;
}

::testing::AssertionResult has(const std::string& text, const std::string& fragment) {
  if (text.find(fragment) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' lacks '" << fragment << "'";
}

class BenchRunner : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    setenv("EDGESWEEP_TEST_FAULTS", "1", 1);
    folder_ = std::make_unique<TempFolder>("bench-runner");
    const std::string command = "'" + kModelMaker.string() + "' '" + (*folder_ / "model.pt").string() + "'";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() { folder_.reset(); }

  static fs::path model() { return *folder_ / "model.pt"; }

  /// A job on the test model; `fields` are added to the quick request.
  static BenchJob job(const Json& fields = Json::object(), double timeout_seconds = 120) {
    BenchJob job;
    job.model = model();
    job.request = quick_request();
    for (const auto& [key, value] : fields.items()) job.request[key] = value;
    job.timeout_seconds = timeout_seconds;
    return job;
  }

  static std::unique_ptr<TempFolder> folder_;
};

std::unique_ptr<TempFolder> BenchRunner::folder_;

TEST_F(BenchRunner, MeasuresARealModelUnderItsProfile) {
  const BenchOutcome outcome = run_benchmark_child(kBinary, job(), one_thread());
  ASSERT_TRUE(outcome.ok) << outcome.error;
  const Json& r = outcome.result;
  ASSERT_EQ(r.at("batches").size(), 2u);
  for (const Json& b : r.at("batches")) {
    SCOPED_TRACE(b.dump());
    EXPECT_GE(b.at("runs").get<int64_t>(), 5);
    EXPECT_EQ(b.at("latencies_ms").size(), b.at("runs").get<size_t>());
    EXPECT_LE(b.at("min_ms").get<double>(), b.at("p50_ms").get<double>());
    EXPECT_LE(b.at("p50_ms").get<double>(), b.at("p90_ms").get<double>());
    EXPECT_LE(b.at("p90_ms").get<double>(), b.at("p99_ms").get<double>());
    EXPECT_LE(b.at("min_ms").get<double>(), b.at("mean_ms").get<double>());
    const double fps = 1000.0 * b.at("batch_size").get<double>() / b.at("mean_ms").get<double>();
    EXPECT_NEAR(b.at("fps").get<double>(), fps, 1e-9 * fps);
  }
  EXPECT_EQ(r.at("runtime").at("threads"), 1);
  EXPECT_EQ(r.at("profile").at("name"), "one-thread");
  EXPECT_EQ(r.at("profile").at("cpus"), Json({0}));
  EXPECT_GT(r.at("hardware").at("cores").get<int64_t>(), 0);
  const Json& memory = r.at("memory");
  EXPECT_GT(memory.at("empty_peak_rss_mb").get<double>(), 10.0);  // LibTorch alone is tens of MB
  EXPECT_GE(memory.at("peak_rss_mb").get<double>(), memory.at("empty_peak_rss_mb").get<double>() * 0.9);
  EXPECT_NEAR(memory.at("model_rss_mb").get<double>(),
              std::max(0.0, memory.at("peak_rss_mb").get<double>() - memory.at("empty_peak_rss_mb").get<double>()),
              1e-9);
  EXPECT_GT(r.at("wall_seconds").get<double>(), 0.2);  // two batch sizes of at least 0.1 s each
}

TEST_F(BenchRunner, AFileThatIsNotAModelIsACleanError) {
  {
    std::ofstream out(*folder_ / "notes.pt");
    out << "these are notes, not a model\n";
  }
  BenchJob bad = job();
  bad.model = *folder_ / "notes.pt";
  const BenchOutcome outcome = run_benchmark_child(kBinary, bad, one_thread());
  EXPECT_FALSE(outcome.ok);
  EXPECT_TRUE(has(outcome.error, "notes.pt"));
  EXPECT_TRUE(has(outcome.error, "not a TorchScript archive"));
}

TEST_F(BenchRunner, ACrashNamesTheSignalAndTheRunnerStaysUsable) {
  const BenchOutcome segv = run_benchmark_child(kBinary, job({{"crash", "segv"}}), one_thread());
  EXPECT_FALSE(segv.ok);
  EXPECT_TRUE(has(segv.error, "killed by signal SIGSEGV"));
  const BenchOutcome abort = run_benchmark_child(kBinary, job({{"crash", "abort"}}), one_thread());
  EXPECT_FALSE(abort.ok);
  EXPECT_TRUE(has(abort.error, "killed by signal SIGABRT"));
  const BenchOutcome after = run_benchmark_child(kBinary, job(), one_thread());
  EXPECT_TRUE(after.ok) << after.error;
}

TEST_F(BenchRunner, AHangIsKilledAtTheTimeout) {
  ASSERT_TRUE(run_benchmark_child(kBinary, job(), one_thread()).ok);  // the empty child's figure is now cached
  const auto start = Clock::now();
  const BenchOutcome outcome = run_benchmark_child(kBinary, job({{"crash", "hang"}}, 1.5), one_thread());
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_FALSE(outcome.ok);
  EXPECT_TRUE(has(outcome.error, "timeout after 1.5 s"));
  EXPECT_GE(seconds, 1.5);
  EXPECT_LT(seconds, 1.5 + 2.0);  // the kill and the reaping take milliseconds; 2 s of slack for a loaded machine
  EXPECT_TRUE(run_benchmark_child(kBinary, job(), one_thread()).ok);
}

TEST_F(BenchRunner, AMemoryCapTooSmallForTheRuntimeIsAClearError) {
  AgentProfile tiny = one_thread();
  tiny.name = "tiny";
  tiny.memory_mb = 16;
  const BenchOutcome outcome = run_benchmark_child(kBinary, job(), tiny);
  EXPECT_FALSE(outcome.ok);
  EXPECT_TRUE(has(outcome.error, "memory cap of 16 MB"));
  EXPECT_TRUE(has(outcome.error, "profile 'tiny'"));
}

TEST_F(BenchRunner, AMemoryCapTooSmallForTheModelIsAClearError) {
  // The runtime alone, then a cap 100 MB above it: batch 1 fits (a few MB), batch 4096 does not (its first
  // activation alone is 4096 x 8 x 28 x 28 x 4 bytes, about 100 MB, and the convolution needs more beside it).
  const BenchOutcome empty = run_empty_child(kBinary, one_thread());
  ASSERT_TRUE(empty.ok) << empty.error;
  AgentProfile capped = one_thread();
  capped.name = "capped";
  capped.memory_mb = static_cast<int64_t>(empty.result.at("memory").at("peak_rss_mb").get<double>()) + 100;
  const auto start = Clock::now();
  const BenchOutcome outcome = run_benchmark_child(kBinary, job({{"batch_sizes", {4096}}}), capped);
  EXPECT_FALSE(outcome.ok);
  EXPECT_TRUE(has(outcome.error, "out of memory"));
  EXPECT_TRUE(has(outcome.error, fmt::format("over the memory cap of {} MB", capped.memory_mb)));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 30.0);  // killed, not run to the end
  // The same profile measures a batch that fits.
  const BenchOutcome fits = run_benchmark_child(kBinary, job({{"batch_sizes", {1}}}), capped);
  EXPECT_TRUE(fits.ok) << fits.error;
}

TEST_F(BenchRunner, TheTestFaultKeyIsRefusedWithoutTheEnvironmentSwitch) {
  unsetenv("EDGESWEEP_TEST_FAULTS");
  const BenchOutcome outcome = run_benchmark_child(kBinary, job({{"crash", "segv"}}), one_thread());
  setenv("EDGESWEEP_TEST_FAULTS", "1", 1);
  EXPECT_FALSE(outcome.ok);
  EXPECT_TRUE(has(outcome.error, "test-only"));
}

TEST_F(BenchRunner, AMissingExecutableIsAnError) {
  const BenchOutcome outcome = run_benchmark_child(*folder_ / "no-such-binary", job(), one_thread());
  EXPECT_FALSE(outcome.ok);
  EXPECT_TRUE(has(outcome.error, "no-such-binary"));
}

/// A stand-in for tegrastats printing a recorded AGX Orin line (composed after NVIDIA's documented format) every
/// 50 ms, as the real program does at its --interval.
fs::path write_fake_tegrastats(const fs::path& folder) {
  const fs::path script = folder / "tegrastats";
  std::ofstream out(script);
  out << "#!/bin/sh\n"
         "while true; do\n"
         "  echo 'RAM 6421/30623MB (lfb 5713x4MB) SWAP 0/15311MB (cached 0MB) CPU [45%@2201,38%@2201,off,off] "
         "EMC_FREQ 14%@3199 GR3D_FREQ 71%@[1300,1300] CPU@52.4C VDD_GPU_SOC 9412mW/8810mW VDD_CPU_CV 3521mW/3305mW "
         "VIN_SYS_5V0 5623mW/5502mW'\n"
         "  sleep 0.05\n"
         "done\n";
  out.close();
  fs::permissions(script, fs::perms::owner_all);
  return script;
}

TEST_F(BenchRunner, TegrastatsIsSampledDuringEachTimedWindow) {
  const fs::path script = write_fake_tegrastats(folder_->path());
  {
    TegrastatsSampler sampler(script, 50);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const std::vector<TegrastatsSample> samples = sampler.stop();
    ASSERT_GE(samples.size(), 2u);
    EXPECT_LT(samples.front().time_seconds, samples.back().time_seconds);
    EXPECT_DOUBLE_EQ(total_power(samples.front()).mw, 5623);
  }
  setenv("EDGESWEEP_TEGRASTATS", script.c_str(), 1);
  const BenchOutcome outcome = run_benchmark_child(kBinary, job({{"min_seconds", 0.3}}), one_thread());
  unsetenv("EDGESWEEP_TEGRASTATS");
  ASSERT_TRUE(outcome.ok) << outcome.error;
  EXPECT_GE(outcome.result.at("tegrastats").at("samples").get<int64_t>(), 2);
  for (const Json& b : outcome.result.at("batches")) {
    SCOPED_TRACE(b.dump());
    const Json& t = b.at("tegrastats");
    EXPECT_GE(t.at("samples").get<int64_t>(), 1);  // a 0.3 s window at a 50 ms period
    EXPECT_DOUBLE_EQ(t.at("mean_power_mw").get<double>(), 5623);
    EXPECT_EQ(t.at("power_source"), "VIN_SYS_5V0");
    EXPECT_DOUBLE_EQ(t.at("max_ram_used_mb").get<double>(), 6421);
  }
}

TEST(SignalNames, AreTheUsualOnes) {
  EXPECT_EQ(signal_name(SIGSEGV), "SIGSEGV");
  EXPECT_EQ(signal_name(SIGKILL), "SIGKILL");
  EXPECT_EQ(signal_name(SIGABRT), "SIGABRT");
}

}  // namespace
}  // namespace edgesweep
