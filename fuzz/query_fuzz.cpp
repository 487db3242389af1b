// The query sandbox: any statement is answered (reading) or refused; nothing in the store changes, whatever it is.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "edgesweep/orchestrator/store.h"
#include "fuzz_util.h"

namespace {

struct Fixture {
  std::filesystem::path folder;
  std::unique_ptr<edgesweep::Store> store;  // read-only, as `edgesweep query` opens it
  int64_t experiment = 0;
  size_t trials = 0;

  Fixture() {
    folder = std::filesystem::temp_directory_path() / ("edgesweep-query-fuzz-" + std::to_string(getpid()));
    std::filesystem::remove_all(folder);
    const auto path = folder / "edgesweep.db";
    {
      edgesweep::Store writer = edgesweep::Store::open(path, edgesweep::Store::Mode::ReadWrite);
      experiment = writer.create_experiment("fuzz", "[experiment]\nname = \"fuzz\"\n", "0123");
      for (int i = 0; i < 3; ++i) {
        writer.add_trial(experiment, "trial", edgesweep::Json{{"i", i}}, "hash-" + std::to_string(i));
      }
    }
    store = std::make_unique<edgesweep::Store>(edgesweep::Store::open(path, edgesweep::Store::Mode::ReadOnly));
    trials = store->trials(experiment).size();
  }
  ~Fixture() {
    store.reset();
    std::error_code ignored;
    std::filesystem::remove_all(folder, ignored);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fixture;
  if (size > 4096) return 0;
  const std::string sql(reinterpret_cast<const char*>(data), size);
  // A short time limit: runaway statements (recursive CTEs) reach the interrupt path without costing 50 ms each.
  edgesweep::fuzz::expect_clean([&] { fixture.store->query(sql, 0.005); });
  // Whatever ran, the store is as it was.
  if (fixture.store->trials(fixture.experiment).size() != fixture.trials) std::abort();
  if (fixture.store->schema_version() != edgesweep::store_schema_version()) std::abort();
  return 0;
}
