// Tests of the SQLite experiment store: schema and migrations, typed reads and writes, transactions, the read-only
// query path and the read-only mode. Each test works in its own temporary folder.
#include "edgesweep/orchestrator/store.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <utility>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "../workers/expect_error.h"
#include "../workers/temp_folder.h"
#include "edgesweep/common/error.h"
#include "edgesweep/orchestrator/tables.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

/// Schema version 1 exactly as the first release wrote it; used to build an old file for the migration test.
const char* const schema_version_1 = R"sql(
CREATE TABLE experiments (
  id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, spec_text TEXT NOT NULL, spec_hash TEXT NOT NULL,
  status TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE trials (
  id INTEGER PRIMARY KEY, experiment_id INTEGER NOT NULL REFERENCES experiments(id), kind TEXT NOT NULL,
  config_json TEXT NOT NULL, config_hash TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  worker INTEGER NOT NULL DEFAULT -1, started TEXT, finished TEXT, error TEXT, UNIQUE (experiment_id, config_hash));
CREATE INDEX trials_by_experiment_status ON trials(experiment_id, status);
CREATE TABLE metrics (
  id INTEGER PRIMARY KEY, trial_id INTEGER NOT NULL REFERENCES trials(id), step INTEGER NOT NULL, name TEXT NOT NULL,
  value REAL);
CREATE INDEX metrics_by_trial ON metrics(trial_id, step);
CREATE TABLE artifacts (
  id INTEGER PRIMARY KEY, trial_id INTEGER NOT NULL REFERENCES trials(id), kind TEXT NOT NULL, path TEXT NOT NULL,
  sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, params INTEGER NOT NULL, macs INTEGER NOT NULL, format TEXT NOT NULL,
  metadata_json TEXT NOT NULL DEFAULT '{}', created TEXT NOT NULL);
CREATE INDEX artifacts_by_trial ON artifacts(trial_id, kind);
PRAGMA user_version = 1;
)sql";

struct RawCloser {
  void operator()(sqlite3* connection) const { sqlite3_close_v2(connection); }
};
using RawConnection = std::unique_ptr<sqlite3, RawCloser>;

/// A plain SQLite connection for setting up files the Store API cannot write (old or foreign schemas).
RawConnection open_raw(const fs::path& path) {
  sqlite3* raw = nullptr;
  int result = sqlite3_open_v2(path.string().c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  RawConnection connection(raw);
  if (result != SQLITE_OK) throw std::runtime_error("cannot open " + path.string());
  return connection;
}

/// Runs SQL on a raw connection; returns the SQLite result code.
int run_raw(sqlite3* connection, const std::string& sql) {
  return sqlite3_exec(connection, sql.c_str(), nullptr, nullptr, nullptr);
}

/// The message of the edgesweep::Error `body` throws; a test failure when it throws nothing.
template <typename Body>
std::string error_message(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected edgesweep::Error";
  return {};
}

::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "'" << text << "' does not contain '" << part << "'";
}

bool is_iso_utc(const std::string& text) {
  static const std::regex pattern(R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$)");
  return std::regex_match(text, pattern);
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
    folder_ = fs::temp_directory_path() /
              fmt::format("edgesweep-store-test-{}-{}-{}", info->test_suite_name(), info->name(), getpid());
    fs::remove_all(folder_);
  }
  void TearDown() override { fs::remove_all(folder_); }

  /// The database path, in a folder that does not exist yet.
  fs::path database_path() const { return folder_ / "results" / "experiment" / "edgesweep.db"; }

  Store open_writer() const { return Store::open(database_path(), Store::Mode::ReadWrite); }
  Store open_reader() const { return Store::open(database_path(), Store::Mode::ReadOnly); }

  /// Names of the tables, views and indexes in the file.
  static std::set<std::string> schema_objects(const Store& store) {
    std::set<std::string> names;
    for (const Json& row : store.query("SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")) {
      names.insert(row.at("name").get<std::string>());
    }
    return names;
  }

  fs::path folder_;
};

TEST_F(StoreTest, TrialStatusNamesRoundTrip) {
  for (TrialStatus status : {TrialStatus::Pending, TrialStatus::Running, TrialStatus::Done, TrialStatus::Failed}) {
    EXPECT_EQ(trial_status_from_string(to_string(status)), status);
  }
  EXPECT_STREQ(to_string(TrialStatus::Running), "running");
  EXPECT_TRUE(contains(error_message([] { trial_status_from_string("finished"); }), "'finished'"));
}

TEST_F(StoreTest, CreatesFreshFileAtLatestVersion) {
  EXPECT_EQ(store_schema_version(), 4);
  Store store = open_writer();
  EXPECT_TRUE(fs::exists(database_path()));
  EXPECT_EQ(store.schema_version(), 4);
  std::set<std::string> objects = schema_objects(store);
  for (const char* name : {"experiments", "trials", "metrics", "artifacts", "devices", "measurements",
                           "trial_results", "trials_by_experiment_status", "metrics_by_trial", "measurement_jobs",
                           "measurement_jobs_by_device_status", "workers"}) {
    EXPECT_EQ(objects.count(name), 1u) << name;
  }
  Json views = store.query("SELECT name FROM sqlite_master WHERE type = 'view'");
  ASSERT_EQ(views.size(), 1u);
  EXPECT_EQ(views[0]["name"], "trial_results");
}

