// The experiment store on SQLite: opening (with the schema checked and migrated) and the typed reads and writes
// declared in store.h. The handles are in store_sqlite.h, the schema in store_schema.cpp, the query sandbox in
// store_query.cpp.
#include "edgesweep/orchestrator/store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <ctime>
#include <limits>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"
#include "store_sqlite.h"

namespace edgesweep {
namespace {

using namespace store_detail;


const char* const experiment_columns = "id, name, spec_text, spec_hash, status, created";

ExperimentRow read_experiment(const Statement& statement) {
  ExperimentRow row;
  row.id = statement.column_int(0);
  row.name = statement.column_text(1);
  row.spec_text = statement.column_text(2);
  row.spec_hash = statement.column_text(3);
  row.status = statement.column_text(4);
  row.created = statement.column_text(5);
  return row;
}

const char* const trial_columns =
    "id, experiment_id, kind, config_json, config_hash, status, attempts, worker, started, finished, error";

TrialRow read_trial(const Database& database, const Statement& statement) {
  TrialRow row;
  row.id = statement.column_int(0);
  row.experiment_id = statement.column_int(1);
  row.kind = statement.column_text(2);
  row.config = parse_stored_json(database, fmt::format("trial {} config_json", row.id), statement.column_text(3));
  row.config_hash = statement.column_text(4);
  row.status = trial_status_from_string(statement.column_text(5));
  row.attempts = statement.column_int(6);
  row.worker = statement.column_int(7);
  row.started = statement.column_text(8);
  row.finished = statement.column_text(9);
  row.error = statement.column_text(10);
  return row;
}

const char* const artifact_columns =
    "artifacts.id, artifacts.trial_id, artifacts.kind, artifacts.path, artifacts.sha256, artifacts.bytes, "
    "artifacts.params, artifacts.macs, artifacts.format, artifacts.metadata_json";

ArtifactRow read_artifact(const Database& database, const Statement& statement) {
  ArtifactRow row;
  row.id = statement.column_int(0);
  row.trial_id = statement.column_int(1);
  row.kind = statement.column_text(2);
  row.path = statement.column_text(3);
  row.sha256 = statement.column_text(4);
  row.bytes = statement.column_int(5);
  row.params = statement.column_int(6);
  row.macs = statement.column_int(7);
  row.format = statement.column_text(8);
  row.metadata = parse_stored_json(database, fmt::format("artifact {} metadata_json", row.id), statement.column_text(9));
  return row;
}

/// Runs an UPDATE of one trial and throws when no trial has that id.
void update_one_trial(const Database& database, Statement& statement, int64_t trial_id, const std::string& step) {
  statement.run();
  check(changed_rows(database) == 1, "store '{}': {}: no trial with id {}", database.path, step, trial_id);
}

}  // namespace

using namespace store_detail;



const char* to_string(TrialStatus status) {
  switch (status) {
    case TrialStatus::Pending:
      return "pending";
    case TrialStatus::Running:
      return "running";
    case TrialStatus::Done:
      return "done";
    case TrialStatus::Failed:
      return "failed";
  }
  throw Error(fmt::format("internal error: unknown TrialStatus {}", static_cast<int>(status)));
}

const char* to_string(JobStatus status) {
  switch (status) {
    case JobStatus::Pending: return "pending";
    case JobStatus::Running: return "running";
    case JobStatus::Done: return "done";
    case JobStatus::Failed: return "failed";
  }
  return "unknown";
}

JobStatus job_status_from_string(const std::string& text) {
  for (JobStatus status : {JobStatus::Pending, JobStatus::Running, JobStatus::Done, JobStatus::Failed}) {
    if (text == to_string(status)) return status;
  }
  throw Error(fmt::format("unknown measurement job status '{}' (expected pending, running, done or failed)", text));
}

TrialStatus trial_status_from_string(const std::string& text) {
  for (TrialStatus status : {TrialStatus::Pending, TrialStatus::Running, TrialStatus::Done, TrialStatus::Failed}) {
    if (text == to_string(status)) return status;
  }
  throw Error(fmt::format("unknown trial status '{}' (expected pending, running, done or failed)", text));
}

int store_schema_version() { return latest_schema(); }

void Store::check_writable(const std::filesystem::path& path) {
  // access() answers for this user on this mount: a read-only file system stops root too. The folder matters as
  // well: the journal, the shared-memory index and the lock file are made beside the store.
  std::error_code ec;
  // From the absolute path: a relative one ("results/quickstart/...") whose first folder does not exist yet would
  // otherwise run out of parents before reaching one that exists.
  const std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  std::filesystem::path folder = (ec ? path : absolute).parent_path();
  if (folder.empty()) folder = ".";
  while (!std::filesystem::exists(folder, ec) && folder.has_parent_path() && folder != folder.parent_path()) {
    folder = folder.parent_path();  // the nearest folder that exists is where a new one would be made
  }
  std::vector<std::pair<std::filesystem::path, const char*>> targets{{folder, "its folder"}};
  if (std::filesystem::exists(path, ec)) targets.insert(targets.begin(), {path, "the file"});
  for (const auto& [target, what] : targets) {
    if (::access(target.c_str(), W_OK) != 0) {
      const int error = errno;
      throw InputError(fmt::format("the store '{}' is read-only: {} '{}' cannot be written ({}); a run writes to its "
                                   "store, while status, trials, query and report only read it",
                                   path.string(), what, target.string(), std::strerror(error)));
    }
  }
}

Store Store::open(const std::filesystem::path& path, Mode mode) {
  auto handle = std::make_unique<Handle>();
  handle->path = path.string();
  handle->mode = mode;

  int flags = SQLITE_OPEN_READONLY;
  if (mode == Mode::ReadWrite) {
    check_writable(path);
    flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    std::error_code error;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), error);
    check(!error, "cannot open store '{}': cannot create folder '{}': {}", handle->path,
          path.parent_path().string(), error.message());
  } else {
    check(std::filesystem::exists(path), "cannot open store '{}': no such file", handle->path);
  }

  sqlite3* raw = nullptr;
  int result = sqlite3_open_v2(handle->path.c_str(), &raw, flags, nullptr);
  handle->connection.reset(raw);  // sqlite3_open_v2 may hand back a connection even when it fails
  check(result == SQLITE_OK, "cannot open store '{}': {}", handle->path,
        raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(result));
  sqlite3_extended_result_codes(raw, 1);
  // Debian's SQLite lets fts3_tokenizer() take a pointer value; no store needs it.
  sqlite3_db_config(raw, SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, 0, nullptr);

  set_pragma(*handle, "busy_timeout = 5000");
  set_pragma(*handle, "foreign_keys = ON");
  check_schema(*handle);
  if (mode == Mode::ReadWrite) {
    std::string journal_mode = set_pragma(*handle, "journal_mode = WAL");
    if (journal_mode != "wal") {
      spdlog::warn("store '{}': journal mode is '{}', not 'wal' (the file system may not support WAL)",
                   handle->path, journal_mode);
    }
    set_pragma(*handle, "synchronous = NORMAL");
    migrate(*handle);
  }
  return Store(std::move(handle));
}

