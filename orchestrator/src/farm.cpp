// The device farm: measurement jobs in the store, one network thread per device (connect, upload, benchmark,
// heartbeats), results handed back to rank 0 through a small locked queue, and the loopback agents it spawns.
#include "edgesweep/orchestrator/farm.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/process.h"
#include "edgesweep/common/trial_config.h"
#include "edgesweep/device_agents/auth.h"
#include "edgesweep/device_agents/client.h"
#include "unix_time.h"

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

/// Where the Debian package puts Fashion-MNIST (the workers' default when [data] path is empty).
const char* const packaged_fashion_mnist = "/usr/share/datasets/fashion-mnist";

/// A figure of a result object, NaN when absent or not a number.
double number_or_nan(const Json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object.at(key).is_number()) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return object.at(key).get<double>();
}

/// Whether `address`'s host is a loopback address (127.x.y.z, ::1 or localhost).
bool is_loopback_address(const std::string& address) {
  return address.rfind("127.", 0) == 0 || address.rfind("[::1]:", 0) == 0 || address.rfind("localhost:", 0) == 0;
}

/// One benchmark handed to a device thread.
struct Assignment {
  int64_t job_id = 0;
  int64_t artifact_id = 0;
  fs::path file;
  std::string sha256;
  Json request;
};

/// What a device thread reports to rank 0.
struct Event {
  enum class Kind { Online, Offline, Done, Failed } kind = Kind::Online;
  size_t device = 0;     ///< index into State::devices
  int64_t job_id = 0;    ///< Done, Failed
  Json payload;          ///< Online: hardware; Done: the benchmark result
  std::string error;     ///< Offline, Failed
};

/// One device: its settings, what it has been handed and the thread that talks to its agent.
struct Device {
  DeviceSpec spec;
  int64_t id = 0;
  std::string token;
  std::deque<Assignment> queue;  ///< guarded by State::mutex
  size_t in_hand = 0;            ///< jobs queued or being run (guarded by State::mutex)
  std::unique_ptr<Process> spawned;  ///< the agent this farm started, null when none or once stopped
  bool was_spawned = false;          ///< set before the device's thread starts; read by it
  fs::path spawn_log;
  std::string status = "unknown";  ///< as rank 0 last recorded it
  std::thread thread;
};

/// Rank 0's record of one job.
struct JobState {
  size_t device = 0;
  int64_t artifact_id = 0;
  JobStatus status = JobStatus::Pending;
  int64_t attempts = 0;
  double next_attempt_at = 0;
  Json request;
};

}  // namespace

struct Farm::State {
  Store& store;
  const ExperimentSpec& spec;
  int64_t experiment_id = 0;
  FarmOptions options;
  Json request;
  std::string request_hash;
  std::vector<std::unique_ptr<Device>> devices;
  std::map<int64_t, JobState> jobs;          ///< job id -> state (rank 0 only)
  std::map<int64_t, ArtifactRow> artifacts;  ///< artifact id -> row (rank 0 only)
  bool started = false;
  bool stopped = false;

  /// Held by a device thread while its agent benchmarks, when the agent is on loopback: agents on this host share
  /// its cores, so their benchmarks run one at a time, as on separate boards they would not disturb each other.
  std::mutex host_mutex;
  std::mutex mutex;  ///< guards the queues of the devices, `events` and `stopping`
  std::condition_variable wake;
  std::deque<Event> events;
  bool stopping = false;

  State(Store& s, const ExperimentSpec& sp) : store(s), spec(sp) {}

  void report(Event event) {
    std::lock_guard<std::mutex> lock(mutex);
    events.push_back(std::move(event));
  }

  std::string describe_job(int64_t job_id) const {
    const JobState& job = jobs.at(job_id);
    const Device& device = *devices.at(job.device);
    auto artifact = artifacts.find(job.artifact_id);
    const std::string file = artifact != artifacts.end() ? artifact->second.path : "?";
    return fmt::format("device '{}' ({}), artifact {} ('{}')", device.spec.name, device.spec.address,
                       job.artifact_id, file);
  }