TEST_F(StoreTest, WorkerRowsAreReplacedPerRankReadBackAndClearedPerExperiment) {
  Store store = open_writer();
  const int64_t experiment = store.create_experiment("e", "spec", "h");
  const int64_t other = store.create_experiment("f", "spec", "h");
  const int64_t trial = store.add_trial(experiment, "trial", Json{{"a", 1}}, "c1");
  const Json progress = {{"stage", "finetune"}, {"step", 30}};
  store.record_workers({{experiment, 2, "node2", 4321, "busy", trial, progress, 1700000000.5},
                        {experiment, 1, "node1", 1234, "idle", 0, Json::object(), 1700000001.0},
                        {other, 1, "node9", 9, "released", 0, Json::object(), 1.0}});
  std::vector<WorkerRow> rows = store.workers(experiment);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].rank, 1);  // by rank
  EXPECT_EQ(rows[0].trial_id, 0);
  EXPECT_EQ(rows[1].rank, 2);
  EXPECT_EQ(rows[1].host, "node2");
  EXPECT_EQ(rows[1].pid, 4321);
  EXPECT_EQ(rows[1].state, "busy");
  EXPECT_EQ(rows[1].trial_id, trial);
  EXPECT_EQ(rows[1].progress, progress);
  EXPECT_DOUBLE_EQ(rows[1].heard, 1700000000.5);
  EXPECT_EQ(store.query("SELECT trial_id FROM workers WHERE rank = 1 AND experiment_id = " +
                        std::to_string(experiment))[0]["trial_id"],
            nullptr);  // no task: NULL, not a dangling id
  // A rank's row is replaced, not added to.
  store.record_workers({{experiment, 2, "node2", 4321, "lost", trial, progress, 1700000009.0}});
  rows = store.workers(experiment);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].state, "lost");
  EXPECT_DOUBLE_EQ(rows[1].heard, 1700000009.0);
  // A state the store does not know is refused, and nothing of the batch is written.
  EXPECT_TRUE(contains(error_message([&] {
                         store.record_workers({{experiment, 1, "n", 1, "busy", 0, Json::object(), 2.0},
                                               {experiment, 3, "n", 1, "sleeping", 0, Json::object(), 2.0}});
                       }),
                       "unknown state 'sleeping'"));
  EXPECT_EQ(store.workers(experiment)[0].state, "idle");
  // A task that is not in the store is refused by its foreign key.
  EXPECT_ANY_THROW(store.record_workers({{experiment, 1, "n", 1, "busy", 9999, Json::object(), 2.0}}));
  store.clear_workers(experiment);
  EXPECT_TRUE(store.workers(experiment).empty());
  EXPECT_EQ(store.workers(other).size(), 1u);
  EXPECT_ANY_THROW(open_reader().record_workers({{experiment, 1, "n", 1, "idle", 0, Json::object(), 2.0}}));
}

TEST_F(StoreTest, StatusShowsTheRanksOfARunningExperimentWithTheirTasksProgress) {
  Store store = open_writer();
  const int64_t running = store.create_experiment("sweep", "spec", "h");
  store.set_experiment_status(running, "running");
  const int64_t trial = store.add_trial(running, "trial", Json{{"a", 1}}, "c1");
  const int64_t done = store.create_experiment("old", "spec", "h");
  store.set_experiment_status(done, "done");
  const Json progress = {{"trial_id", trial}, {"stage", "finetune"}, {"stage_index", 1}, {"stages", 2},
                         {"epoch", 1},        {"epochs", 2},         {"step", 30},       {"steps", 94},
                         {"seconds", 12.5}};
  store.record_workers({{running, 1, "node1", 1234, "busy", trial, progress, 1000.0},
                        {running, 2, "node2", 99, "idle", 0, Json::object(), 1003.0},
                        {done, 1, "node1", 5, "released", 0, Json::object(), 10.0}});
  const std::string text = format_status(store, 1005.0);
  EXPECT_TRUE(contains(text, "ranks of 'sweep'")) << text;
  EXPECT_TRUE(contains(text, "stage 2/2 finetune, epoch 1/2, step 30/94")) << text;
  EXPECT_TRUE(contains(text, "5 s ago")) << text;  // rank 1, heard at 1000
  EXPECT_TRUE(contains(text, "2 s ago")) << text;  // rank 2
  EXPECT_TRUE(contains(text, "node2")) << text;
  // A finished experiment without a lost rank shows no ranks; one that lost a rank shows them.
  EXPECT_FALSE(contains(text, "ranks of 'old'")) << text;
  store.record_workers({{done, 2, "node3", 7, "lost", 0, Json::object(), 10.0}});
  EXPECT_TRUE(contains(format_status(store, 1005.0), "ranks of 'old'"));
}

TEST_F(StoreTest, SetsConnectionPragmas) {
  Store store = open_writer();
  EXPECT_EQ(store.query("PRAGMA journal_mode")[0]["journal_mode"], "wal");
  EXPECT_EQ(store.query("PRAGMA foreign_keys")[0]["foreign_keys"], 1);
  EXPECT_EQ(store.query("PRAGMA synchronous")[0]["synchronous"], 1);  // NORMAL
  EXPECT_EQ(store.query("PRAGMA busy_timeout")[0]["timeout"], 5000);
  EXPECT_EQ(store.query("PRAGMA user_version")[0]["user_version"], 4);
}