Store::Store(std::unique_ptr<Handle> handle) : handle_(std::move(handle)) {}
Store::Store(Store&&) noexcept = default;
Store& Store::operator=(Store&&) noexcept = default;
Store::~Store() = default;

int Store::schema_version() const { return read_schema_version(checked(handle_.get())); }

void Store::begin() {
  Database& database = checked(handle_.get());
  if (database.transaction_depth == 0) {
    // A read-only store takes a plain BEGIN: a consistent snapshot for its reads without asking for the write lock.
    execute(database, "begin transaction", database.mode == Mode::ReadWrite ? "BEGIN IMMEDIATE" : "BEGIN");
    database.inner_rolled_back = false;
  }
  ++database.transaction_depth;
}

void Store::commit() {
  Database& database = checked(handle_.get());
  EDGESWEEP_ASSERT(database.transaction_depth > 0);
  if (--database.transaction_depth > 0) return;
  if (database.inner_rolled_back) {
    sqlite3_exec(database.connection.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    database.inner_rolled_back = false;
    throw Error(fmt::format("store '{}': commit: an inner transaction failed, so the whole transaction was rolled back",
                            database.path));
  }
  if (sqlite3_exec(database.connection.get(), "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
    std::string message = sqlite3_errmsg(database.connection.get());
    sqlite3_exec(database.connection.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    throw Error(fmt::format("store '{}': commit: {}", database.path, message));
  }
}

void Store::rollback() {
  // Called while an exception propagates: never throws, so that exception is the one the caller sees.
  Database& database = checked(handle_.get());
  EDGESWEEP_ASSERT(database.transaction_depth > 0);
  if (--database.transaction_depth > 0) {
    database.inner_rolled_back = true;
    return;
  }
  database.inner_rolled_back = false;
  // ROLLBACK fails harmlessly when SQLite already rolled back on its own (e.g. after SQLITE_FULL).
  if (sqlite3_get_autocommit(database.connection.get()) == 0 &&
      sqlite3_exec(database.connection.get(), "ROLLBACK", nullptr, nullptr, nullptr) != SQLITE_OK) {
    spdlog::warn("store '{}': rollback: {}", database.path, sqlite3_errmsg(database.connection.get()));
  }
}

int64_t Store::create_experiment(const std::string& name, const std::string& spec_text,
                                 const std::string& spec_hash) {
  Database& database = writable(handle_.get(), "create experiment");
  Statement statement(database, fmt::format("create experiment '{}'", name),
                      "INSERT INTO experiments (name, spec_text, spec_hash, status, created) "
                      "VALUES (?1, ?2, ?3, 'running', ?4)");
  statement.bind_text(1, name);
  statement.bind_text(2, spec_text);
  statement.bind_text(3, spec_hash);
  statement.bind_text(4, now_utc());
  statement.run();
  return sqlite3_last_insert_rowid(database.connection.get());
}

std::optional<ExperimentRow> Store::find_experiment(const std::string& name) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("find experiment '{}'", name),
                      fmt::format("SELECT {} FROM experiments WHERE name = ?1", experiment_columns));
  statement.bind_text(1, name);
  if (!statement.step()) return std::nullopt;
  return read_experiment(statement);
}

std::vector<ExperimentRow> Store::experiments() const {
  Database& database = checked(handle_.get());
  Statement statement(database, "list experiments",
                      fmt::format("SELECT {} FROM experiments ORDER BY id", experiment_columns));
  std::vector<ExperimentRow> rows;
  while (statement.step()) rows.push_back(read_experiment(statement));
  return rows;
}

void Store::set_experiment_status(int64_t experiment_id, const std::string& status) {
  Database& database = writable(handle_.get(), "set experiment status");
  check(status == "running" || status == "done" || status == "failed",
        "store '{}': set experiment {} status: unknown status '{}' (expected running, done or failed)", database.path,
        experiment_id, status);
  std::string step = fmt::format("set experiment {} status to '{}'", experiment_id, status);
  Statement statement(database, step, "UPDATE experiments SET status = ?2 WHERE id = ?1");
  statement.bind_int(1, experiment_id);
  statement.bind_text(2, status);
  statement.run();
  check(changed_rows(database) == 1, "store '{}': {}: no experiment with id {}", database.path, step, experiment_id);
}

int64_t Store::add_trial(int64_t experiment_id, const std::string& kind, const Json& config,
                         const std::string& config_hash) {
  Database& database = writable(handle_.get(), "add trial");
  std::string step = fmt::format("add trial {} to experiment {}", config_hash, experiment_id);
  int64_t trial_id = 0;
  transaction([&] {
    Statement insert(database, step,
                     "INSERT INTO trials (experiment_id, kind, config_json, config_hash, status, attempts, worker) "
                     "VALUES (?1, ?2, ?3, ?4, 'pending', 0, -1) ON CONFLICT (experiment_id, config_hash) DO NOTHING");
    insert.bind_int(1, experiment_id);
    insert.bind_text(2, kind);
    insert.bind_text(3, config.dump());
    insert.bind_text(4, config_hash);
    insert.run();
    Statement select(database, step, "SELECT id FROM trials WHERE experiment_id = ?1 AND config_hash = ?2");
    select.bind_int(1, experiment_id);
    select.bind_text(2, config_hash);
    EDGESWEEP_ASSERT(select.step());
    trial_id = select.column_int(0);
  });
  return trial_id;
}

std::vector<TrialRow> Store::trials(int64_t experiment_id) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("list trials of experiment {}", experiment_id),
                      fmt::format("SELECT {} FROM trials WHERE experiment_id = ?1 ORDER BY id", trial_columns));
  statement.bind_int(1, experiment_id);
  std::vector<TrialRow> rows;
  while (statement.step()) rows.push_back(read_trial(database, statement));
  return rows;
}

