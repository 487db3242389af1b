// The device farm against in-process agents on 127.0.0.1 with a stand-in benchmark: the measurement-job table of the
// store, every artifact measured once on every device, retries with back-off, a device where nothing listens
// (jobs failed naming it, device offline), and a farm stopped mid-job whose job runs again, once, after a restart.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include <boost/asio/ip/tcp.hpp>
#include <fmt/format.h>

#include "../workers/expect_error.h"
#include "../workers/temp_folder.h"
#include "../device_agents/test_certificate.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/device_agents/agent.h"
#include "edgesweep/device_agents/tls.h"
#include "edgesweep/orchestrator/farm.h"
#include "edgesweep/orchestrator/spec.h"
#include "edgesweep/orchestrator/store.h"

namespace edgesweep {
namespace {

/// Stand-in benchmark: a result shaped like the agent's child's, one batch object per requested batch size.
/// The first `failures` calls fail; each call takes `sleep_ms`.
struct FakeBench {
  std::atomic<int> calls{0};
  std::atomic<int> failures{0};
  std::atomic<int> sleep_ms{0};
  std::atomic<bool> started{false};

  BenchOutcome operator()(const BenchJob& job) {
    started = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms.load()));
    const int call = ++calls;
    BenchOutcome outcome;
    if (call <= failures.load()) {
      outcome.error = fmt::format("stand-in failure {}", call);
      return outcome;
    }
    Json batches = Json::array();
    for (const Json& b : job.request.at("batch_sizes")) {
      const double batch = b.get<double>();
      batches.push_back({{"batch_size", b}, {"runs", 3}, {"min_ms", 1.0 * batch}, {"mean_ms", 1.5 * batch},
                         {"p50_ms", 1.4 * batch}, {"p90_ms", 2.0 * batch}, {"p99_ms", 2.5 * batch},
                         {"std_ms", 0.2}, {"fps", 1000.0 / 1.5}, {"latencies_ms", {1.0 * batch, 1.4 * batch, 2.5 * batch}}});
    }
    outcome.ok = true;
    outcome.result = {{"batches", batches},
                      {"load_seconds", 0.01},
                      {"memory", {{"peak_rss_mb", 120.0}, {"empty_peak_rss_mb", 100.0}, {"model_rss_mb", 20.0}}},
                      {"accuracy", {{"top1", 84.5}, {"dataset_id", "fashion-mnist@0123456789ab"}}},
                      {"model", {{"bytes", std::filesystem::file_size(job.model)}}}};
    return outcome;
  }
};

/// An agent in this process on 127.0.0.1 (a free port), without a token unless given one (and a certificate).
struct LocalAgent {
  LocalAgent(const std::filesystem::path& data, const std::string& cpu, const std::filesystem::path& token_file = {},
             const Certificate* certificate = nullptr) {
    AgentOptions options;
    options.listen = "127.0.0.1:0";
    options.token_file = token_file;
    if (certificate != nullptr) {
      options.tls_cert_file = certificate->cert;
      options.tls_key_file = certificate->key;
    }
    options.data_dir = data;
    options.profile.name = "stand-in";
    options.profile.threads = 1;
    options.hardware = Json{{"cpu", cpu}, {"cores", 2}};
    options.handle_signals = false;
    options.benchmark = [this](const BenchJob& job) { return bench(job); };
    agent = std::make_unique<Agent>(options);
    address = agent->address();
    thread = std::thread([this] { agent->run(); });
  }
  ~LocalAgent() {
    agent->stop();
    thread.join();
  }
  FakeBench bench;
  std::unique_ptr<Agent> agent;
  std::string address;
  std::thread thread;
};

/// A loopback port nothing listens on (bound once, then released).
int free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

