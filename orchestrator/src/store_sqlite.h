// What the store's files share: the SQLite connection and statement handles, the helpers that turn SQLite's
// failures into errors naming the file, and the schema. Internal to the orchestrator library.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <string>

#include "edgesweep/common/error.h"
#include "edgesweep/common/json.h"
#include "edgesweep/orchestrator/store.h"

namespace edgesweep::store_detail {

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
[[noreturn]] inline void fail(const Database& database, const std::string& step) {
  throw Error(fmt::format("store '{}': {}: {}", database.path, step, sqlite3_errmsg(database.connection.get())));
}

/// The database behind a Store; a moved-from Store has none.
inline Database& checked(Database* database) {
  EDGESWEEP_ASSERT(database != nullptr);
  return *database;
}

/// The database, after refusing writes to a store opened read-only.
inline Database& writable(Database* database, const std::string& action) {
  Database& checked_database = checked(database);
  check(checked_database.mode == Store::Mode::ReadWrite, "store '{}' is open read-only: cannot {}",
        checked_database.path, action);
  return checked_database;
}

/// Runs SQL that returns no rows (may hold several statements).
inline void execute(const Database& database, const std::string& step, const char* sql) {
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
inline int64_t changed_rows(const Database& database) { return sqlite3_changes64(database.connection.get()); }

/// The current time as ISO 8601 UTC text, e.g. 2026-11-25T17:03:04Z.
inline std::string now_utc() {
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

/// Parses JSON text read back from the store; `what` names the row and column for the message.
inline Json parse_stored_json(const Database& database, const std::string& what, const std::string& text) {
  try {
    return Json::parse(text);
  } catch (const Json::exception& e) {
    throw Error(fmt::format("store '{}': {} is not valid JSON: {}", database.path, what, e.what()));
  }
}

inline int read_schema_version(const Database& database) {
  Statement statement(database, "read schema version", "PRAGMA user_version");
  EDGESWEEP_ASSERT(statement.step());
  return static_cast<int>(statement.column_int(0));
}

/// Sets a PRAGMA and returns the first column of its answer as text (empty when it answers nothing).
inline std::string set_pragma(const Database& database, const std::string& pragma) {
  Statement statement(database, "set PRAGMA " + pragma, "PRAGMA " + pragma);
  std::string answer = statement.step() ? statement.column_text(0) : std::string();
  while (statement.step()) {
  }
  return answer;
}

/// Applies the pending migrations, each in one BEGIN IMMEDIATE transaction.
void migrate(Database& database);
/// Refuses files this build cannot use: a newer schema, or (read-only) a file that is not an edgesweep store.
void check_schema(const Database& database);
/// The schema version this build writes.
int latest_schema();

}  // namespace edgesweep::store_detail

namespace edgesweep {
struct Store::Handle : store_detail::Database {};
}  // namespace edgesweep
