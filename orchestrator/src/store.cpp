// The experiment store on SQLite: RAII handles, a small prepared-statement helper, the schema migrations and the
// typed reads and writes declared in store.h.
#include "edgesweep/orchestrator/store.h"

#include <sqlite3.h>

#include <chrono>
#include <ctime>
#include <initializer_list>
#include <limits>
#include <utility>

#include <spdlog/spdlog.h>

#include "edgesweep/common/error.h"

namespace edgesweep {
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
};

constexpr int latest_schema_version = static_cast<int>(sizeof(migrations) / sizeof(migrations[0]));

struct ConnectionCloser {
  void operator()(sqlite3* connection) const { sqlite3_close_v2(connection); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};
using ConnectionPointer = std::unique_ptr<sqlite3, ConnectionCloser>;
using StatementPointer = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

/// The open database: the connection, the file name for messages, the mode and the transaction nesting state.
struct Database {
  ConnectionPointer connection;
  std::string path;
  Store::Mode mode = Store::Mode::ReadOnly;
  int transaction_depth = 0;      ///< transaction() calls in progress; only depth 0 -> 1 runs BEGIN
  bool inner_rolled_back = false;  ///< an inner transaction failed, so the outermost one must not commit
};

/// Throws Error "store '<path>': <step>: <sqlite message>".
[[noreturn]] void fail(const Database& database, const std::string& step) {
  throw Error(fmt::format("store '{}': {}: {}", database.path, step, sqlite3_errmsg(database.connection.get())));
}

/// The database behind a Store; a moved-from Store has none.
Database& checked(Database* database) {
  EDGESWEEP_ASSERT(database != nullptr);
  return *database;
}

/// The database, after refusing writes to a store opened read-only.
Database& writable(Database* database, const std::string& action) {
  Database& checked_database = checked(database);
  check(checked_database.mode == Store::Mode::ReadWrite, "store '{}' is open read-only: cannot {}",
        checked_database.path, action);
  return checked_database;
}

/// Runs SQL that returns no rows (may hold several statements).
void execute(const Database& database, const std::string& step, const char* sql) {
  if (sqlite3_exec(database.connection.get(), sql, nullptr, nullptr, nullptr) != SQLITE_OK) fail(database, step);
}

/// One prepared statement: bind by 1-based index, step, read columns by 0-based index.
class Statement {
 public:
  Statement(const Database& database, std::string step, const std::string& sql)
      : database_(database), step_(std::move(step)) {
    sqlite3_stmt* raw = nullptr;
    int result = sqlite3_prepare_v2(database_.connection.get(), sql.c_str(), static_cast<int>(sql.size() + 1),
                                    &raw, nullptr);
    statement_.reset(raw);
    if (result != SQLITE_OK) fail(database_, step_);
    EDGESWEEP_ASSERT(statement_ != nullptr);
  }

  void bind_int(int index, int64_t value) {
    check_bind(sqlite3_bind_int64(statement_.get(), index, value));
  }
  void bind_double(int index, double value) { check_bind(sqlite3_bind_double(statement_.get(), index, value)); }
  void bind_text(int index, const std::string& value) {
    check_bind(sqlite3_bind_text(statement_.get(), index, value.data(), static_cast<int>(value.size()),
                                 SQLITE_TRANSIENT));
  }
  /// Binds NULL when `value` is empty (optional times and error texts).
  void bind_text_or_null(int index, const std::string& value) {
    if (value.empty()) {
      check_bind(sqlite3_bind_null(statement_.get(), index));
    } else {
      bind_text(index, value);
    }
  }

  /// Advances to the next row; false when the statement has finished.
  bool step() {
    int result = sqlite3_step(statement_.get());
    if (result == SQLITE_ROW) return true;
    if (result == SQLITE_DONE) return false;
    fail(database_, step_);
  }

  /// Runs a statement that returns no rows.
  void run() {
    bool has_row = step();
    EDGESWEEP_ASSERT(!has_row);
  }

  /// Makes the statement ready to bind and run again.
  void reset() {
    sqlite3_reset(statement_.get());
    sqlite3_clear_bindings(statement_.get());
  }

  bool column_is_null(int index) const { return sqlite3_column_type(statement_.get(), index) == SQLITE_NULL; }
  int64_t column_int(int index) const { return sqlite3_column_int64(statement_.get(), index); }
  double column_double(int index) const { return sqlite3_column_double(statement_.get(), index); }
  /// The column as text; empty for NULL.
  std::string column_text(int index) const {
    const unsigned char* text = sqlite3_column_text(statement_.get(), index);
    if (text == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(text),
                       static_cast<size_t>(sqlite3_column_bytes(statement_.get(), index)));
  }