class FarmTest : public ::testing::Test {
 protected:
  /// A spec whose [[devices]] are `addresses` (named d0, d1, ...; each with its line of `device_extra`, if any), with
  /// quick retries and heartbeats.
  ExperimentSpec make_spec(const std::vector<std::string>& addresses, const std::string& measure_extra = "",
                           const std::vector<std::string>& device_extra = {}) {
    std::string text = fmt::format(R"toml(
[experiment]
name = "farm"
[run]
results_dir = "{}"
[measure]
batch_sizes = [1, 4]
retry_seconds = 0.1
heartbeat_seconds = 0.2
offline_after = 2
benchmark_timeout_seconds = 30
{}
)toml",
                                   (folder_ / "results").string(), measure_extra);
    for (size_t i = 0; i < addresses.size(); ++i) {
      text += fmt::format("[[devices]]\nname = \"d{}\"\naddress = \"{}\"\n{}\n", i, addresses[i],
                          i < device_extra.size() ? device_extra[i] : "");
    }
    return parse_spec_string(text, "farm.toml");
  }

  /// Records the experiment with `count` done trials, each with one artifact file; returns the artifact rows.
  std::vector<ArtifactRow> record_trials(Store& store, const ExperimentSpec& spec, int count) {
    experiment_id_ = store.create_experiment(spec.name, spec.text, spec.hash);
    std::vector<ArtifactRow> rows;
    std::filesystem::create_directories(spec.run.results_dir / "artifacts");
    for (int i = 0; i < count; ++i) {
      const int64_t trial = store.add_trial(experiment_id_, "trial", Json{{"i", i}}, fmt::format("hash{}", i));
      store.mark_running(trial, 0);
      const std::string relative = fmt::format("artifacts/model{}.pt", i);
      std::ofstream(spec.run.results_dir / relative) << "model bytes " << i;
      ArtifactRow row{0, trial, "model", relative, sha256_file(spec.run.results_dir / relative), 13, 10, 100,
                      "torchscript", Json::object()};
      row.id = store.add_artifact(row);
      store.mark_done(trial);
      rows.push_back(row);
    }
    return rows;
  }

  TempFolder folder_{"farm"};
  int64_t experiment_id_ = 0;
};

