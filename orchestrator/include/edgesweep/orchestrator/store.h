// The experiment store: one SQLite file (WAL), written by rank 0 only, read by the query commands.
// Schema versioned with PRAGMA user_version; migrations run in order when a writer opens an older file.
#pragma once

#include <cstdint>
#include <filesystem>
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

/// Latest schema version this build writes.
int store_schema_version();

class Store {
 public:
  enum class Mode { ReadWrite, ReadOnly };

  /// Opens (ReadWrite: creates and migrates) the database at `path`; throws Error naming the file.
  static Store open(const std::filesystem::path& path, Mode mode);

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

  // Metrics.
  void add_metrics(const std::vector<MetricRow>& rows);
  std::vector<MetricRow> metrics(int64_t trial_id) const;

  // Artifacts.
  int64_t add_artifact(const ArtifactRow& row);
  std::vector<ArtifactRow> artifacts(int64_t trial_id) const;
  /// The newest artifact of `kind` whose trial has this config hash within the experiment, if any.
  std::optional<ArtifactRow> find_artifact(int64_t experiment_id, const std::string& config_hash,
                                           const std::string& kind) const;

  /// Runs a read-only SQL statement and returns its rows as JSON objects (column name -> value).
  Json query(const std::string& sql) const;

 private:
  struct Handle;
  explicit Store(std::unique_ptr<Handle> handle);
  void begin();
  void commit();
  void rollback();
  std::unique_ptr<Handle> handle_;
};

}  // namespace edgesweep