 private:
  void check_bind(int result) {
    if (result != SQLITE_OK) fail(database_, step_ + " (bind)");
  }

  const Database& database_;
  std::string step_;
  StatementPointer statement_;
};

/// Rows changed by the last INSERT, UPDATE or DELETE.
int64_t changed_rows(const Database& database) { return sqlite3_changes64(database.connection.get()); }

/// The current time as ISO 8601 UTC text, e.g. 2026-11-25T17:03:04Z.
std::string now_utc() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

/// Parses JSON text read back from the store; `what` names the row and column for the message.
Json parse_stored_json(const Database& database, const std::string& what, const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    throw Error(fmt::format("store '{}': {} is not valid JSON: {}", database.path, what, e.what()));
  }
}

int read_schema_version(const Database& database) {
  Statement statement(database, "read schema version", "PRAGMA user_version");
  EDGESWEEP_ASSERT(statement.step());
  return static_cast<int>(statement.column_int(0));
}

/// Sets a PRAGMA and returns the first column of its answer as text (empty when it answers nothing).
std::string set_pragma(const Database& database, const std::string& pragma) {
  Statement statement(database, "set PRAGMA " + pragma, "PRAGMA " + pragma);
  std::string answer = statement.step() ? statement.column_text(0) : std::string();
  while (statement.step()) {
  }
  return answer;
}

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

/// What the authorizer found while query() prepared its statement.
struct QueryGuard {
  std::string refused;  ///< why the statement was refused; empty when it was not
  bool is_pragma = false;
};

bool is_one_of(const char* name, std::initializer_list<const char*> candidates) {
  for (const char* candidate : candidates) {
    if (sqlite3_stricmp(name, candidate) == 0) return true;
  }
  return false;
}

/// Pragmas that only read even when given an argument (a table or index name).
bool is_inspecting_pragma(const char* name) {
  return is_one_of(name, {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
                          "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check"});
}

/// Pragmas that report a setting when given no argument (and would change it when given one).
bool is_setting_pragma(const char* name) {
  return is_one_of(name, {"journal_mode", "user_version", "schema_version", "application_id", "foreign_keys",
                          "busy_timeout", "synchronous", "page_count", "page_size", "freelist_count", "encoding",
                          "auto_vacuum", "cache_size", "temp_store", "locking_mode", "wal_autocheckpoint",
                          "query_only", "data_version", "compile_options", "database_list", "collation_list",
                          "function_list", "module_list", "pragma_list"});
}

/// Refuses, while query() prepares, what sqlite3_stmt_readonly lets through: transaction control, ATTACH and
/// DETACH, and any PRAGMA but those above (settings only when read).
int authorize_query(void* user_data, int action, const char* first, const char* second, const char*, const char*) {
  auto& guard = *static_cast<QueryGuard*>(user_data);
  switch (action) {
    case SQLITE_TRANSACTION:
    case SQLITE_SAVEPOINT:
      guard.refused = "transaction control";
      return SQLITE_DENY;
    case SQLITE_ATTACH:
    case SQLITE_DETACH:
      guard.refused = "ATTACH or DETACH";
      return SQLITE_DENY;
    case SQLITE_FUNCTION:
      // fts3_tokenizer with two arguments installs a tokenizer from a pointer value (Debian's SQLite enables it);
      // load_extension is off in the C API, refused here as well.
      if (second != nullptr && is_one_of(second, {"fts3_tokenizer", "load_extension"})) {
        guard.refused = fmt::format("the function {}()", second);
        return SQLITE_DENY;
      }
      return SQLITE_OK;
    case SQLITE_PRAGMA: {
      guard.is_pragma = true;
      bool allowed = is_inspecting_pragma(first) || (second == nullptr && is_setting_pragma(first));
      if (allowed) return SQLITE_OK;
      guard.refused = second == nullptr ? fmt::format("PRAGMA {}", first) : fmt::format("PRAGMA {} = {}", first, second);
      return SQLITE_DENY;
    }
    default:
      return SQLITE_OK;
  }
}

/// Interrupts the statement being stepped once `deadline` has passed (checked every 10,000 virtual machine steps);
/// a null deadline installs nothing.
class ProgressScope {
 public:
  ProgressScope(sqlite3* connection, const std::chrono::steady_clock::time_point* deadline)
      : connection_(connection), deadline_(deadline) {
    if (deadline_ != nullptr) sqlite3_progress_handler(connection_, 10000, &ProgressScope::past_deadline, this);
  }
  ~ProgressScope() {
    if (deadline_ != nullptr) sqlite3_progress_handler(connection_, 0, nullptr, nullptr);
  }
  ProgressScope(const ProgressScope&) = delete;
  ProgressScope& operator=(const ProgressScope&) = delete;