TEST_F(StoreTest, MigratesVersionOneFileKeepingData) {
  fs::create_directories(database_path().parent_path());
  {
    RawConnection raw = open_raw(database_path());
    ASSERT_EQ(run_raw(raw.get(), schema_version_1), SQLITE_OK) << sqlite3_errmsg(raw.get());
    ASSERT_EQ(run_raw(raw.get(),
                      "INSERT INTO experiments VALUES (7, 'old', 'spec', 'h0', 'done', '2025-01-02T03:04:05Z');"
                      "INSERT INTO trials (id, experiment_id, kind, config_json, config_hash, status, attempts, worker)"
                      " VALUES (3, 7, 'baseline', '{\"a\":1}', 'c0', 'done', 1, 2);"
                      "INSERT INTO artifacts VALUES (5, 3, 'baseline', 'm.pt', 'ff', 100, 10, 1000, 'torchscript',"
                      " '{}', '2025-01-02T03:04:06Z');"),
              SQLITE_OK)
        << sqlite3_errmsg(raw.get());
  }
  {
    Store reader = open_reader();  // a reader may open an older file without migrating it
    EXPECT_EQ(reader.schema_version(), 1);
  }
  Store store = open_writer();
  EXPECT_EQ(store.schema_version(), 4);
  std::set<std::string> objects = schema_objects(store);
  EXPECT_EQ(objects.count("devices"), 1u);
  EXPECT_EQ(objects.count("measurement_jobs"), 1u);
  EXPECT_EQ(objects.count("measurements"), 1u);
  EXPECT_EQ(objects.count("workers"), 1u);
  std::optional<ExperimentRow> old = store.find_experiment("old");
  ASSERT_TRUE(old.has_value());
  EXPECT_EQ(old->id, 7);
  EXPECT_EQ(old->created, "2025-01-02T03:04:05Z");
  std::optional<TrialRow> trial = store.trial(3);
  ASSERT_TRUE(trial.has_value());
  EXPECT_EQ(trial->config, Json({{"a", 1}}));
  EXPECT_EQ(trial->status, TrialStatus::Done);
  Json results = store.query("SELECT * FROM trial_results");
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0]["experiment"], "old");
  EXPECT_EQ(results[0]["macs"], 1000);
}

TEST_F(StoreTest, RefusesNewerSchemaInBothModes) {
  fs::create_directories(database_path().parent_path());
  {
    RawConnection raw = open_raw(database_path());
    ASSERT_EQ(run_raw(raw.get(), "CREATE TABLE future (x); PRAGMA user_version = 9;"), SQLITE_OK);
  }
  for (Store::Mode mode : {Store::Mode::ReadWrite, Store::Mode::ReadOnly}) {
    std::string message = error_message([&] { Store::open(database_path(), mode); });
    EXPECT_TRUE(contains(message, database_path().string()));
    EXPECT_TRUE(contains(message, "schema version 9, newer than this build supports (4)"));
  }
  RawConnection raw = open_raw(database_path());  // untouched: still version 9, not converted to WAL
  sqlite3_stmt* raw_statement = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw.get(), "PRAGMA user_version", -1, &raw_statement, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(raw_statement), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(raw_statement, 0), 9);
  sqlite3_finalize(raw_statement);
}

TEST_F(StoreTest, RefusesFilesThatAreNotStores) {
  fs::create_directories(database_path().parent_path());
  {
    RawConnection raw = open_raw(database_path());
    ASSERT_EQ(run_raw(raw.get(), "CREATE TABLE unrelated (x)"), SQLITE_OK);
  }
  for (Store::Mode mode : {Store::Mode::ReadWrite, Store::Mode::ReadOnly}) {
    EXPECT_TRUE(contains(error_message([&] { Store::open(database_path(), mode); }), "is not an edgesweep store"));
  }

  fs::path empty = folder_ / "empty.db";
  open_raw(empty);  // a valid, empty SQLite file
  EXPECT_TRUE(contains(error_message([&] { Store::open(empty, Store::Mode::ReadOnly); }), "not an edgesweep store"));

  fs::path text = folder_ / "notes.db";
  std::ofstream(text) << "this is not a database file, it is plain text that is long enough to be a header\n";
  std::string message = error_message([&] { Store::open(text, Store::Mode::ReadWrite); });
  EXPECT_TRUE(contains(message, text.string()));
  EXPECT_TRUE(contains(message, "file is not a database"));
}

TEST_F(StoreTest, ReadOnlyRefusesMissingFile) {
  std::string message = error_message([&] { open_reader(); });
  EXPECT_TRUE(contains(message, fmt::format("cannot open store '{}'", database_path().string())));
  EXPECT_FALSE(fs::exists(database_path()));
}

TEST_F(StoreTest, ExperimentsRoundTrip) {
  Store store = open_writer();
  int64_t first = store.create_experiment("resnet-prune", "[experiment]\nname = 'a'\n", "hash-a");
  int64_t second = store.create_experiment("mobilenet-quant", "spec b", "hash-b");
  EXPECT_NE(first, second);

  std::optional<ExperimentRow> row = store.find_experiment("resnet-prune");
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(row->id, first);
  EXPECT_EQ(row->spec_text, "[experiment]\nname = 'a'\n");
  EXPECT_EQ(row->spec_hash, "hash-a");
  EXPECT_EQ(row->status, "running");
  EXPECT_TRUE(is_iso_utc(row->created)) << row->created;
  EXPECT_FALSE(store.find_experiment("missing").has_value());

  store.set_experiment_status(second, "done");
  std::vector<ExperimentRow> all = store.experiments();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "resnet-prune");
  EXPECT_EQ(all[1].name, "mobilenet-quant");
  EXPECT_EQ(all[1].status, "done");

  std::string duplicate = error_message([&] { store.create_experiment("resnet-prune", "x", "y"); });
  EXPECT_TRUE(contains(duplicate, fmt::format("store '{}'", database_path().string())));
  EXPECT_TRUE(contains(duplicate, "create experiment 'resnet-prune'"));
  EXPECT_TRUE(contains(duplicate, "UNIQUE constraint failed: experiments.name"));
  EXPECT_TRUE(contains(error_message([&] { store.set_experiment_status(first, "paused"); }), "'paused'"));
  EXPECT_TRUE(contains(error_message([&] { store.set_experiment_status(999, "done"); }), "no experiment with id 999"));
}