  void run_device(size_t index);
  void record(const Event& event);
  void queue_jobs(const ArtifactRow& artifact);
  void spawn_agent(Device& device);
  void stop_agent(Device& device);
};

Json measurement_request(const ExperimentSpec& spec) {
  const MeasureSettings& m = spec.measure;
  Json request{{"batch_sizes", m.batch_sizes}, {"warmup_runs", m.warmup_runs}, {"warmup_seconds", m.warmup_seconds},
               {"min_runs", m.min_runs},       {"min_seconds", m.min_seconds}, {"keep_latencies", true},
               {"seed", spec.seed}};
  const Json& data = spec.base_trial.at("data");
  const std::string dataset = data.value("dataset", std::string());
  if (dataset == "fashion-mnist" || dataset == "cifar10") {
    std::string path = m.dataset_path;
    if (path.empty()) path = data.value("path", std::string());
    if (path.empty() && dataset == "fashion-mnist") path = packaged_fashion_mnist;
    // The agent reads the path on its own machine (a relative one from its working folder: a spawned agent's is
    // this process's). Kept as written, so the request and its hash do not depend on where the run started.
    if (!path.empty()) request["dataset"] = {{"id", dataset}, {"path", path}, {"limit", m.accuracy_images}};
    // [data] classes: the devices keep the same classes of their test set, relabelled as in training. Only when
    // given, so the request (and its hash) of other experiments stays as it was.
    const Json classes = data.value("classes", Json::array());
    if (!path.empty() && !classes.empty()) request["dataset"]["classes"] = classes;
    // [data] resize and rgb: the devices' copies are transformed as the training images were (likewise only when
    // given).
    if (!path.empty() && data.value("resize", 0) > 0) request["dataset"]["resize"] = data.at("resize");
    if (!path.empty() && data.value("rgb", false)) request["dataset"]["rgb"] = true;
  }
  return request;
}

std::vector<MeasurementRow> measurement_rows(const Json& result, int64_t artifact_id, int64_t device_id) {
  check(result.is_object() && result.contains("batches") && result.at("batches").is_array() &&
            !result.at("batches").empty(),
        "benchmark result has no 'batches': {}", result.dump().substr(0, 200));
  const Json memory = result.value("memory", Json::object());
  const Json accuracy = result.value("accuracy", Json());
  std::vector<MeasurementRow> rows;
  for (const Json& batch : result.at("batches")) {
    check(batch.is_object() && batch.contains("batch_size") && batch.at("batch_size").is_number_integer(),
          "benchmark result: a batch without 'batch_size': {}", batch.dump().substr(0, 200));
    MeasurementRow row;
    row.artifact_id = artifact_id;
    row.device_id = device_id;
    row.batch = batch.at("batch_size").get<int64_t>();
    row.latency_min_ms = number_or_nan(batch, "min_ms");
    row.latency_mean_ms = number_or_nan(batch, "mean_ms");
    row.latency_p50_ms = number_or_nan(batch, "p50_ms");
    row.latency_p90_ms = number_or_nan(batch, "p90_ms");
    row.latency_p99_ms = number_or_nan(batch, "p99_ms");
    row.latency_std_ms = number_or_nan(batch, "std_ms");
    row.fps = number_or_nan(batch, "fps");
    row.peak_rss_mb = number_or_nan(memory, "peak_rss_mb");
    row.accuracy = accuracy.is_object() ? number_or_nan(accuracy, "top1") : std::numeric_limits<double>::quiet_NaN();
    // Everything else of the result, with this batch's own figures and runs in place of the list of batches.
    row.raw = result;
    row.raw.erase("batches");
    row.raw["batch"] = batch;
    rows.push_back(std::move(row));
  }
  return rows;
}

Farm::Farm(Store& store, const ExperimentSpec& spec, int64_t experiment_id, FarmOptions options)
    : state_(std::make_unique<State>(store, spec)) {
  state_->experiment_id = experiment_id;
  state_->options = std::move(options);
  state_->request = measurement_request(spec);
  state_->request_hash = json_hash(state_->request);
  for (const DeviceSpec& spec_device : spec.devices) {
    auto device = std::make_unique<Device>();
    device->spec = spec_device;
    state_->devices.push_back(std::move(device));
  }
}

