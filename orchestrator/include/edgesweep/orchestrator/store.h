// The experiment store: one SQLite file (WAL), written by rank 0 only, read by the query commands.
// Schema versioned with PRAGMA user_version; migrations run in order when a writer opens an older file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"

struct sqlite3;

namespace edgesweep {

/// Trial states as stored.
enum class TrialStatus { Pending, Running, Done, Failed };
const char* to_string(TrialStatus status);
TrialStatus trial_status_from_string(const std::string& text);

struct ExperimentRow {
  int64_t id = 0;
  std::string name;
  std::string spec_text;
  std::string spec_hash;
  std::string status;  ///< running | done | failed
  std::string created;  ///< ISO 8601 UTC
};

struct TrialRow {
  int64_t id = 0;
  int64_t experiment_id = 0;
  std::string kind;  ///< "baseline" or "trial"
  Json config;
  std::string config_hash;
  TrialStatus status = TrialStatus::Pending;
  int64_t attempts = 0;
  int64_t worker = -1;  ///< MPI rank that ran it last, -1 when never run
  std::string started;  ///< ISO 8601 UTC or empty
  std::string finished;
  std::string error;
};

/// A rank of an experiment's latest run as rank 0 last heard from it.
struct WorkerRow {
  int64_t experiment_id = 0;
  int64_t rank = 0;
  std::string host;
  int64_t pid = 0;
  std::string state;     ///< idle | busy | lost | released
  int64_t trial_id = 0;  ///< the task it holds (busy) or held when it was lost; 0: none
  Json progress = Json::object();  ///< the task's progress (TaskProgress as JSON) from its last heartbeat
  double heard = 0;      ///< Unix time in seconds of its last message
};

struct MetricRow {
  int64_t trial_id = 0;
  int64_t step = 0;  ///< epoch or stage index; -1 for final values
  std::string name;
  double value = 0;
};

struct ArtifactRow {
  int64_t id = 0;
  int64_t trial_id = 0;
  std::string kind;  ///< "baseline" or "model"
  std::string path;  ///< relative to the experiment's results folder
  std::string sha256;
  int64_t bytes = 0;
  int64_t params = 0;
  int64_t macs = 0;
  std::string format;  ///< e.g. "torchscript"
  Json metadata = Json::object();
};

/// A device agent as last seen by the orchestrator.
struct DeviceRow {
  int64_t id = 0;
  std::string name;     ///< unique
  std::string address;  ///< HOST:PORT of its agent
  Json hardware = Json::object();  ///< what its agent reported (CPU, cores, memory, OS, LibTorch, ...)
  std::string last_seen;  ///< ISO 8601 UTC; upsert_device sets the current time when empty
  std::string status = "unknown";  ///< online | offline | unknown (never contacted); set by the device farm
};

/// One benchmark of an artifact on a device at one batch size. Figures not measured are NaN (stored as NULL).
struct MeasurementRow {
  int64_t id = 0;
  int64_t artifact_id = 0;
  int64_t device_id = 0;
  std::string device;  ///< the device's name (filled in by reads; ignored by add_measurement)
  int64_t batch = 1;
  double latency_min_ms = std::numeric_limits<double>::quiet_NaN();
  double latency_mean_ms = std::numeric_limits<double>::quiet_NaN();
  double latency_p50_ms = std::numeric_limits<double>::quiet_NaN();
  double latency_p90_ms = std::numeric_limits<double>::quiet_NaN();
  double latency_p99_ms = std::numeric_limits<double>::quiet_NaN();
  double latency_std_ms = std::numeric_limits<double>::quiet_NaN();
  double fps = std::numeric_limits<double>::quiet_NaN();
  double peak_rss_mb = std::numeric_limits<double>::quiet_NaN();
  double accuracy = std::numeric_limits<double>::quiet_NaN();  ///< top-1 in percent, like test_accuracy
  Json raw = Json::object();  ///< everything else the agent reported (per-run latencies, load time, ...)
  std::string created;        ///< ISO 8601 UTC, set by add_measurement
};

/// Measurement job states as stored.
enum class JobStatus { Pending, Running, Done, Failed };
const char* to_string(JobStatus status);
JobStatus job_status_from_string(const std::string& text);

/// One benchmark to run: an artifact on a device with one request (batch sizes, timing, evaluation set). Unique per
/// (artifact, device, request hash), so the same request is never queued twice.
struct MeasurementJobRow {
  int64_t id = 0;
  int64_t artifact_id = 0;
  int64_t device_id = 0;
  std::string device;  ///< the device's name (filled in by reads)
  std::string request_hash;
  Json request = Json::object();
  JobStatus status = JobStatus::Pending;
  int64_t attempts = 0;
  double next_attempt_at = 0;  ///< Unix time (seconds) before which a pending job is not tried again
  std::string error;           ///< the last attempt's failure; empty when none
  std::string created;         ///< ISO 8601 UTC
  std::string started;         ///< of the last attempt; empty when never started
  std::string finished;
};

/// Latest schema version this build writes.
int store_schema_version();

class Store {
 public:
  enum class Mode { ReadWrite, ReadOnly };

  /// Opens (ReadWrite: creates and migrates) the database at `path`; throws Error naming the file.
  static Store open(const std::filesystem::path& path, Mode mode);

  /// Throws InputError naming the file when a store at `path` (or its folder, when it does not exist yet) cannot be
  /// written: a read-only file, folder or file system. Reading it is still possible.
  static void check_writable(const std::filesystem::path& path);

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();

  /// The schema version of the open file (PRAGMA user_version).
  int schema_version() const;