TEST_F(StoreTest, AddTrialDedupesByConfigHash) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  int64_t other_experiment = store.create_experiment("f", "spec", "h");
  Json config = {{"method", "prune"}, {"sparsity", 0.5}};

  int64_t trial = store.add_trial(experiment, "trial", config, "cfg-1");
  EXPECT_EQ(store.add_trial(experiment, "trial", {{"different", true}}, "cfg-1"), trial);
  int64_t baseline = store.add_trial(experiment, "baseline", Json::object(), "cfg-0");
  EXPECT_NE(baseline, trial);
  int64_t elsewhere = store.add_trial(other_experiment, "trial", config, "cfg-1");
  EXPECT_NE(elsewhere, trial);

  std::vector<TrialRow> trials = store.trials(experiment);
  ASSERT_EQ(trials.size(), 2u);
  EXPECT_EQ(trials[0].id, trial);
  EXPECT_EQ(trials[0].config, config);  // the first insert wins
  EXPECT_EQ(trials[0].config_hash, "cfg-1");
  EXPECT_EQ(trials[0].kind, "trial");
  EXPECT_EQ(trials[0].status, TrialStatus::Pending);
  EXPECT_EQ(trials[0].attempts, 0);
  EXPECT_EQ(trials[0].worker, -1);
  EXPECT_EQ(trials[0].started, "");
  EXPECT_EQ(trials[1].kind, "baseline");
  EXPECT_EQ(store.trials(other_experiment).size(), 1u);
  EXPECT_FALSE(store.trial(12345).has_value());

  std::string message = error_message([&] { store.add_trial(404, "trial", config, "cfg-9"); });
  EXPECT_TRUE(contains(message, "add trial cfg-9 to experiment 404"));
  EXPECT_TRUE(contains(message, "FOREIGN KEY constraint failed"));
}

TEST_F(StoreTest, StatusTransitionsCountAttempts) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  int64_t id = store.add_trial(experiment, "trial", {{"x", 1}}, "cfg");

  store.mark_running(id, 3);
  TrialRow row = *store.trial(id);
  EXPECT_EQ(row.status, TrialStatus::Running);
  EXPECT_EQ(row.attempts, 1);
  EXPECT_EQ(row.worker, 3);
  EXPECT_TRUE(is_iso_utc(row.started)) << row.started;
  EXPECT_EQ(row.finished, "");

  store.mark_failed(id, "CUDA out of memory");
  row = *store.trial(id);
  EXPECT_EQ(row.status, TrialStatus::Failed);
  EXPECT_EQ(row.error, "CUDA out of memory");
  EXPECT_TRUE(is_iso_utc(row.finished)) << row.finished;

  store.mark_pending(id);
  row = *store.trial(id);
  EXPECT_EQ(row.status, TrialStatus::Pending);
  EXPECT_EQ(row.error, "CUDA out of memory");  // kept for reports until the next attempt
  EXPECT_EQ(row.attempts, 1);

  store.mark_running(id, 5);
  row = *store.trial(id);
  EXPECT_EQ(row.attempts, 2);
  EXPECT_EQ(row.worker, 5);
  EXPECT_EQ(row.error, "");
  EXPECT_EQ(row.finished, "");

  store.mark_done(id);
  row = *store.trial(id);
  EXPECT_EQ(row.status, TrialStatus::Done);
  EXPECT_TRUE(is_iso_utc(row.finished));
  EXPECT_EQ(row.attempts, 2);

  EXPECT_TRUE(contains(error_message([&] { store.mark_pending(id); }), "the trial is done"));
  EXPECT_EQ(store.trial(id)->status, TrialStatus::Done);
  EXPECT_TRUE(contains(error_message([&] { store.mark_running(999, 0); }), "no trial with id 999"));
  EXPECT_TRUE(contains(error_message([&] { store.mark_done(999); }), "no trial with id 999"));
  EXPECT_TRUE(contains(error_message([&] { store.mark_failed(999, "x"); }), "no trial with id 999"));
  EXPECT_TRUE(contains(error_message([&] { store.mark_pending(999); }), "no trial with id 999"));
}

TEST_F(StoreTest, RequeueRunningResetsOnlyRunningTrialsOfTheExperiment) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  int64_t other = store.create_experiment("f", "spec", "h");
  int64_t running_a = store.add_trial(experiment, "trial", Json::object(), "a");
  int64_t running_b = store.add_trial(experiment, "trial", Json::object(), "b");
  int64_t done = store.add_trial(experiment, "trial", Json::object(), "c");
  int64_t pending = store.add_trial(experiment, "trial", Json::object(), "d");
  int64_t running_elsewhere = store.add_trial(other, "trial", Json::object(), "a");
  for (int64_t id : {running_a, running_b, done, running_elsewhere}) store.mark_running(id, 1);
  store.mark_done(done);

  EXPECT_EQ(store.requeue_running(experiment), 2);
  EXPECT_EQ(store.trial(running_a)->status, TrialStatus::Pending);
  EXPECT_EQ(store.trial(running_a)->attempts, 1);
  EXPECT_EQ(store.trial(running_b)->status, TrialStatus::Pending);
  EXPECT_EQ(store.trial(done)->status, TrialStatus::Done);
  EXPECT_EQ(store.trial(pending)->status, TrialStatus::Pending);
  EXPECT_EQ(store.trial(running_elsewhere)->status, TrialStatus::Running);
  EXPECT_EQ(store.requeue_running(experiment), 0);
}

TEST_F(StoreTest, MetricsRoundTrip) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  int64_t trial = store.add_trial(experiment, "trial", Json::object(), "cfg");
  int64_t other = store.add_trial(experiment, "trial", Json::object(), "cfg-2");
  store.add_metrics({{trial, 0, "loss", 2.25},
                     {trial, 1, "loss", 1.5},
                     {trial, -1, "accuracy", 0.8125},
                     {trial, -1, "diverged_loss", std::nan("")},
                     {other, -1, "accuracy", 0.5}});
  store.add_metrics({});

  std::vector<MetricRow> rows = store.metrics(trial);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].step, -1);
  EXPECT_EQ(rows[0].name, "accuracy");
  EXPECT_DOUBLE_EQ(rows[0].value, 0.8125);
  EXPECT_EQ(rows[1].name, "diverged_loss");
  EXPECT_TRUE(std::isnan(rows[1].value));
  EXPECT_EQ(rows[2].step, 0);
  EXPECT_DOUBLE_EQ(rows[2].value, 2.25);
  EXPECT_EQ(rows[3].step, 1);
  EXPECT_DOUBLE_EQ(rows[3].value, 1.5);
  EXPECT_EQ(rows[3].trial_id, trial);
  EXPECT_EQ(store.metrics(other).size(), 1u);

  // One bad row rolls the whole batch back.
  std::string message = error_message([&] { store.add_metrics({{trial, 2, "loss", 1.0}, {777, 2, "loss", 1.0}}); });
  EXPECT_TRUE(contains(message, "FOREIGN KEY constraint failed"));
  EXPECT_TRUE(contains(message, "of trial 777"));
  EXPECT_EQ(store.metrics(trial).size(), 4u);
}