TEST(MeasurementJobsStore, LifecycleKeepsOneMeasurementPerJob) {
  TempFolder folder("jobs");
  Store store = Store::open(folder / "db.sqlite", Store::Mode::ReadWrite);
  EXPECT_EQ(store.schema_version(), store_schema_version());  // a new store is at the latest version
  const int64_t experiment = store.create_experiment("e", "text", "hash");
  const int64_t trial = store.add_trial(experiment, "trial", Json::object(), "h");
  const int64_t artifact = store.add_artifact({0, trial, "model", "a.pt", "ab", 1, 1, 1, "torchscript", {}});
  const int64_t device = store.register_device("board", "127.0.0.1:7070");
  EXPECT_EQ(store.register_device("board", "127.0.0.1:7071"), device);
  EXPECT_EQ(store.devices().at(0).status, "unknown");

  const Json request{{"batch_sizes", {1}}};
  const int64_t job = store.add_measurement_job(artifact, device, request, "r1");
  EXPECT_EQ(store.add_measurement_job(artifact, device, request, "r1"), job);  // queued once
  EXPECT_NE(store.add_measurement_job(artifact, device, request, "r2"), job);  // another request is another job
  ASSERT_EQ(store.measurement_jobs(experiment).size(), 2u);

  store.mark_job_running(job);
  expect_error<Error>([&] { store.mark_job_running(job); }, {"job is running, not pending"});
  store.mark_job_retry(job, "connection reset", 123.5);
  auto row = store.measurement_job(job);
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(row->status, JobStatus::Pending);
  EXPECT_EQ(row->attempts, 1);
  EXPECT_DOUBLE_EQ(row->next_attempt_at, 123.5);
  EXPECT_EQ(row->error, "connection reset");
  EXPECT_EQ(row->device, "board");

  store.mark_job_running(job);
  MeasurementRow m;
  m.artifact_id = artifact;
  m.device_id = device;
  m.batch = 1;
  m.latency_p50_ms = 2;
  store.complete_measurement_job(job, {m});
  expect_error<Error>([&] { store.complete_measurement_job(job, {m}); }, {"job is done, not running"});
  EXPECT_EQ(store.measurements(experiment).size(), 1u);  // the refused second completion recorded nothing
  EXPECT_EQ(store.measurement_job(job)->status, JobStatus::Done);
  EXPECT_EQ(store.measurement_job(job)->attempts, 2);

  // A job left running by a crash goes back to pending; a failed one gets a new chance with its attempts reset.
  const int64_t other = store.add_measurement_job(artifact, device, request, "r2");
  store.mark_job_running(other);
  EXPECT_EQ(store.requeue_running_jobs(experiment), 1);
  store.mark_job_failed(other, "device 'board' gone");
  EXPECT_EQ(store.measurement_job(other)->status, JobStatus::Failed);
  EXPECT_EQ(store.retry_failed_jobs(experiment), 1);
  EXPECT_EQ(store.measurement_job(other)->status, JobStatus::Pending);
  EXPECT_EQ(store.measurement_job(other)->attempts, 0);

  store.mark_device_online(device, Json{{"cpu", "x"}});
  store.mark_device_online(device, Json());  // a heartbeat keeps the hardware
  EXPECT_EQ(store.devices().at(0).status, "online");
  EXPECT_EQ(store.devices().at(0).hardware.at("cpu"), "x");
  EXPECT_FALSE(store.devices().at(0).last_seen.empty());
  store.mark_device_offline(device);
  EXPECT_EQ(store.devices().at(0).status, "offline");
  EXPECT_EQ(store.register_device("board", "127.0.0.1:7072"), device);
  EXPECT_EQ(store.devices().at(0).hardware.at("cpu"), "x");  // registering again keeps what was seen
}

TEST(MeasurementRows, OneRowPerBatchWithTheResultKept) {
  FakeBench bench;
  TempFolder folder("rows");
  std::ofstream(folder / "m.pt") << "x";
  BenchJob job;
  job.model = folder / "m.pt";
  job.request = {{"batch_sizes", {1, 32}}};
  const Json result = bench(job).result;
  const auto rows = measurement_rows(result, 7, 9);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].batch, 32);
  EXPECT_EQ(rows[1].artifact_id, 7);
  EXPECT_EQ(rows[1].device_id, 9);
  EXPECT_DOUBLE_EQ(rows[1].latency_p50_ms, 1.4 * 32);
  EXPECT_DOUBLE_EQ(rows[1].latency_p99_ms, 2.5 * 32);
  EXPECT_DOUBLE_EQ(rows[0].fps, 1000.0 / 1.5);
  EXPECT_DOUBLE_EQ(rows[0].peak_rss_mb, 120.0);
  EXPECT_DOUBLE_EQ(rows[0].accuracy, 84.5);
  EXPECT_EQ(rows[1].raw.at("batch").at("latencies_ms").size(), 3u);
  EXPECT_DOUBLE_EQ(rows[1].raw.at("load_seconds").get<double>(), 0.01);
  EXPECT_FALSE(rows[1].raw.contains("batches"));
  expect_error<Error>([] { measurement_rows(Json{{"load_seconds", 1}}, 1, 1); }, {"no 'batches'"});
}