Farm::~Farm() {
  try {
    stop();
  } catch (const std::exception& e) {
    spdlog::error("device farm: stopping failed: {}", e.what());
  }
}

bool Farm::enabled() const { return !state_->devices.empty(); }

void Farm::State::queue_jobs(const ArtifactRow& artifact) {
  artifacts[artifact.id] = artifact;
  for (size_t i = 0; i < devices.size(); ++i) {
    const int64_t job_id = store.add_measurement_job(artifact.id, devices[i]->id, request, request_hash);
    if (jobs.count(job_id)) continue;
    const std::optional<MeasurementJobRow> row = store.measurement_job(job_id);
    EDGESWEEP_ASSERT(row.has_value());
    jobs[job_id] = {i, artifact.id, row->status, row->attempts, row->next_attempt_at, row->request};
  }
}

void Farm::start(bool resume) {
  State& s = *state_;
  if (!enabled() || s.started) return;
  s.started = true;
  for (auto& device : s.devices) {
    device->id = s.store.register_device(device->spec.name, device->spec.address);
    if (!device->spec.token_file.empty()) device->token = read_token_file(device->spec.token_file);
  }
  s.store.transaction([&] {
    const int64_t requeued = s.store.requeue_running_jobs(s.experiment_id);
    if (requeued > 0) spdlog::info("measurements: {} job(s) that were running are queued again", requeued);
    if (resume) {
      const int64_t retried = s.store.retry_failed_jobs(s.experiment_id);
      if (retried > 0) spdlog::info("measurements: {} failed job(s) get a new chance", retried);
    }
  });
  // Every artifact in use (the newest of each kind of every done trial) gets its jobs, also those recorded by a run
  // that ended before it could queue them.
  for (const TrialRow& trial : s.store.trials(s.experiment_id)) {
    if (trial.status != TrialStatus::Done) continue;
    std::map<std::string, ArtifactRow> newest;
    for (const ArtifactRow& a : s.store.artifacts(trial.id)) newest[a.kind] = a;
    for (const auto& [kind, artifact] : newest) s.queue_jobs(artifact);
  }
  // Jobs of artifacts no longer in use (replaced by a rerun of their trial) stay in the store as they are.
  for (const MeasurementJobRow& row : s.store.measurement_jobs(s.experiment_id)) {
    if (s.jobs.count(row.id) || !s.artifacts.count(row.artifact_id)) continue;
    for (size_t i = 0; i < s.devices.size(); ++i) {
      if (s.devices[i]->id != row.device_id) continue;
      s.jobs[row.id] = {i, row.artifact_id, row.status, row.attempts, row.next_attempt_at, row.request};
    }
  }
  for (auto& device : s.devices) {
    if (device->spec.spawn) s.spawn_agent(*device);
  }
  for (size_t i = 0; i < s.devices.size(); ++i) {
    s.devices[i]->thread = std::thread([this, i] { state_->run_device(i); });
  }
  const FarmCounts c = counts();
  spdlog::info("measurements: {} device(s), {} job(s) pending, {} done, {} failed", s.devices.size(), c.pending,
               c.done, c.failed);
}

void Farm::add_jobs(const std::vector<ArtifactRow>& artifacts) {
  if (!enabled() || !state_->started) return;
  for (const ArtifactRow& artifact : artifacts) state_->queue_jobs(artifact);
}