TEST_F(StoreTest, ArtifactsRoundTripWithMetadata) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  int64_t trial = store.add_trial(experiment, "trial", Json::object(), "cfg");
  ArtifactRow artifact;
  artifact.trial_id = trial;
  artifact.kind = "model";
  artifact.path = "trials/1/model.pt";
  artifact.sha256 = std::string(64, 'a');
  artifact.bytes = 5'000'000'000;  // beyond 32 bits
  artifact.params = 11'689'512;
  artifact.macs = 1'818'228'160;
  artifact.format = "torchscript";
  artifact.metadata = {{"input_shape", {1, 3, 224, 224}}, {"quantized", false}, {"note", "ünïcode"}};
  int64_t id = store.add_artifact(artifact);

  std::vector<ArtifactRow> rows = store.artifacts(trial);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id, id);
  EXPECT_EQ(rows[0].trial_id, trial);
  EXPECT_EQ(rows[0].kind, "model");
  EXPECT_EQ(rows[0].path, "trials/1/model.pt");
  EXPECT_EQ(rows[0].sha256, artifact.sha256);
  EXPECT_EQ(rows[0].bytes, 5'000'000'000);
  EXPECT_EQ(rows[0].params, 11'689'512);
  EXPECT_EQ(rows[0].macs, 1'818'228'160);
  EXPECT_EQ(rows[0].format, "torchscript");
  EXPECT_EQ(rows[0].metadata, artifact.metadata);
  EXPECT_TRUE(store.artifacts(trial + 1).empty());

  Json created = store.query("SELECT created FROM artifacts");
  EXPECT_TRUE(is_iso_utc(created[0]["created"].get<std::string>()));

  artifact.trial_id = 4242;
  EXPECT_TRUE(contains(error_message([&] { store.add_artifact(artifact); }), "FOREIGN KEY constraint failed"));
}

TEST_F(StoreTest, FindArtifactByConfigHash) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  int64_t other_experiment = store.create_experiment("f", "spec", "h");
  int64_t baseline = store.add_trial(experiment, "baseline", Json::object(), "base-hash");
  int64_t trial = store.add_trial(experiment, "trial", Json::object(), "trial-hash");
  ArtifactRow artifact;
  artifact.trial_id = baseline;
  artifact.kind = "baseline";
  artifact.path = "baseline/old.pt";
  artifact.format = "torchscript";
  store.add_artifact(artifact);
  artifact.path = "baseline/new.pt";
  artifact.metadata = {{"version", 2}};
  int64_t newest = store.add_artifact(artifact);
  artifact.trial_id = trial;
  artifact.kind = "model";
  artifact.path = "trial/model.pt";
  store.add_artifact(artifact);

  std::optional<ArtifactRow> found = store.find_artifact(experiment, "base-hash", "baseline");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->id, newest);
  EXPECT_EQ(found->path, "baseline/new.pt");
  EXPECT_EQ(found->metadata, Json({{"version", 2}}));
  EXPECT_EQ(store.find_artifact(experiment, "trial-hash", "model")->path, "trial/model.pt");
  EXPECT_FALSE(store.find_artifact(experiment, "base-hash", "model").has_value());
  EXPECT_FALSE(store.find_artifact(experiment, "unknown-hash", "baseline").has_value());
  EXPECT_FALSE(store.find_artifact(other_experiment, "base-hash", "baseline").has_value());
}

TEST_F(StoreTest, TransactionRollsBackWhenBodyThrows) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("kept", "spec", "h");
  EXPECT_THROW(store.transaction([&] {
    store.create_experiment("lost", "spec", "h");
    int64_t trial = store.add_trial(experiment, "trial", Json::object(), "cfg");
    store.add_metrics({{trial, -1, "accuracy", 0.9}});
    throw std::runtime_error("trial crashed");
  }),
               std::runtime_error);
  EXPECT_FALSE(store.find_experiment("lost").has_value());
  EXPECT_TRUE(store.trials(experiment).empty());
  EXPECT_EQ(store.query("SELECT count(*) AS n FROM metrics")[0]["n"], 0);

  // The store is usable afterwards, and a transaction that does not throw commits.
  store.transaction([&] { store.create_experiment("committed", "spec", "h"); });
  EXPECT_TRUE(open_reader().find_experiment("committed").has_value());
}

TEST_F(StoreTest, TransactionTakesWriteLockAtBegin) {
  Store store = open_writer();
  RawConnection other = open_raw(database_path());  // no busy timeout: fails at once when locked
  store.transaction([&] {
    EXPECT_EQ(run_raw(other.get(), "BEGIN IMMEDIATE"), SQLITE_BUSY);
  });
  EXPECT_EQ(run_raw(other.get(), "BEGIN IMMEDIATE"), SQLITE_OK);
  EXPECT_EQ(run_raw(other.get(), "ROLLBACK"), SQLITE_OK);
}

TEST_F(StoreTest, NestedTransactionsCommitOnlyAtTheOutermost) {
  Store store = open_writer();
  store.transaction([&] {
    store.create_experiment("outer", "spec", "h");
    store.transaction([&] { store.create_experiment("inner", "spec", "h"); });
    // The inner transaction has returned, yet another connection still sees nothing.
    EXPECT_TRUE(open_reader().experiments().empty());
  });
  std::vector<ExperimentRow> committed = open_reader().experiments();
  ASSERT_EQ(committed.size(), 2u);
  EXPECT_EQ(committed[1].name, "inner");
}