TEST(MeasurementRequest, CarriesTheMeasureSettingsAndTheEvaluationSet) {
  const ExperimentSpec spec = parse_spec_string(R"toml(
[experiment]
name = "r"
[data]
test_subset = 100
[measure]
batch_sizes = [1, 8]
min_runs = 7
accuracy_images = 500
dataset_path = "/data/fmnist"
)toml",
                                                "r.toml");
  const Json request = measurement_request(spec);
  EXPECT_EQ(request.at("batch_sizes"), Json({1, 8}));
  EXPECT_EQ(request.at("min_runs"), 7);
  EXPECT_EQ(request.at("dataset").at("id"), "fashion-mnist");
  EXPECT_EQ(request.at("dataset").at("path"), "/data/fmnist");
  EXPECT_EQ(request.at("dataset").at("limit"), 500);
  EXPECT_FALSE(request.at("dataset").contains("classes"));  // every class: the request of earlier versions
  const Json subset = measurement_request(
      parse_spec_string("[experiment]\nname = \"s\"\n[data]\nclasses = [6, 5]\n", "s.toml"));
  EXPECT_EQ(subset.at("dataset").at("classes"), Json({6, 5}));  // the devices relabel their test set the same way
  expect_error<InputError>(
      [] { parse_spec_string("[experiment]\nname = \"x\"\n[measure]\nbatch_sizes = [1, 2.5]\n", "x.toml"); },
      {"x.toml:4:", "batch_sizes", "2.5"});
}

TEST_F(FarmTest, EveryArtifactIsMeasuredOnceOnEveryDevice) {
  LocalAgent a(folder_ / "agent-a", "cpu a");
  LocalAgent b(folder_ / "agent-b", "cpu b");
  const ExperimentSpec spec = make_spec({a.address, b.address});
  Store store = Store::open(folder_ / "db.sqlite", Store::Mode::ReadWrite);
  const auto artifacts = record_trials(store, spec, 2);
  {
    Farm farm(store, spec, experiment_id_);
    farm.start(false);  // queues the two recorded artifacts
    ASSERT_TRUE(farm.wait(60));
    const FarmCounts counts = farm.counts();
    EXPECT_EQ(counts.done, 4);
    EXPECT_EQ(counts.failed, 0);
    farm.stop();
  }
  EXPECT_EQ(a.bench.calls.load(), 2);
  EXPECT_EQ(b.bench.calls.load(), 2);
  const auto measurements = store.measurements(experiment_id_);
  ASSERT_EQ(measurements.size(), 8u);  // 2 artifacts x 2 devices x 2 batch sizes
  std::map<std::string, int> per_device;
  for (const MeasurementRow& m : measurements) {
    ++per_device[m.device];
    EXPECT_TRUE(m.batch == 1 || m.batch == 4);
    EXPECT_LE(m.latency_p50_ms, m.latency_p90_ms);
    EXPECT_LE(m.latency_p90_ms, m.latency_p99_ms);
    EXPECT_DOUBLE_EQ(m.accuracy, 84.5);
  }
  EXPECT_EQ(per_device["d0"], 4);
  EXPECT_EQ(per_device["d1"], 4);
  const auto devices = store.devices();
  ASSERT_EQ(devices.size(), 2u);
  EXPECT_EQ(devices[0].status, "online");
  EXPECT_EQ(devices[0].hardware.at("cpu"), "cpu a");
  EXPECT_EQ(devices[1].hardware.at("cpu"), "cpu b");
  EXPECT_EQ(devices[1].hardware.at("profile").at("name"), "stand-in");

  // A restart finds everything measured: nothing runs again.
  {
    Farm farm(store, spec, experiment_id_);
    farm.start(true);
    ASSERT_TRUE(farm.wait(10));
    EXPECT_EQ(farm.counts().done, 4);
  }
  EXPECT_EQ(a.bench.calls.load(), 2);
  EXPECT_EQ(store.measurements(experiment_id_).size(), 8u);
  // New artifacts get their jobs as soon as they are added.
  {
    Farm farm(store, spec, experiment_id_);
    farm.start(true);
    std::ofstream(spec.run.results_dir / "artifacts/extra.pt") << "extra";
    const int64_t trial = store.add_trial(experiment_id_, "trial", Json{{"extra", 1}}, "extra");
    ArtifactRow extra{0, trial, "model", "artifacts/extra.pt", sha256_file(spec.run.results_dir / "artifacts/extra.pt"),
                      5, 1, 1, "torchscript", Json::object()};
    extra.id = store.add_artifact(extra);
    farm.add_jobs({extra});
    ASSERT_TRUE(farm.wait(60));
    EXPECT_EQ(farm.counts().done, 6);
  }
  EXPECT_EQ(store.measurements(experiment_id_).size(), 12u);
  (void)artifacts;
}

