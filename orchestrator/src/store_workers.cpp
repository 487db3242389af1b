// The worker ranks of an experiment's latest run: what rank 0 last heard from each (state, task, progress).
#include <fmt/format.h>

#include "store_sqlite.h"

namespace edgesweep {

using namespace store_detail;

void Store::record_workers(const std::vector<WorkerRow>& rows) {
  if (rows.empty()) return;
  Database& database = writable(handle_.get(), "record worker ranks");
  for (const WorkerRow& row : rows) {
    check(row.state == "idle" || row.state == "busy" || row.state == "lost" || row.state == "released",
          "store '{}': record rank {}: unknown state '{}' (expected idle, busy, lost or released)", database.path,
          row.rank, row.state);
  }
  transaction([&] {
    Statement statement(database, "record worker ranks",
                        "INSERT INTO workers (experiment_id, rank, host, pid, state, trial_id, progress_json, heard) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (experiment_id, rank) DO UPDATE SET "
                        "host = excluded.host, pid = excluded.pid, state = excluded.state, "
                        "trial_id = excluded.trial_id, progress_json = excluded.progress_json, heard = excluded.heard");
    for (const WorkerRow& row : rows) {
      statement.bind_int(1, row.experiment_id);
      statement.bind_int(2, row.rank);
      statement.bind_text(3, row.host);
      statement.bind_int(4, row.pid);
      statement.bind_text(5, row.state);
      if (row.trial_id > 0) {
        statement.bind_int(6, row.trial_id);
      } else {
        statement.bind_text_or_null(6, "");
      }
      statement.bind_text(7, row.progress.dump());
      statement.bind_double(8, row.heard);
      statement.run();
      statement.reset();
    }
  });
}

std::vector<WorkerRow> Store::workers(int64_t experiment_id) const {
  Database& database = checked(handle_.get());
  Statement statement(database, fmt::format("list the worker ranks of experiment {}", experiment_id),
                      "SELECT rank, host, pid, state, trial_id, progress_json, heard FROM workers "
                      "WHERE experiment_id = ?1 ORDER BY rank");
  statement.bind_int(1, experiment_id);
  std::vector<WorkerRow> rows;
  while (statement.step()) {
    WorkerRow row;
    row.experiment_id = experiment_id;
    row.rank = statement.column_int(0);
    row.host = statement.column_text(1);
    row.pid = statement.column_int(2);
    row.state = statement.column_text(3);
    row.trial_id = statement.column_is_null(4) ? 0 : statement.column_int(4);
    row.progress = parse_stored_json(database, fmt::format("rank {} progress_json", row.rank),
                                     statement.column_text(5));
    row.heard = statement.column_double(6);
    rows.push_back(std::move(row));
  }
  return rows;
}

void Store::clear_workers(int64_t experiment_id) {
  Database& database = writable(handle_.get(), "clear worker ranks");
  Statement statement(database, fmt::format("clear the worker ranks of experiment {}", experiment_id),
                      "DELETE FROM workers WHERE experiment_id = ?1");
  statement.bind_int(1, experiment_id);
  statement.run();
}

}  // namespace edgesweep