TEST_F(StoreTest, InnerTransactionFailureRollsBackTheOutermost) {
  Store store = open_writer();
  EXPECT_THROW(store.transaction([&] {
    store.create_experiment("outer", "spec", "h");
    store.transaction([&] {
      store.create_experiment("inner", "spec", "h");
      throw std::runtime_error("inner failed");
    });
  }),
               std::runtime_error);
  EXPECT_TRUE(store.experiments().empty());

  // An inner failure caught inside the outer body still cannot be committed half-done.
  std::string message = error_message([&] {
    store.transaction([&] {
      store.create_experiment("outer", "spec", "h");
      try {
        store.transaction([&] { throw std::runtime_error("inner failed"); });
      } catch (const std::runtime_error&) {
      }
    });
  });
  EXPECT_TRUE(contains(message, "an inner transaction failed"));
  EXPECT_TRUE(store.experiments().empty());

  store.transaction([&] { store.create_experiment("after", "spec", "h"); });
  EXPECT_EQ(store.experiments().size(), 1u);
}

TEST_F(StoreTest, QueryReturnsTypedValues) {
  Store store = open_writer();
  Json rows = store.query(
      "SELECT 9000000000 AS whole, 2.5 AS fraction, 'text' AS words, NULL AS missing, x'00ff10' AS bytes "
      "UNION ALL SELECT -1, 0.0, '', NULL, x'' ;  -- trailing comment\n");
  ASSERT_TRUE(rows.is_array());
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(rows[0]["whole"].is_number_integer());
  EXPECT_EQ(rows[0]["whole"].get<int64_t>(), 9'000'000'000);
  EXPECT_TRUE(rows[0]["fraction"].is_number_float());
  EXPECT_DOUBLE_EQ(rows[0]["fraction"].get<double>(), 2.5);
  EXPECT_EQ(rows[0]["words"], "text");
  EXPECT_TRUE(rows[0]["missing"].is_null());
  EXPECT_EQ(rows[0]["bytes"], "<blob 3 bytes>");
  EXPECT_EQ(rows[1]["whole"], -1);
  EXPECT_EQ(rows[1]["words"], "");
  EXPECT_EQ(store.query("SELECT * FROM experiments"), Json::array());
  EXPECT_EQ(store.query("PRAGMA table_info(trials)").size(), 11u);

  int64_t experiment = store.create_experiment("e", "spec", "h");
  int64_t trial = store.add_trial(experiment, "trial", Json::object(), "cfg");
  store.add_metrics({{trial, -1, "accuracy", 0.75}, {trial, 0, "loss", 3.0}});
  ArtifactRow artifact;
  artifact.trial_id = trial;
  artifact.kind = "model";
  artifact.bytes = 123;
  artifact.params = 45;
  artifact.macs = 678;
  store.add_artifact(artifact);
  Json results = store.query("SELECT * FROM trial_results");
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0]["experiment"], "e");
  EXPECT_EQ(results[0]["trial_id"], trial);
  EXPECT_EQ(results[0]["kind"], "trial");
  EXPECT_EQ(results[0]["status"], "pending");
  EXPECT_EQ(results[0]["bytes"], 123);
  EXPECT_EQ(results[0]["params"], 45);
  EXPECT_EQ(results[0]["macs"], 678);
  EXPECT_EQ(Json::parse(results[0]["final_metrics"].get<std::string>()), Json({{"accuracy", 0.75}}));

  std::string message = error_message([&] { store.query("SELECT * FROM no_such_table"); });
  EXPECT_TRUE(contains(message, "query: no such table: no_such_table"));
}

TEST_F(StoreTest, QueryRefusesAnythingButOneReadingStatement) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  store.add_trial(experiment, "trial", Json::object(), "cfg");
  const std::string writes = "refuses statements that write";
  const std::string several = "accepts one statement";
  const std::pair<const char*, std::string> refused[] = {
      {"INSERT INTO experiments (name, spec_text, spec_hash, status, created) VALUES ('x', '', '', '', '')", writes},
      {"DELETE FROM trials", writes},
      {"UPDATE experiments SET name = 'y'", writes},
      {"DROP TABLE metrics", writes},
      {"CREATE TABLE extra (x)", writes},
      {"CREATE TEMP TABLE extra (x)", writes},
      {"VACUUM", writes},
      {"SELECT 1; SELECT 2", several},
      {"SELECT 1; DELETE FROM trials", several},
      {"BEGIN", "refuses transaction control"},
      {"COMMIT", "refuses transaction control"},
      {"SAVEPOINT s", "refuses transaction control"},
      {"ATTACH DATABASE ':memory:' AS other", "refuses ATTACH or DETACH"},
      {"PRAGMA user_version = 5", "refuses PRAGMA user_version = 5"},
      {"PRAGMA foreign_keys = OFF", "refuses PRAGMA foreign_keys = OFF"},
      {"PRAGMA journal_mode = DELETE", "refuses PRAGMA journal_mode = DELETE"},
      {"PRAGMA wal_checkpoint", "refuses PRAGMA wal_checkpoint"},
      {"", "no SQL statement"},
      {"  -- only a comment", "no SQL statement"},
      {"SELECT fts3_tokenizer('simple')", "refuses the function fts3_tokenizer()"},
      {"SELECT load_extension('x')", "refuses the function load_extension()"},
      {"SELEKT 1", "near \"SELEKT\": syntax error"},
  };
  for (const auto& [sql, expected] : refused) {
    // Each is the statement's fault: bad input.
    expect_error<InputError>([&, text = std::string(sql)] { store.query(text); }, {expected});
  }
  expect_error<InputError>(
      [&] { store.query("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n", 0.2); },
      {"query stopped after 0.2 s (its time limit)"});
  EXPECT_EQ(store.trials(experiment).size(), 1u);
  EXPECT_EQ(store.schema_version(), 4);
  EXPECT_EQ(store.query("PRAGMA journal_mode")[0]["journal_mode"], "wal");
  EXPECT_EQ(store.query("PRAGMA foreign_keys")[0]["foreign_keys"], 1);
  // The connection is left in autocommit mode: a transaction still works.
  store.transaction([&] { store.create_experiment("f", "spec", "h"); });
  EXPECT_EQ(store.experiments().size(), 2u);
}