TEST_F(FarmTest, DevicesSpeakTlsOnTheirTokenOrTheirPinnedCertificate) {
  std::ofstream(folder_ / "token") << "the farm's token\n";
  chmod((folder_ / "token").c_str(), 0600);
  const Certificate certificate = make_certificate(folder_, "board");
  const Certificate other = make_certificate(folder_, "other");
  LocalAgent by_token(folder_ / "agent-a", "cpu a", folder_ / "token");
  LocalAgent by_certificate(folder_ / "agent-b", "cpu b", folder_ / "token", &certificate);
  LocalAgent impostor(folder_ / "agent-c", "cpu c", folder_ / "token", &other);
  const std::string token_line = fmt::format("token_file = \"{}\"", (folder_ / "token").string());
  const ExperimentSpec spec =
      make_spec({by_token.address, by_certificate.address, impostor.address}, "max_attempts = 1",
                {token_line,
                 token_line + fmt::format("\ntls_fingerprint = \"{}\"", certificate_fingerprint(certificate.cert)),
                 token_line + fmt::format("\ntls_fingerprint = \"{}\"", certificate_fingerprint(certificate.cert))});
  EXPECT_EQ(spec.devices.at(1).tls_fingerprint, certificate_fingerprint(certificate.cert));
  Store store = Store::open(folder_ / "db.sqlite", Store::Mode::ReadWrite);
  record_trials(store, spec, 1);
  {
    Farm farm(store, spec, experiment_id_);
    farm.start(false);
    ASSERT_TRUE(farm.wait(60));
    farm.stop();
  }
  EXPECT_EQ(by_token.bench.calls.load(), 1);
  EXPECT_EQ(by_certificate.bench.calls.load(), 1);
  EXPECT_EQ(impostor.bench.calls.load(), 0);  // another certificate at the pinned device's address
  for (const MeasurementJobRow& job : store.measurement_jobs(experiment_id_)) {
    if (job.device == "d2") {
      EXPECT_EQ(job.status, JobStatus::Failed);
      EXPECT_NE(job.error.find("presented the certificate " + certificate_fingerprint(other.cert)), std::string::npos)
          << job.error;
    } else {
      EXPECT_EQ(job.status, JobStatus::Done) << job.device << ": " << job.error;
    }
  }
}

TEST_F(FarmTest, FailedBenchmarksAreRetriedWithBackoff) {
  LocalAgent a(folder_ / "agent", "cpu");
  a.bench.failures = 2;
  const ExperimentSpec spec = make_spec({a.address}, "max_attempts = 3");
  Store store = Store::open(folder_ / "db.sqlite", Store::Mode::ReadWrite);
  record_trials(store, spec, 1);
  Farm farm(store, spec, experiment_id_);
  farm.start(false);
  ASSERT_TRUE(farm.wait(60));
  farm.stop();
  const auto jobs = store.measurement_jobs(experiment_id_);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].status, JobStatus::Done);
  EXPECT_EQ(jobs[0].attempts, 3);
  EXPECT_EQ(a.bench.calls.load(), 3);
  EXPECT_EQ(store.measurements(experiment_id_).size(), 2u);
}