std::optional<TrialRow> Store::trial(int64_t trial_id) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("read trial {}", trial_id),
                      fmt::format("SELECT {} FROM trials WHERE id = ?1", trial_columns));
  statement.bind_int(1, trial_id);
  if (!statement.step()) return std::nullopt;
  return read_trial(database, statement);
}

void Store::mark_running(int64_t trial_id, int64_t worker) {
  Database& database = writable(handle_.get(), "mark trial running");
  std::string step = fmt::format("mark trial {} running on worker {}", trial_id, worker);
  // A new attempt: the previous attempt's finish time and error no longer describe the trial.
  Statement statement(database, step,
                      "UPDATE trials SET status = 'running', attempts = attempts + 1, worker = ?2, started = ?3, "
                      "finished = NULL, error = NULL WHERE id = ?1");
  statement.bind_int(1, trial_id);
  statement.bind_int(2, worker);
  statement.bind_text(3, now_utc());
  update_one_trial(database, statement, trial_id, step);
}

void Store::mark_done(int64_t trial_id) {
  Database& database = writable(handle_.get(), "mark trial done");
  std::string step = fmt::format("mark trial {} done", trial_id);
  Statement statement(database, step,
                      "UPDATE trials SET status = 'done', finished = ?2, error = NULL WHERE id = ?1");
  statement.bind_int(1, trial_id);
  statement.bind_text(2, now_utc());
  update_one_trial(database, statement, trial_id, step);
}