TEST_F(StoreTest, ReadOnlyStoreRefusesWrites) {
  int64_t experiment = 0;
  int64_t trial = 0;
  {
    Store writer = open_writer();
    experiment = writer.create_experiment("e", "spec", "h");
    trial = writer.add_trial(experiment, "trial", {{"k", "v"}}, "cfg");
  }
  Store store = open_reader();
  EXPECT_EQ(store.schema_version(), 4);
  ArtifactRow artifact;
  artifact.trial_id = trial;
  std::vector<std::function<void()>> writes = {
      [&] { store.create_experiment("x", "spec", "h"); },
      [&] { store.set_experiment_status(experiment, "done"); },
      [&] { store.add_trial(experiment, "trial", Json::object(), "other"); },
      [&] { store.mark_running(trial, 0); },
      [&] { store.mark_done(trial); },
      [&] { store.mark_failed(trial, "x"); },
      [&] { store.mark_pending(trial); },
      [&] { store.requeue_running(experiment); },
      [&] { store.add_metrics({{trial, 0, "loss", 1.0}}); },
      [&] { store.add_artifact(artifact); },
  };
  for (const auto& write : writes) {
    std::string message = error_message(write);
    EXPECT_TRUE(contains(message, fmt::format("store '{}' is open read-only: cannot", database_path().string())));
  }
  // Reads work, also inside a transaction (a consistent snapshot).
  store.transaction([&] {
    EXPECT_EQ(store.experiments().size(), 1u);
    EXPECT_EQ(store.trial(trial)->config, Json({{"k", "v"}}));
  });
  EXPECT_EQ(store.trials(experiment)[0].status, TrialStatus::Pending);
  EXPECT_EQ(store.query("PRAGMA journal_mode")[0]["journal_mode"], "wal");
}

TEST_F(StoreTest, ReopeningKeepsEverything) {
  int64_t experiment = 0;
  int64_t trial = 0;
  {
    Store store = open_writer();
    experiment = store.create_experiment("e", "spec text", "spec-hash");
    trial = store.add_trial(experiment, "trial", {{"sparsity", 0.25}}, "cfg");
    store.mark_running(trial, 2);
    store.mark_done(trial);
    store.add_metrics({{trial, -1, "accuracy", 0.5}});
    ArtifactRow artifact;
    artifact.trial_id = trial;
    artifact.kind = "model";
    artifact.path = "m.pt";
    artifact.metadata = {{"a", 1}};
    store.add_artifact(artifact);
    store.set_experiment_status(experiment, "done");
  }
  for (Store::Mode mode : {Store::Mode::ReadWrite, Store::Mode::ReadOnly}) {
    Store store = Store::open(database_path(), mode);
    EXPECT_EQ(store.schema_version(), 4);
    ASSERT_TRUE(store.find_experiment("e").has_value());
    EXPECT_EQ(store.find_experiment("e")->status, "done");
    EXPECT_EQ(store.find_experiment("e")->spec_text, "spec text");
    TrialRow row = *store.trial(trial);
    EXPECT_EQ(row.status, TrialStatus::Done);
    EXPECT_EQ(row.attempts, 1);
    EXPECT_EQ(row.worker, 2);
    EXPECT_EQ(row.config, Json({{"sparsity", 0.25}}));
    ASSERT_EQ(store.metrics(trial).size(), 1u);
    EXPECT_DOUBLE_EQ(store.metrics(trial)[0].value, 0.5);
    EXPECT_EQ(store.find_artifact(experiment, "cfg", "model")->metadata, Json({{"a", 1}}));
  }
}

TEST_F(StoreTest, StoreIsMovable) {
  Store store = open_writer();
  int64_t experiment = store.create_experiment("e", "spec", "h");
  Store moved(std::move(store));
  EXPECT_EQ(moved.find_experiment("e")->id, experiment);

  fs::path other_path = folder_ / "other.db";
  Store other = Store::open(other_path, Store::Mode::ReadWrite);
  other.create_experiment("other", "spec", "h");
  other = std::move(moved);  // closes other.db, takes over the first file
  EXPECT_EQ(other.experiments().size(), 1u);
  EXPECT_EQ(other.experiments()[0].name, "e");
  EXPECT_EQ(Store::open(other_path, Store::Mode::ReadOnly).experiments()[0].name, "other");
}

TEST_F(StoreTest, UpsertDeviceInsertsOnceAndUpdatesByName) {
  Store store = open_writer();
  DeviceRow device;
  device.name = "board-a";
  device.address = "127.0.0.1:7070";
  device.hardware = {{"cpu", "Cortex-A57"}, {"cores", 4}};
  const int64_t id = store.upsert_device(device);
  std::vector<DeviceRow> rows = store.devices();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].id, id);
  EXPECT_EQ(rows[0].name, "board-a");
  EXPECT_EQ(rows[0].address, "127.0.0.1:7070");
  EXPECT_EQ(rows[0].hardware, device.hardware);
  EXPECT_TRUE(is_iso_utc(rows[0].last_seen)) << rows[0].last_seen;

  device.address = "127.0.0.1:7071";
  device.hardware = {{"cpu", "Cortex-A57"}, {"cores", 2}};
  device.last_seen = "2026-01-02T03:04:05Z";
  EXPECT_EQ(store.upsert_device(device), id) << "the same name is the same device";
  DeviceRow other;
  other.name = "board-b";
  const int64_t other_id = store.upsert_device(other);
  EXPECT_NE(other_id, id);
  rows = store.devices();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].address, "127.0.0.1:7071");
  EXPECT_EQ(rows[0].hardware["cores"], 2);
  EXPECT_EQ(rows[0].last_seen, "2026-01-02T03:04:05Z");
  EXPECT_EQ(rows[1].name, "board-b");
  EXPECT_EQ(rows[1].hardware, Json::object());

  EXPECT_TRUE(contains(error_message([&] { store.upsert_device(DeviceRow{}); }), "no name"));
  Store reader = open_reader();
  EXPECT_EQ(reader.devices().size(), 2u);
  EXPECT_TRUE(contains(error_message([&] { reader.upsert_device(device); }), "read-only"));
}