  /// Runs `body` in one transaction (BEGIN IMMEDIATE ... COMMIT; ROLLBACK when it throws, then rethrows).
  template <typename Body>
  void transaction(Body&& body) {
    begin();
    try {
      body();
    } catch (...) {
      rollback();
      throw;
    }
    commit();
  }

  // Experiments.
  int64_t create_experiment(const std::string& name, const std::string& spec_text, const std::string& spec_hash);
  std::optional<ExperimentRow> find_experiment(const std::string& name) const;
  std::vector<ExperimentRow> experiments() const;
  void set_experiment_status(int64_t experiment_id, const std::string& status);

  // Trials. add_trial returns the existing id when (experiment, config_hash) is already there.
  int64_t add_trial(int64_t experiment_id, const std::string& kind, const Json& config, const std::string& config_hash);
  std::vector<TrialRow> trials(int64_t experiment_id) const;
  std::optional<TrialRow> trial(int64_t trial_id) const;
  /// Marks a trial running on `worker`, increments attempts and sets `started`.
  void mark_running(int64_t trial_id, int64_t worker);
  void mark_done(int64_t trial_id);
  void mark_failed(int64_t trial_id, const std::string& error);
  /// Puts a failed or running trial back to pending (resume; retries).
  void mark_pending(int64_t trial_id);
  /// Re-queues every running trial of an experiment (after a crash); returns how many.
  int64_t requeue_running(int64_t experiment_id);

  // Worker ranks.
  /// Inserts or replaces the rows of (experiment, rank), in one transaction.
  void record_workers(const std::vector<WorkerRow>& rows);
  /// The worker rows of an experiment, by rank.
  std::vector<WorkerRow> workers(int64_t experiment_id) const;
  /// Forgets the worker rows of an experiment (a new run starts with its own ranks).
  void clear_workers(int64_t experiment_id);

  // Metrics.
  void add_metrics(const std::vector<MetricRow>& rows);
  std::vector<MetricRow> metrics(int64_t trial_id) const;

  // Artifacts.
  int64_t add_artifact(const ArtifactRow& row);
  std::vector<ArtifactRow> artifacts(int64_t trial_id) const;
  /// The path of every artifact the store records, of every experiment.
  std::vector<std::string> artifact_paths() const;
  /// The newest artifact of `kind` whose trial has this config hash within the experiment, if any.
  std::optional<ArtifactRow> find_artifact(int64_t experiment_id, const std::string& config_hash,
                                           const std::string& kind) const;

  // Devices and measurements.
  /// Inserts the device or, when its name is known, updates its address, hardware and last_seen; returns its id.
  int64_t upsert_device(const DeviceRow& row);
  std::vector<DeviceRow> devices() const;
  /// Records one measurement (row.device_id and row.artifact_id must exist); returns its id.
  int64_t add_measurement(const MeasurementRow& row);
  /// The measurements of an experiment's artifacts (through artifacts -> trials), oldest first, device names filled.
  std::vector<MeasurementRow> measurements(int64_t experiment_id) const;

  /// Inserts a device by name (status unknown, no hardware yet) or updates the address of a known one, keeping its
  /// hardware and status; returns its id.
  int64_t register_device(const std::string& name, const std::string& address);
  /// The device answered: status online, last_seen now, and its hardware unless `hardware` is null or empty.
  void mark_device_online(int64_t device_id, const Json& hardware);
  /// The device missed its heartbeats: status offline (last_seen kept).
  void mark_device_offline(int64_t device_id);

  // Measurement jobs (the device farm's queue).
  /// Queues a job unless (artifact, device, request_hash) is already there; returns the job's id either way.
  int64_t add_measurement_job(int64_t artifact_id, int64_t device_id, const Json& request,
                              const std::string& request_hash);
  /// The jobs of an experiment's artifacts, in id order, device names filled.
  std::vector<MeasurementJobRow> measurement_jobs(int64_t experiment_id) const;
  std::optional<MeasurementJobRow> measurement_job(int64_t job_id) const;
  /// Marks a pending job running, increments attempts and sets `started`; throws when it is not pending.
  void mark_job_running(int64_t job_id);
  /// Puts a running job back to pending with the attempt's error, to be tried again from `next_attempt_at`.
  void mark_job_retry(int64_t job_id, const std::string& error, double next_attempt_at);
  /// Marks a job failed for good with `error`.
  void mark_job_failed(int64_t job_id, const std::string& error);
  /// Records a running job's measurements and marks it done, in one transaction. Throws (and records nothing)
  /// when the job is not running, so a job's measurements are never recorded twice.
  void complete_measurement_job(int64_t job_id, const std::vector<MeasurementRow>& rows);
  /// Running jobs of an experiment back to pending (after a crash or an interrupted run); returns how many.
  int64_t requeue_running_jobs(int64_t experiment_id);
  /// Failed jobs of an experiment back to pending with their attempts reset (a new run); returns how many.
  int64_t retry_failed_jobs(int64_t experiment_id);

  /// Runs a read-only SQL statement and returns its rows as JSON objects (column name -> value). Throws InputError
  /// for a statement it refuses (writes, several statements, transaction control, ATTACH, setting PRAGMAs,
  /// fts3_tokenizer), a statement SQLite cannot prepare, or one still running after `timeout_seconds` (<= 0: none).
  Json query(const std::string& sql, double timeout_seconds = 30) const;

 private:
  struct Handle;
  explicit Store(std::unique_ptr<Handle> handle);
  void begin();
  void commit();
  void rollback();
  std::unique_ptr<Handle> handle_;
};

}  // namespace edgesweep