void Farm::State::record(const Event& event) {
  Device& device = *devices.at(event.device);
  switch (event.kind) {
    case Event::Kind::Online: {
      store.mark_device_online(device.id, event.payload);
      if (device.status != "online") {
        std::string what;
        for (const char* key : {"cpu_model", "cpu", "model", "cores", "memory_mb"}) {
          if (event.payload.contains(key) && !event.payload.at(key).is_object()) {
            what += fmt::format("{}{} {}", what.empty() ? ": " : ", ", key, event.payload.at(key).dump());
          }
        }
        spdlog::info("device '{}' ({}) is online{}", device.spec.name, device.spec.address, what);
      }
      device.status = "online";
      return;
    }
    case Event::Kind::Offline: {
      store.mark_device_offline(device.id);
      if (device.status != "offline") {
        spdlog::warn("device '{}' ({}) is offline: {}", device.spec.name, device.spec.address, event.error);
      }
      device.status = "offline";
      return;
    }
    case Event::Kind::Done: {
      JobState& job = jobs.at(event.job_id);
      try {
        const auto rows = measurement_rows(event.payload, job.artifact_id, device.id);
        store.complete_measurement_job(event.job_id, rows);
        job.status = JobStatus::Done;
        return;
      } catch (const std::exception& e) {
        Event failed = event;
        failed.kind = Event::Kind::Failed;
        failed.error = std::string("its result cannot be recorded: ") + e.what();
        return record(failed);
      }
    }
    case Event::Kind::Failed: {
      JobState& job = jobs.at(event.job_id);
      if (job.attempts >= spec.measure.max_attempts) {
        const std::string reason =
            fmt::format("{}: failed after {} attempt(s): {}", describe_job(event.job_id), job.attempts, event.error);
        store.mark_job_failed(event.job_id, reason);
        job.status = JobStatus::Failed;
        spdlog::warn("measurement {}", reason);
      } else {
        const double wait = spec.measure.retry_seconds * std::pow(2.0, static_cast<double>(job.attempts - 1));
        job.next_attempt_at = unix_now() + wait;
        store.mark_job_retry(event.job_id, event.error, job.next_attempt_at);
        job.status = JobStatus::Pending;
        spdlog::warn("measurement on {} failed (attempt {} of {}), retried in {:.1f} s: {}", describe_job(event.job_id),
                     job.attempts, spec.measure.max_attempts, wait, event.error);
      }
      return;
    }
  }
}

void Farm::poll(bool dispatch) {
  State& s = *state_;
  if (!enabled() || !s.started) return;
  std::deque<Event> events;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    events.swap(s.events);
  }
  for (const Event& event : events) {
    if (event.kind == Event::Kind::Done || event.kind == Event::Kind::Failed) {
      std::lock_guard<std::mutex> lock(s.mutex);
      --s.devices.at(event.device)->in_hand;
    }
    s.record(event);
  }
  if (!dispatch || s.stopped) return;
  const double now = unix_now();
  std::vector<std::pair<size_t, Assignment>> handed;
  for (auto& [job_id, job] : s.jobs) {
    if (job.status != JobStatus::Pending || job.next_attempt_at > now) continue;
    const ArtifactRow& artifact = s.artifacts.at(job.artifact_id);
    s.store.mark_job_running(job_id);
    job.status = JobStatus::Running;
    ++job.attempts;
    handed.push_back({job.device, Assignment{job_id, job.artifact_id, s.spec.run.results_dir / artifact.path,
                                             artifact.sha256, job.request}});
  }
  if (handed.empty()) return;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (auto& [device, assignment] : handed) {
      s.devices[device]->queue.push_back(std::move(assignment));
      ++s.devices[device]->in_hand;
    }
  }
  s.wake.notify_all();
}

FarmCounts Farm::counts() const {
  FarmCounts c;
  for (const auto& [id, job] : state_->jobs) {
    switch (job.status) {
      case JobStatus::Pending: ++c.pending; break;
      case JobStatus::Running: ++c.running; break;
      case JobStatus::Done: ++c.done; break;
      case JobStatus::Failed: ++c.failed; break;
    }
  }
  return c;
}