TEST_F(FarmTest, ADeviceWhereNothingListensFailsItsJobsNamingIt) {
  const std::string address = fmt::format("127.0.0.1:{}", free_port());
  const ExperimentSpec spec = make_spec({address}, "max_attempts = 2");
  Store store = Store::open(folder_ / "db.sqlite", Store::Mode::ReadWrite);
  record_trials(store, spec, 2);
  Farm farm(store, spec, experiment_id_);
  farm.start(false);
  ASSERT_TRUE(farm.wait(60));
  // Heartbeats go on while idle: the device is marked offline after two missed ones.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  farm.poll(true);
  farm.stop();
  EXPECT_EQ(farm.counts().failed, 2);
  for (const MeasurementJobRow& job : store.measurement_jobs(experiment_id_)) {
    EXPECT_EQ(job.status, JobStatus::Failed);
    EXPECT_EQ(job.attempts, 2);
    EXPECT_NE(job.error.find("device 'd0' (" + address + ")"), std::string::npos) << job.error;
    EXPECT_NE(job.error.find("artifacts/model"), std::string::npos) << job.error;
    EXPECT_NE(job.error.find("cannot connect"), std::string::npos) << job.error;
  }
  EXPECT_EQ(store.devices().at(0).status, "offline");
  EXPECT_TRUE(store.measurements(experiment_id_).empty());
  // Nothing recorded is lost: the trials and artifacts are untouched.
  EXPECT_EQ(store.trials(experiment_id_).size(), 2u);
}

TEST_F(FarmTest, AJobInterruptedByAStopRunsAgainOnceAfterARestart) {
  LocalAgent a(folder_ / "agent", "cpu");
  a.bench.sleep_ms = 1500;
  const ExperimentSpec spec = make_spec({a.address});
  Store store = Store::open(folder_ / "db.sqlite", Store::Mode::ReadWrite);
  record_trials(store, spec, 1);
  {
    Farm farm(store, spec, experiment_id_);
    farm.start(false);
    farm.poll(true);
    for (int i = 0; i < 100 && !a.bench.started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(a.bench.started);
    EXPECT_EQ(store.measurement_jobs(experiment_id_).at(0).status, JobStatus::Running);
    farm.stop();  // waits for the thread; the result comes back and is recorded, or the job is queued again
  }
  const auto after_stop = store.measurement_jobs(experiment_id_).at(0);
  EXPECT_TRUE(after_stop.status == JobStatus::Done || after_stop.status == JobStatus::Pending)
      << to_string(after_stop.status);
  a.bench.sleep_ms = 0;
  {
    Farm farm(store, spec, experiment_id_);
    farm.start(true);
    ASSERT_TRUE(farm.wait(60));
  }
  EXPECT_EQ(store.measurement_jobs(experiment_id_).at(0).status, JobStatus::Done);
  EXPECT_EQ(store.measurements(experiment_id_).size(), 2u);  // one job, two batch sizes, recorded once
}

TEST_F(FarmTest, SimulatedCrashLeavesTheJobRunningAndResumeMeasuresItOnce) {
  LocalAgent a(folder_ / "agent", "cpu");
  const ExperimentSpec spec = make_spec({a.address});
  Store store = Store::open(folder_ / "db.sqlite", Store::Mode::ReadWrite);
  const auto artifacts = record_trials(store, spec, 1);
  // A run that crashed mid-benchmark left its job 'running'.
  const int64_t device = store.register_device("d0", a.address);
  const Json request = measurement_request(spec);
  const int64_t job = store.add_measurement_job(artifacts[0].id, device, request, json_hash(request));
  store.mark_job_running(job);
  {
    Farm farm(store, spec, experiment_id_);
    farm.start(true);
    ASSERT_TRUE(farm.wait(60));
  }
  const auto row = store.measurement_job(job);
  EXPECT_EQ(row->status, JobStatus::Done);
  EXPECT_EQ(row->attempts, 2);
  EXPECT_EQ(a.bench.calls.load(), 1);
  EXPECT_EQ(store.measurements(experiment_id_).size(), 2u);
}

}  // namespace
}  // namespace edgesweep
