// The store's schema: the migrations from an empty file to the latest version, applied on open, and the check
// that refuses files this build cannot use.
#include <spdlog/spdlog.h>

#include "store_sqlite.h"

namespace edgesweep::store_detail {
namespace {

// Schema migrations: migrations[i] brings a file from version i to version i + 1. Each one runs in its own
// transaction together with the PRAGMA user_version bump. Never edit a released migration; append a new one.
const char* const migrations[] = {
    // Version 1: experiments, their trials, per-trial metrics and the model files trials produce.
    R"sql(
CREATE TABLE experiments (
  id INTEGER PRIMARY KEY,
  name TEXT UNIQUE NOT NULL,
  spec_text TEXT NOT NULL,
  spec_hash TEXT NOT NULL,
  status TEXT NOT NULL,
  created TEXT NOT NULL
);
CREATE TABLE trials (
  id INTEGER PRIMARY KEY,
  experiment_id INTEGER NOT NULL REFERENCES experiments(id),
  kind TEXT NOT NULL,
  config_json TEXT NOT NULL,
  config_hash TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  worker INTEGER NOT NULL DEFAULT -1,
  started TEXT,
  finished TEXT,
  error TEXT,
  UNIQUE (experiment_id, config_hash)
);
CREATE INDEX trials_by_experiment_status ON trials(experiment_id, status);
-- value is NULL when the metric was NaN (SQLite stores NaN as NULL).
CREATE TABLE metrics (
  id INTEGER PRIMARY KEY,
  trial_id INTEGER NOT NULL REFERENCES trials(id),
  step INTEGER NOT NULL,
  name TEXT NOT NULL,
  value REAL
);
CREATE INDEX metrics_by_trial ON metrics(trial_id, step);
CREATE TABLE artifacts (
  id INTEGER PRIMARY KEY,
  trial_id INTEGER NOT NULL REFERENCES trials(id),
  kind TEXT NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  params INTEGER NOT NULL,
  macs INTEGER NOT NULL,
  format TEXT NOT NULL,
  metadata_json TEXT NOT NULL DEFAULT '{}',
  created TEXT NOT NULL
);
CREATE INDEX artifacts_by_trial ON artifacts(trial_id, kind);
)sql",
    // Version 2: edge devices, their latency/accuracy measurements of artifacts, and the trial_results view.
    R"sql(
CREATE TABLE devices (
  id INTEGER PRIMARY KEY,
  name TEXT UNIQUE NOT NULL,
  address TEXT NOT NULL DEFAULT '',
  hardware_json TEXT NOT NULL DEFAULT '{}',
  last_seen TEXT
);
CREATE TABLE measurements (
  id INTEGER PRIMARY KEY,
  artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
  device_id INTEGER NOT NULL REFERENCES devices(id),
  batch INTEGER NOT NULL,
  latency_min_ms REAL,
  latency_mean_ms REAL,
  latency_p50_ms REAL,
  latency_p90_ms REAL,
  latency_p99_ms REAL,
  latency_std_ms REAL,
  fps REAL,
  peak_rss_mb REAL,
  accuracy REAL,
  raw_json TEXT NOT NULL DEFAULT '{}',
  created TEXT NOT NULL
);
CREATE INDEX measurements_by_artifact ON measurements(artifact_id, device_id);
CREATE VIEW trial_results AS
-- One row per trial: its experiment's name, the trial's id, kind, status and config hash, the size of its newest
-- artifact (NULL columns when it has none yet), and its final metrics (step -1) as a JSON object text.
SELECT experiments.name AS experiment,
       trials.id AS trial_id,
       trials.kind AS kind,
       trials.status AS status,
       trials.config_hash AS config_hash,
       artifacts.bytes AS bytes,
       artifacts.params AS params,
       artifacts.macs AS macs,
       (SELECT json_group_object(metrics.name, metrics.value) FROM metrics
         WHERE metrics.trial_id = trials.id AND metrics.step = -1) AS final_metrics
FROM trials
JOIN experiments ON experiments.id = trials.experiment_id
LEFT JOIN artifacts ON artifacts.id = (SELECT max(id) FROM artifacts WHERE artifacts.trial_id = trials.id);
)sql",
    // Version 3: the device farm's queue of measurement jobs (artifact x device x request) and device status.
    R"sql(
ALTER TABLE devices ADD COLUMN status TEXT NOT NULL DEFAULT 'unknown';
-- next_attempt_at: Unix time in seconds before which a pending job is not tried again (retry back-off).
CREATE TABLE measurement_jobs (
  id INTEGER PRIMARY KEY,
  artifact_id INTEGER NOT NULL REFERENCES artifacts(id),
  device_id INTEGER NOT NULL REFERENCES devices(id),
  request_hash TEXT NOT NULL,
  request_json TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL DEFAULT 0,
  error TEXT,
  created TEXT NOT NULL,
  started TEXT,
  finished TEXT,
  UNIQUE (artifact_id, device_id, request_hash)
);
CREATE INDEX measurement_jobs_by_device_status ON measurement_jobs(device_id, status);
)sql",
    // Version 4: the ranks of an experiment's latest run as rank 0 last heard from them: state, the task each holds
    // and its progress (from the heartbeats). heard: Unix time in seconds of the rank's last message.
    R"sql(
CREATE TABLE workers (
  experiment_id INTEGER NOT NULL REFERENCES experiments(id),
  rank INTEGER NOT NULL,
  host TEXT NOT NULL DEFAULT '',
  pid INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL,
  trial_id INTEGER REFERENCES trials(id),
  progress_json TEXT NOT NULL DEFAULT '{}',
  heard REAL NOT NULL,
  PRIMARY KEY (experiment_id, rank)
);
)sql",
};

constexpr int latest_schema_version = static_cast<int>(sizeof(migrations) / sizeof(migrations[0]));

}  // namespace

int latest_schema() { return latest_schema_version; }

/// Applies the pending migrations, each in one BEGIN IMMEDIATE transaction; the version is read inside the
/// transaction so two writers opening the same old file do not both migrate it.
void migrate(Database& database) {
  while (true) {
    execute(database, "begin migration", "BEGIN IMMEDIATE");
    int version = 0;
    try {
      version = read_schema_version(database);
      if (version >= latest_schema_version) {
        execute(database, "end migration", "COMMIT");
        return;
      }
      std::string step = fmt::format("migrate schema from version {} to {}", version, version + 1);
      execute(database, step, migrations[version]);
      execute(database, step, fmt::format("PRAGMA user_version = {}", version + 1).c_str());
      execute(database, step, "COMMIT");
    } catch (...) {
      sqlite3_exec(database.connection.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
    spdlog::debug("store '{}': migrated schema to version {}", database.path, version + 1);
  }
}

/// Refuses files this build cannot use: a newer schema, or (read-only) a file that is not an edgesweep store.
void check_schema(const Database& database) {
  int version = read_schema_version(database);
  check(version <= latest_schema_version,
        "store '{}' has schema version {}, newer than this build supports ({}); hint: use a newer edgesweep",
        database.path, version, latest_schema_version);
  if (version > 0) return;
  Statement statement(database, "list tables", "SELECT count(*) FROM sqlite_master");
  EDGESWEEP_ASSERT(statement.step());
  int64_t objects = statement.column_int(0);
  check(objects == 0, "store '{}' is not an edgesweep store: schema version 0 but it holds {} tables or indexes",
        database.path, objects);
  check(database.mode == Store::Mode::ReadWrite, "store '{}' is not an edgesweep store: it is empty (schema version 0)",
        database.path);
}

}  // namespace edgesweep::store_detail