void Store::mark_failed(int64_t trial_id, const std::string& error) {
  Database& database = writable(handle_.get(), "mark trial failed");
  std::string step = fmt::format("mark trial {} failed", trial_id);
  Statement statement(database, step, "UPDATE trials SET status = 'failed', finished = ?2, error = ?3 WHERE id = ?1");
  statement.bind_int(1, trial_id);
  statement.bind_text(2, now_utc());
  statement.bind_text(3, error);
  update_one_trial(database, statement, trial_id, step);
}

void Store::mark_pending(int64_t trial_id) {
  Database& database = writable(handle_.get(), "mark trial pending");
  std::string step = fmt::format("mark trial {} pending", trial_id);
  // Keeps the last attempt's error and times for reports until the next attempt starts; a done trial stays done.
  Statement statement(database, step,
                      "UPDATE trials SET status = 'pending' WHERE id = ?1 AND status IN ('pending', 'running', 'failed')");
  statement.bind_int(1, trial_id);
  statement.run();
  if (changed_rows(database) == 1) return;
  std::optional<TrialRow> row = trial(trial_id);
  check(row.has_value(), "store '{}': {}: no trial with id {}", database.path, step, trial_id);
  throw Error(fmt::format("store '{}': {}: the trial is {}; only running or failed trials go back to pending",
                          database.path, step, to_string(row->status)));
}

int64_t Store::requeue_running(int64_t experiment_id) {
  Database& database = writable(handle_.get(), "requeue running trials");
  Statement statement(database, fmt::format("requeue running trials of experiment {}", experiment_id),
                      "UPDATE trials SET status = 'pending' WHERE experiment_id = ?1 AND status = 'running'");
  statement.bind_int(1, experiment_id);
  statement.run();
  return changed_rows(database);
}

void Store::add_metrics(const std::vector<MetricRow>& rows) {
  Database& database = writable(handle_.get(), "add metrics");
  if (rows.empty()) return;
  transaction([&] {
    Statement statement(database, "add metrics",
                        "INSERT INTO metrics (trial_id, step, name, value) VALUES (?1, ?2, ?3, ?4)");
    for (const MetricRow& row : rows) {
      statement.reset();
      statement.bind_int(1, row.trial_id);
      statement.bind_int(2, row.step);
      statement.bind_text(3, row.name);
      statement.bind_double(4, row.value);  // NaN is stored as NULL and read back as NaN
      try {
        statement.run();
      } catch (const Error& e) {
        throw Error(fmt::format("{} (metric '{}' step {} of trial {})", e.what(), row.name, row.step, row.trial_id));
      }
    }
  });
}

std::vector<MetricRow> Store::metrics(int64_t trial_id) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("list metrics of trial {}", trial_id),
                      "SELECT trial_id, step, name, value FROM metrics WHERE trial_id = ?1 ORDER BY step, id");
  statement.bind_int(1, trial_id);
  std::vector<MetricRow> rows;
  while (statement.step()) {
    MetricRow row;
    row.trial_id = statement.column_int(0);
    row.step = statement.column_int(1);
    row.name = statement.column_text(2);
    row.value = statement.column_is_null(3) ? std::numeric_limits<double>::quiet_NaN() : statement.column_double(3);
    rows.push_back(row);
  }
  return rows;
}