bool Farm::wait(double timeout_seconds) {
  if (!enabled()) return true;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(std::max(0.0, timeout_seconds)));
  auto next_line = Clock::now();
  while (true) {
    poll(true);
    const FarmCounts c = counts();
    if (c.pending == 0 && c.running == 0) return true;
    if (Clock::now() >= deadline) return false;
    if (Clock::now() >= next_line) {
      fmt::print(stderr, "[measurements] done {}, failed {}, running {}, pending {}\n", c.done, c.failed, c.running,
                 c.pending);
      next_line = Clock::now() + std::chrono::seconds(10);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Farm::stop() {
  State& s = *state_;
  if (!s.started || s.stopped) return;
  s.stopped = true;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.stopping = true;
  }
  s.wake.notify_all();
  // A spawned agent stops first, so a thread waiting for its benchmark sees the connection close.
  for (auto& device : s.devices) {
    if (device->spawned) s.stop_agent(*device);
  }
  for (auto& device : s.devices) {
    if (device->thread.joinable()) device->thread.join();
  }
  // Record what the threads reported; jobs left running go back to pending for the next run.
  poll(false);
  s.store.requeue_running_jobs(s.experiment_id);
  for (auto& [id, job] : s.jobs) {
    if (job.status == JobStatus::Running) job.status = JobStatus::Pending;
  }
}

void Farm::State::spawn_agent(Device& device) {
  // Something that answers at the address (an agent, or a port taken by another program) is left alone.
  try {
    AgentClientOptions probe;
    probe.address = device.spec.address;
    probe.token = device.token;
    probe.tls_fingerprint = device.spec.tls_fingerprint;
    probe.connect_timeout_seconds = 2;
    AgentClient client(probe);
    return;
  } catch (const AgentRefused&) {
    return;
  } catch (const InputError&) {
    return;
  } catch (const Error&) {
  }
  check_input(is_loopback_address(device.spec.address),
              "device '{}': spawn = true needs a loopback address (127.0.0.1:PORT or [::1]:PORT), got '{}'",
              device.spec.name, device.spec.address);
  const fs::path data_dir = spec.run.results_dir / "agents" / device.spec.name;
  fs::create_directories(data_dir);
  device.spawn_log = data_dir / "agent.log";
  // The agent's command line names the real program (ps shows it), not /proc/self/exe.
  std::error_code ec;
  fs::path executable = options.agent_executable;
  if (executable == "/proc/self/exe") executable = fs::read_symlink(executable, ec);
  if (ec || executable.empty()) executable = options.agent_executable;
  std::vector<std::string> args = {executable.string(), "agent", "--listen", device.spec.address,
                                   "--data", data_dir.string()};
  if (!device.spec.token_file.empty()) args.insert(args.end(), {"--token-file", device.spec.token_file});
  if (!device.spec.profile.empty()) args.insert(args.end(), {"--profile", device.spec.profile});
  if (device.spec.threads > 0) args.insert(args.end(), {"--threads", std::to_string(device.spec.threads)});
  if (device.spec.memory_mb > 0) args.insert(args.end(), {"--memory-mb", std::to_string(device.spec.memory_mb)});
  if (!device.spec.cpus.empty()) args.insert(args.end(), {"--cpus", device.spec.cpus});
  if (!device.spec.engine.empty()) args.insert(args.end(), {"--engine", device.spec.engine});
  ProcessOptions process;
  process.argv = args;
  // The agent is not part of this MPI job: it gets the environment without the launcher's variables.
  std::vector<std::string>& environment = process.environment.emplace();
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view text(*entry);
    bool launcher = false;
    for (const char* prefix : {"OMPI_", "PMIX_", "OPAL_", "PRTE_"}) launcher = launcher || text.rfind(prefix, 0) == 0;
    if (!launcher) environment.emplace_back(text);
  }
  process.parent_death_signal = SIGTERM;  // if this process dies without stopping it
  process.output_file = device.spawn_log;
  process.append_output = true;
  try {
    device.spawned = std::make_unique<Process>(process);
    device.was_spawned = true;
  } catch (const Error& e) {
    throw Error(fmt::format("device '{}': cannot start an agent: {}", device.spec.name, e.what()));
  }
  spdlog::info("device '{}': started a loopback agent (pid {}) at {}; log '{}'", device.spec.name,
               device.spawned->pid(), device.spec.address, device.spawn_log.string());
}