 private:
  static int past_deadline(void* self) {
    return std::chrono::steady_clock::now() > *static_cast<ProgressScope*>(self)->deadline_ ? 1 : 0;
  }
  sqlite3* connection_;
  const std::chrono::steady_clock::time_point* deadline_;
};

/// Installs the query authorizer for its lifetime.
class AuthorizerScope {
 public:
  AuthorizerScope(sqlite3* connection, QueryGuard& guard) : connection_(connection) {
    sqlite3_set_authorizer(connection_, authorize_query, &guard);
  }
  ~AuthorizerScope() { sqlite3_set_authorizer(connection_, nullptr, nullptr); }
  AuthorizerScope(const AuthorizerScope&) = delete;
  AuthorizerScope& operator=(const AuthorizerScope&) = delete;

 private:
  sqlite3* connection_;
};

Json column_value(sqlite3_stmt* statement, int index) {
  switch (sqlite3_column_type(statement, index)) {
    case SQLITE_INTEGER:
      return static_cast<int64_t>(sqlite3_column_int64(statement, index));
    case SQLITE_FLOAT:
      return sqlite3_column_double(statement, index);
    case SQLITE_TEXT:
      return std::string(reinterpret_cast<const char*>(sqlite3_column_text(statement, index)),
                         static_cast<size_t>(sqlite3_column_bytes(statement, index)));
    case SQLITE_BLOB:
      return fmt::format("<blob {} bytes>", sqlite3_column_bytes(statement, index));
    default:
      return nullptr;
  }
}

}  // namespace

struct Store::Handle : Database {};

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

int store_schema_version() { return latest_schema_version; }

Store Store::open(const std::filesystem::path& path, Mode mode) {
  auto handle = std::make_unique<Handle>();
  handle->path = path.string();
  handle->mode = mode;

  int flags = SQLITE_OPEN_READONLY;
  if (mode == Mode::ReadWrite) {
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

Json Store::query(const std::string& sql, double timeout_seconds) const {
  Database& database = checked(handle_.get());
  sqlite3* connection = database.connection.get();
  QueryGuard guard;
  AuthorizerScope authorizer(connection, guard);

  // Prepare the first statement; what follows it may only be white space and comments. Every refusal is the
  // statement's fault: InputError.
  sqlite3_stmt* raw = nullptr;
  const char* tail = nullptr;
  int result = sqlite3_prepare_v2(connection, sql.c_str(), static_cast<int>(sql.size() + 1), &raw, &tail);
  StatementPointer statement(raw);
  check_input(guard.refused.empty(), "store '{}': query refuses {} (only reading statements): {}", database.path,
              guard.refused, sql);
  check_input(result == SQLITE_OK, "store '{}': query: {}", database.path, sqlite3_errmsg(connection));
  check_input(statement != nullptr, "store '{}': query: no SQL statement in '{}'", database.path, sql);
  while (tail != nullptr && *tail != '\0') {
    sqlite3_stmt* next_raw = nullptr;
    const char* next_tail = nullptr;
    result = sqlite3_prepare_v2(connection, tail, -1, &next_raw, &next_tail);
    StatementPointer next(next_raw);
    check_input(result == SQLITE_OK && next == nullptr, "store '{}': query accepts one statement, got more: {}",
                database.path, sql);
    tail = next_tail;
  }
  // sqlite3_stmt_readonly counts PRAGMA reads such as "PRAGMA journal_mode" as writes; the authorizer has already
  // refused every PRAGMA that sets a value.
  check_input(guard.is_pragma || sqlite3_stmt_readonly(statement.get()) != 0,
              "store '{}': query refuses statements that write (only reading statements): {}", database.path, sql);

  // A statement that runs away (a recursive CTE without an end) is interrupted at the deadline.
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(timeout_seconds));
  ProgressScope progress(connection, timeout_seconds > 0 ? &deadline : nullptr);
  Json rows = Json::array();
  while (true) {
    result = sqlite3_step(statement.get());
    if (result == SQLITE_DONE) break;
    check_input(result != SQLITE_INTERRUPT, "store '{}': query stopped after {:g} s (its time limit): {}",
                database.path, timeout_seconds, sql);
    if (result != SQLITE_ROW) fail(database, "query");
    Json row = Json::object();
    int columns = sqlite3_column_count(statement.get());
    for (int index = 0; index < columns; ++index) {
      row[sqlite3_column_name(statement.get(), index)] = column_value(statement.get(), index);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace edgesweep