int64_t Store::add_artifact(const ArtifactRow& row) {
  Database& database = writable(handle_.get(), "add artifact");
  Statement statement(database, fmt::format("add artifact '{}' of trial {}", row.path, row.trial_id),
                      "INSERT INTO artifacts (trial_id, kind, path, sha256, bytes, params, macs, format, "
                      "metadata_json, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
  statement.bind_int(1, row.trial_id);
  statement.bind_text(2, row.kind);
  statement.bind_text(3, row.path);
  statement.bind_text(4, row.sha256);
  statement.bind_int(5, row.bytes);
  statement.bind_int(6, row.params);
  statement.bind_int(7, row.macs);
  statement.bind_text(8, row.format);
  statement.bind_text(9, row.metadata.dump());
  statement.bind_text(10, now_utc());
  statement.run();
  return sqlite3_last_insert_rowid(database.connection.get());
}

std::vector<ArtifactRow> Store::artifacts(int64_t trial_id) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("list artifacts of trial {}", trial_id),
                      fmt::format("SELECT {} FROM artifacts WHERE trial_id = ?1 ORDER BY id", artifact_columns));
  statement.bind_int(1, trial_id);
  std::vector<ArtifactRow> rows;
  while (statement.step()) rows.push_back(read_artifact(database, statement));
  return rows;
}

std::vector<std::string> Store::artifact_paths() const {
  Database& database = checked(handle_.get());
  Statement statement(database, "list the paths of all artifacts", "SELECT path FROM artifacts");
  std::vector<std::string> paths;
  while (statement.step()) paths.push_back(statement.column_text(0));
  return paths;
}

std::optional<ArtifactRow> Store::find_artifact(int64_t experiment_id, const std::string& config_hash,
                                                const std::string& kind) const {
  Database& database = checked(handle_.get());
  Statement statement(database,
                      fmt::format("find {} artifact of config {} in experiment {}", kind, config_hash, experiment_id),
                      fmt::format("SELECT {} FROM artifacts JOIN trials ON trials.id = artifacts.trial_id "
                                  "WHERE trials.experiment_id = ?1 AND trials.config_hash = ?2 AND artifacts.kind = ?3 "
                                  "ORDER BY artifacts.id DESC LIMIT 1",
                                  artifact_columns));
  statement.bind_int(1, experiment_id);
  statement.bind_text(2, config_hash);
  statement.bind_text(3, kind);
  if (!statement.step()) return std::nullopt;
  return read_artifact(database, statement);
}

int64_t Store::upsert_device(const DeviceRow& row) {
  Database& database = writable(handle_.get(), "upsert device");
  check(!row.name.empty(), "store '{}': upsert device: the device has no name", database.path);
  std::string step = fmt::format("upsert device '{}'", row.name);
  int64_t device_id = 0;
  transaction([&] {
    Statement upsert(database, step,
                     "INSERT INTO devices (name, address, hardware_json, last_seen) VALUES (?1, ?2, ?3, ?4) "
                     "ON CONFLICT (name) DO UPDATE SET address = excluded.address, "
                     "hardware_json = excluded.hardware_json, last_seen = excluded.last_seen");
    upsert.bind_text(1, row.name);
    upsert.bind_text(2, row.address);
    upsert.bind_text(3, row.hardware.dump());
    upsert.bind_text(4, row.last_seen.empty() ? now_utc() : row.last_seen);
    upsert.run();
    Statement select(database, step, "SELECT id FROM devices WHERE name = ?1");
    select.bind_text(1, row.name);
    EDGESWEEP_ASSERT(select.step());
    device_id = select.column_int(0);
  });
  return device_id;
}

std::vector<DeviceRow> Store::devices() const {
  Database& database = checked(handle_.get());
  Statement statement(database, "list devices",
                      "SELECT id, name, address, hardware_json, last_seen, status FROM devices ORDER BY id");
  std::vector<DeviceRow> rows;
  while (statement.step()) {
    DeviceRow row;
    row.id = statement.column_int(0);
    row.name = statement.column_text(1);
    row.address = statement.column_text(2);
    row.hardware = parse_stored_json(database, fmt::format("device '{}' hardware_json", row.name),
                                     statement.column_text(3));
    row.last_seen = statement.column_text(4);
    row.status = statement.column_text(5);
    rows.push_back(std::move(row));
  }
  return rows;
}