TEST_F(StoreTest, MeasurementsRoundTripPerExperimentWithNullsAsNaN) {
  Store store = open_writer();
  const int64_t first = store.create_experiment("first", "spec", "h");
  const int64_t second = store.create_experiment("second", "spec", "h");
  const auto add_artifact = [&](int64_t experiment, const std::string& hash) {
    ArtifactRow artifact;
    artifact.trial_id = store.add_trial(experiment, "trial", Json::object(), hash);
    artifact.kind = "model";
    artifact.path = hash + ".pt";
    artifact.sha256 = std::string(64, 'b');
    artifact.format = "torchscript";
    return store.add_artifact(artifact);
  };
  const int64_t artifact_1 = add_artifact(first, "one");
  const int64_t artifact_2 = add_artifact(second, "two");
  DeviceRow device;
  device.name = "board";
  const int64_t device_id = store.upsert_device(device);

  MeasurementRow full;
  full.artifact_id = artifact_1;
  full.device_id = device_id;
  full.batch = 8;
  full.latency_min_ms = 1.0;
  full.latency_mean_ms = 1.5;
  full.latency_p50_ms = 1.4;
  full.latency_p90_ms = 2.0;
  full.latency_p99_ms = 3.0;
  full.latency_std_ms = 0.25;
  full.fps = 5333.3;
  full.peak_rss_mb = 123.5;
  full.accuracy = 91.25;
  full.raw = {{"runs_ms", {1.0, 1.4, 2.0}}, {"load_ms", 12.5}};
  const int64_t full_id = store.add_measurement(full);
  MeasurementRow sparse;  // only a latency: the rest stays NULL
  sparse.artifact_id = artifact_1;
  sparse.device_id = device_id;
  sparse.latency_p50_ms = 7.0;
  store.add_measurement(sparse);
  MeasurementRow elsewhere = full;
  elsewhere.artifact_id = artifact_2;
  store.add_measurement(elsewhere);

  const std::vector<MeasurementRow> rows = store.measurements(first);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].id, full_id);
  EXPECT_EQ(rows[0].artifact_id, artifact_1);
  EXPECT_EQ(rows[0].device_id, device_id);
  EXPECT_EQ(rows[0].device, "board");
  EXPECT_EQ(rows[0].batch, 8);
  EXPECT_EQ(rows[0].latency_min_ms, 1.0);
  EXPECT_EQ(rows[0].latency_mean_ms, 1.5);
  EXPECT_EQ(rows[0].latency_p50_ms, 1.4);
  EXPECT_EQ(rows[0].latency_p90_ms, 2.0);
  EXPECT_EQ(rows[0].latency_p99_ms, 3.0);
  EXPECT_EQ(rows[0].latency_std_ms, 0.25);
  EXPECT_EQ(rows[0].fps, 5333.3);
  EXPECT_EQ(rows[0].peak_rss_mb, 123.5);
  EXPECT_EQ(rows[0].accuracy, 91.25);
  EXPECT_EQ(rows[0].raw, full.raw);
  EXPECT_TRUE(is_iso_utc(rows[0].created)) << rows[0].created;
  EXPECT_EQ(rows[1].batch, 1);
  EXPECT_EQ(rows[1].latency_p50_ms, 7.0);
  EXPECT_TRUE(std::isnan(rows[1].latency_p90_ms));
  EXPECT_TRUE(std::isnan(rows[1].fps));
  EXPECT_TRUE(std::isnan(rows[1].accuracy));
  EXPECT_EQ(store.query("SELECT count(*) AS n FROM measurements WHERE accuracy IS NULL")[0]["n"], 1);
  ASSERT_EQ(store.measurements(second).size(), 1u);
  EXPECT_EQ(store.measurements(second)[0].artifact_id, artifact_2);
  EXPECT_TRUE(store.measurements(second + 1).empty());

  MeasurementRow dangling = full;
  dangling.device_id = 4242;
  EXPECT_TRUE(contains(error_message([&] { store.add_measurement(dangling); }), "FOREIGN KEY constraint failed"));
  dangling = full;
  dangling.artifact_id = 4242;
  EXPECT_TRUE(contains(error_message([&] { store.add_measurement(dangling); }), "FOREIGN KEY constraint failed"));
}

TEST(StoreWritable, ARelativePathWhoseFoldersDoNotExistYetIsCreated) {
  // The default results folder is relative ("results/<name>") and does not exist before the first run.
  TempFolder folder("store-relative");
  const std::filesystem::path before = std::filesystem::current_path();
  std::filesystem::current_path(folder.path());
  try {
    Store::check_writable("results/first/edgesweep.db");
    Store store = Store::open("results/first/edgesweep.db", Store::Mode::ReadWrite);
    EXPECT_TRUE(std::filesystem::exists(folder / "results" / "first" / "edgesweep.db"));
  } catch (...) {
    std::filesystem::current_path(before);
    throw;
  }
  std::filesystem::current_path(before);
}

}  // namespace
}  // namespace edgesweep
