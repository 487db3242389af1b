// The query sandbox of `edgesweep query`: one reading statement, refused when it would write, control
// transactions, attach, set a PRAGMA or call fts3_tokenizer / load_extension, and stopped at its time limit.
#include <chrono>
#include <initializer_list>

#include <fmt/format.h>

#include "store_sqlite.h"

namespace edgesweep {
namespace {

using namespace store_detail;

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