int64_t Store::add_measurement(const MeasurementRow& row) {
  Database& database = writable(handle_.get(), "add measurement");
  Statement statement(
      database, fmt::format("add measurement of artifact {} on device {} at batch {}", row.artifact_id, row.device_id,
                            row.batch),
      "INSERT INTO measurements (artifact_id, device_id, batch, latency_min_ms, latency_mean_ms, latency_p50_ms, "
      "latency_p90_ms, latency_p99_ms, latency_std_ms, fps, peak_rss_mb, accuracy, raw_json, created) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
  statement.bind_int(1, row.artifact_id);
  statement.bind_int(2, row.device_id);
  statement.bind_int(3, row.batch);
  // NaN is stored as NULL and read back as NaN.
  const double figures[] = {row.latency_min_ms, row.latency_mean_ms, row.latency_p50_ms, row.latency_p90_ms,
                            row.latency_p99_ms, row.latency_std_ms,  row.fps,            row.peak_rss_mb,
                            row.accuracy};
  for (int i = 0; i < 9; ++i) statement.bind_double(4 + i, figures[i]);
  statement.bind_text(13, row.raw.dump());
  statement.bind_text(14, now_utc());
  statement.run();
  return sqlite3_last_insert_rowid(database.connection.get());
}

std::vector<MeasurementRow> Store::measurements(int64_t experiment_id) const {
  Database& database = checked(handle_.get());
  Statement statement(
      database, fmt::format("list measurements of experiment {}", experiment_id),
      "SELECT measurements.id, measurements.artifact_id, measurements.device_id, devices.name, measurements.batch, "
      "measurements.latency_min_ms, measurements.latency_mean_ms, measurements.latency_p50_ms, "
      "measurements.latency_p90_ms, measurements.latency_p99_ms, measurements.latency_std_ms, measurements.fps, "
      "measurements.peak_rss_mb, measurements.accuracy, measurements.raw_json, measurements.created "
      "FROM measurements JOIN devices ON devices.id = measurements.device_id "
      "JOIN artifacts ON artifacts.id = measurements.artifact_id JOIN trials ON trials.id = artifacts.trial_id "
      "WHERE trials.experiment_id = ?1 ORDER BY measurements.id");
  statement.bind_int(1, experiment_id);
  const auto figure = [&](int index) {
    return statement.column_is_null(index) ? std::numeric_limits<double>::quiet_NaN() : statement.column_double(index);
  };
  std::vector<MeasurementRow> rows;
  while (statement.step()) {
    MeasurementRow row;
    row.id = statement.column_int(0);
    row.artifact_id = statement.column_int(1);
    row.device_id = statement.column_int(2);
    row.device = statement.column_text(3);
    row.batch = statement.column_int(4);
    row.latency_min_ms = figure(5);
    row.latency_mean_ms = figure(6);
    row.latency_p50_ms = figure(7);
    row.latency_p90_ms = figure(8);
    row.latency_p99_ms = figure(9);
    row.latency_std_ms = figure(10);
    row.fps = figure(11);
    row.peak_rss_mb = figure(12);
    row.accuracy = figure(13);
    row.raw = parse_stored_json(database, fmt::format("measurement {} raw_json", row.id), statement.column_text(14));
    row.created = statement.column_text(15);
    rows.push_back(std::move(row));
  }
  return rows;
}

int64_t Store::register_device(const std::string& name, const std::string& address) {
  Database& database = writable(handle_.get(), "register device");
  check(!name.empty(), "store '{}': register device: the device has no name", database.path);
  const std::string step = fmt::format("register device '{}'", name);
  int64_t device_id = 0;
  transaction([&] {
    Statement upsert(database, step,
                     "INSERT INTO devices (name, address) VALUES (?1, ?2) "
                     "ON CONFLICT (name) DO UPDATE SET address = excluded.address");
    upsert.bind_text(1, name);
    upsert.bind_text(2, address);
    upsert.run();
    Statement select(database, step, "SELECT id FROM devices WHERE name = ?1");
    select.bind_text(1, name);
    EDGESWEEP_ASSERT(select.step());
    device_id = select.column_int(0);
  });
  return device_id;
}

void Store::mark_device_online(int64_t device_id, const Json& hardware) {
  Database& database = writable(handle_.get(), "mark device online");
  const std::string step = fmt::format("mark device {} online", device_id);
  const bool has_hardware = hardware.is_object() && !hardware.empty();
  Statement statement(database, step,
                      has_hardware ? "UPDATE devices SET status = 'online', last_seen = ?2, hardware_json = ?3 "
                                     "WHERE id = ?1"
                                   : "UPDATE devices SET status = 'online', last_seen = ?2 WHERE id = ?1");
  statement.bind_int(1, device_id);
  statement.bind_text(2, now_utc());
  if (has_hardware) statement.bind_text(3, hardware.dump());
  statement.run();
  check(changed_rows(database) == 1, "store '{}': {}: no device with id {}", database.path, step, device_id);
}

void Store::mark_device_offline(int64_t device_id) {
  Database& database = writable(handle_.get(), "mark device offline");
  const std::string step = fmt::format("mark device {} offline", device_id);
  Statement statement(database, step, "UPDATE devices SET status = 'offline' WHERE id = ?1");
  statement.bind_int(1, device_id);
  statement.run();
  check(changed_rows(database) == 1, "store '{}': {}: no device with id {}", database.path, step, device_id);
}

namespace {

const char* const job_columns =
    "measurement_jobs.id, measurement_jobs.artifact_id, measurement_jobs.device_id, devices.name, "
    "measurement_jobs.request_hash, measurement_jobs.request_json, measurement_jobs.status, measurement_jobs.attempts, "
    "measurement_jobs.next_attempt_at, measurement_jobs.error, measurement_jobs.created, measurement_jobs.started, "
    "measurement_jobs.finished";

MeasurementJobRow read_job(const Database& database, const Statement& statement) {
  MeasurementJobRow row;
  row.id = statement.column_int(0);
  row.artifact_id = statement.column_int(1);
  row.device_id = statement.column_int(2);
  row.device = statement.column_text(3);
  row.request_hash = statement.column_text(4);
  row.request = parse_stored_json(database, fmt::format("measurement job {} request_json", row.id),
                                  statement.column_text(5));
  row.status = job_status_from_string(statement.column_text(6));
  row.attempts = statement.column_int(7);
  row.next_attempt_at = statement.column_double(8);
  row.error = statement.column_text(9);
  row.created = statement.column_text(10);
  row.started = statement.column_text(11);
  row.finished = statement.column_text(12);
  return row;
}

/// Runs an UPDATE of one job and throws, naming the job and its status, when it changed nothing.
void update_one_job(const Store& store, const Database& database, Statement& statement, int64_t job_id,
                    const std::string& step, const char* expected) {
  statement.run();
  if (changed_rows(database) == 1) return;
  const std::optional<MeasurementJobRow> job = store.measurement_job(job_id);
  check(job.has_value(), "store '{}': {}: no measurement job with id {}", database.path, step, job_id);
  throw Error(fmt::format("store '{}': {}: the job is {}, not {}", database.path, step, to_string(job->status),
                          expected));
}

}  // namespace

int64_t Store::add_measurement_job(int64_t artifact_id, int64_t device_id, const Json& request,
                                   const std::string& request_hash) {
  Database& database = writable(handle_.get(), "add measurement job");
  const std::string step =
      fmt::format("add measurement job of artifact {} on device {}", artifact_id, device_id);
  int64_t job_id = 0;
  transaction([&] {
    Statement insert(database, step,
                     "INSERT INTO measurement_jobs (artifact_id, device_id, request_hash, request_json, status, "
                     "created) VALUES (?1, ?2, ?3, ?4, 'pending', ?5) "
                     "ON CONFLICT (artifact_id, device_id, request_hash) DO NOTHING");
    insert.bind_int(1, artifact_id);
    insert.bind_int(2, device_id);
    insert.bind_text(3, request_hash);
    insert.bind_text(4, request.dump());
    insert.bind_text(5, now_utc());
    insert.run();
    Statement select(database, step,
                     "SELECT id FROM measurement_jobs WHERE artifact_id = ?1 AND device_id = ?2 AND request_hash = ?3");
    select.bind_int(1, artifact_id);
    select.bind_int(2, device_id);
    select.bind_text(3, request_hash);
    EDGESWEEP_ASSERT(select.step());
    job_id = select.column_int(0);
  });
  return job_id;
}

std::vector<MeasurementJobRow> Store::measurement_jobs(int64_t experiment_id) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("list measurement jobs of experiment {}", experiment_id),
                      fmt::format("SELECT {} FROM measurement_jobs JOIN devices ON devices.id = measurement_jobs.device_id "
                                  "JOIN artifacts ON artifacts.id = measurement_jobs.artifact_id "
                                  "JOIN trials ON trials.id = artifacts.trial_id "
                                  "WHERE trials.experiment_id = ?1 ORDER BY measurement_jobs.id",
                                  job_columns));
  statement.bind_int(1, experiment_id);
  std::vector<MeasurementJobRow> rows;
  while (statement.step()) rows.push_back(read_job(database, statement));
  return rows;
}