void Farm::State::stop_agent(Device& device) {
  std::unique_ptr<Process> agent = std::move(device.spawned);
  agent->kill_group(SIGTERM);
  if (agent->wait_for(std::chrono::seconds(10))) return;
  spdlog::warn("device '{}': the agent (pid {}) did not stop within 10 s of SIGTERM; killing it", device.spec.name,
               agent->pid());
  // Its destructor kills the group with SIGKILL and reaps it.
}

void Farm::State::run_device(size_t index) {
  Device& device = *devices[index];
  const MeasureSettings& m = spec.measure;
  std::unique_ptr<AgentClient> client;
  int64_t missed = 0;
  bool offline_reported = false;
  std::string last_error;

  AgentClientOptions client_options;
  client_options.address = device.spec.address;
  client_options.token = device.token;
  client_options.tls_fingerprint = device.spec.tls_fingerprint;
  client_options.connect_timeout_seconds = 10;
  client_options.benchmark_timeout_seconds = m.benchmark_timeout_seconds;

  const auto connected = [&] {
    missed = 0;
    offline_reported = false;
    Json hardware = client->hardware();
    if (!hardware.is_object()) hardware = Json{{"reported", hardware}};
    hardware["profile"] = client->profile();
    report({Event::Kind::Online, index, 0, hardware, {}});
  };
  const auto lost = [&](const std::string& error) {
    client.reset();
    last_error = error;
    ++missed;
    if (missed >= m.offline_after && !offline_reported) {
      offline_reported = true;
      report({Event::Kind::Offline, index, 0, Json(),
              fmt::format("no answer {} time(s) in a row; last: {}", missed, error)});
    }
  };
  const auto connect = [&] {
    client = std::make_unique<AgentClient>(client_options);
    connected();
  };

  // A spawned agent needs a moment to start: wait for it before the first job.
  if (device.was_spawned) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(options.spawn_wait_seconds));
    while (!client && Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (stopping) return;
      }
      try {
        connect();
      } catch (const std::exception& e) {
        last_error = e.what();
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
    if (!client) lost(fmt::format("the spawned agent did not answer within {} s ({}); see '{}'",
                                  options.spawn_wait_seconds, last_error, device.spawn_log.string()));
  }

  const auto heartbeat = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(m.heartbeat_seconds));
  auto next_beat = Clock::now() + heartbeat;
  while (true) {
    Assignment job;
    bool have_job = false;
    {
      std::unique_lock<std::mutex> lock(mutex);
      wake.wait_until(lock, next_beat, [&] { return stopping || !device.queue.empty(); });
      if (stopping) return;
      if (!device.queue.empty()) {
        job = std::move(device.queue.front());
        device.queue.pop_front();
        have_job = true;
      }
    }
    if (!have_job) {
      // Idle: a heartbeat (or a new connection attempt when the last one was lost).
      next_beat = Clock::now() + heartbeat;
      try {
        if (client) {
          client->ping();
          connected();
        } else {
          connect();
        }
      } catch (const std::exception& e) {
        lost(e.what());
      }
      continue;
    }
    try {
      std::unique_lock<std::mutex> host(host_mutex, std::defer_lock);
      if (is_loopback_address(device.spec.address)) host.lock();
      if (!client) connect();
      const std::string sha256 = client->upload(job.file);
      check(sha256 == job.sha256, "artifact file '{}' has sha256 {}, not the recorded {}; it changed on disk",
            job.file.string(), sha256, job.sha256);
      Json result = client->benchmark(sha256, job.request, m.benchmark_timeout_seconds);
      report({Event::Kind::Done, index, job.job_id, std::move(result), {}});
    } catch (const AgentRefused& e) {
      // The agent answered (the model failed, the request was refused): the connection stays usable.
      report({Event::Kind::Failed, index, job.job_id, Json(), e.what()});
    } catch (const std::exception& e) {
      report({Event::Kind::Failed, index, job.job_id, Json(), e.what()});
      lost(e.what());
    }
    next_beat = Clock::now() + heartbeat;
  }
}

}  // namespace edgesweep