std::optional<MeasurementJobRow> Store::measurement_job(int64_t job_id) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("read measurement job {}", job_id),
                      fmt::format("SELECT {} FROM measurement_jobs JOIN devices ON devices.id = "
                                  "measurement_jobs.device_id WHERE measurement_jobs.id = ?1",
                                  job_columns));
  statement.bind_int(1, job_id);
  if (!statement.step()) return std::nullopt;
  return read_job(database, statement);
}

void Store::mark_job_running(int64_t job_id) {
  Database& database = writable(handle_.get(), "mark measurement job running");
  const std::string step = fmt::format("mark measurement job {} running", job_id);
  Statement statement(database, step,
                      "UPDATE measurement_jobs SET status = 'running', attempts = attempts + 1, started = ?2, "
                      "finished = NULL WHERE id = ?1 AND status = 'pending'");
  statement.bind_int(1, job_id);
  statement.bind_text(2, now_utc());
  update_one_job(*this, database, statement, job_id, step, "pending");
}

void Store::mark_job_retry(int64_t job_id, const std::string& error, double next_attempt_at) {
  Database& database = writable(handle_.get(), "retry measurement job");
  const std::string step = fmt::format("put measurement job {} back to pending", job_id);
  Statement statement(database, step,
                      "UPDATE measurement_jobs SET status = 'pending', error = ?2, next_attempt_at = ?3, "
                      "finished = ?4 WHERE id = ?1 AND status = 'running'");
  statement.bind_int(1, job_id);
  statement.bind_text(2, error);
  statement.bind_double(3, next_attempt_at);
  statement.bind_text(4, now_utc());
  update_one_job(*this, database, statement, job_id, step, "running");
}

void Store::mark_job_failed(int64_t job_id, const std::string& error) {
  Database& database = writable(handle_.get(), "mark measurement job failed");
  const std::string step = fmt::format("mark measurement job {} failed", job_id);
  Statement statement(database, step,
                      "UPDATE measurement_jobs SET status = 'failed', error = ?2, finished = ?3 "
                      "WHERE id = ?1 AND status IN ('pending', 'running')");
  statement.bind_int(1, job_id);
  statement.bind_text(2, error);
  statement.bind_text(3, now_utc());
  update_one_job(*this, database, statement, job_id, step, "pending or running");
}

void Store::complete_measurement_job(int64_t job_id, const std::vector<MeasurementRow>& rows) {
  Database& database = writable(handle_.get(), "complete measurement job");
  const std::string step = fmt::format("mark measurement job {} done", job_id);
  transaction([&] {
    Statement statement(database, step,
                        "UPDATE measurement_jobs SET status = 'done', error = NULL, finished = ?2 "
                        "WHERE id = ?1 AND status = 'running'");
    statement.bind_int(1, job_id);
    statement.bind_text(2, now_utc());
    update_one_job(*this, database, statement, job_id, step, "running");
    for (const MeasurementRow& row : rows) add_measurement(row);
  });
}

int64_t Store::requeue_running_jobs(int64_t experiment_id) {
  Database& database = writable(handle_.get(), "requeue running measurement jobs");
  Statement statement(database, fmt::format("requeue running measurement jobs of experiment {}", experiment_id),
                      "UPDATE measurement_jobs SET status = 'pending', next_attempt_at = 0 WHERE status = 'running' "
                      "AND artifact_id IN (SELECT artifacts.id FROM artifacts JOIN trials ON trials.id = "
                      "artifacts.trial_id WHERE trials.experiment_id = ?1)");
  statement.bind_int(1, experiment_id);
  statement.run();
  return changed_rows(database);
}

int64_t Store::retry_failed_jobs(int64_t experiment_id) {
  Database& database = writable(handle_.get(), "retry failed measurement jobs");
  Statement statement(database, fmt::format("retry failed measurement jobs of experiment {}", experiment_id),
                      "UPDATE measurement_jobs SET status = 'pending', attempts = 0, next_attempt_at = 0 "
                      "WHERE status = 'failed' AND artifact_id IN (SELECT artifacts.id FROM artifacts JOIN trials "
                      "ON trials.id = artifacts.trial_id WHERE trials.experiment_id = ?1)");
  statement.bind_int(1, experiment_id);
  statement.run();
  return changed_rows(database);
}

}  // namespace edgesweep
