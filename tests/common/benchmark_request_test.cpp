// The benchmark request as the child reads it: defaults written once, every key checked for type and range, unknown
// keys refused, and the farm's own request read back unchanged.
#include "edgesweep/common/benchmark_request.h"

#include <gtest/gtest.h>

#include <limits>

#include "../workers/expect_error.h"
#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

TEST(BenchmarkRequest, DefaultsAreTheDocumentedOnes) {
  const BenchmarkRequest r = parse_benchmark_request(Json::object());
  EXPECT_EQ(r.batch_sizes, (std::vector<int64_t>{1, 32}));
  EXPECT_EQ(r.batch_sizes, default_benchmark_batch_sizes());
  EXPECT_EQ(r.threads, 1);
  EXPECT_EQ(r.warmup_runs, 5);
  EXPECT_DOUBLE_EQ(r.warmup_seconds, 0.5);
  EXPECT_EQ(r.min_runs, 20);
  EXPECT_DOUBLE_EQ(r.min_seconds, 1.0);
  EXPECT_TRUE(r.keep_latencies);
  EXPECT_EQ(r.seed, 0u);
  EXPECT_TRUE(r.input_shape.empty());
  EXPECT_FALSE(r.dataset.has_value());
  EXPECT_EQ(r.accuracy_batch_size, 256);
}

TEST(BenchmarkRequest, AFullRequestIsReadAsWritten) {
  const Json json = Json::parse(R"({"model": "m.pt", "threads": 2, "quantized_engine": "qnnpack",
    "batch_sizes": [1, 8, 64], "warmup_runs": 3, "warmup_seconds": 0.25, "min_runs": 7, "min_seconds": 2,
    "keep_latencies": false, "seed": 18446744073709551615, "input_shape": [3, 64, 64], "accuracy_batch_size": 32,
    "dataset": {"id": "fashion-mnist", "path": "data/fm", "limit": 500, "classes": [0, 9], "resize": 64,
                "rgb": true}})");
  const BenchmarkRequest r = parse_benchmark_request(json);
  EXPECT_EQ(r.model, "m.pt");
  EXPECT_EQ(r.threads, 2);
  EXPECT_EQ(r.quantized_engine, "qnnpack");
  EXPECT_EQ(r.batch_sizes, (std::vector<int64_t>{1, 8, 64}));
  EXPECT_EQ(r.warmup_runs, 3);
  EXPECT_DOUBLE_EQ(r.warmup_seconds, 0.25);
  EXPECT_EQ(r.min_runs, 7);
  EXPECT_DOUBLE_EQ(r.min_seconds, 2.0);
  EXPECT_FALSE(r.keep_latencies);
  EXPECT_EQ(r.seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(r.input_shape, (std::vector<int64_t>{3, 64, 64}));
  EXPECT_EQ(r.accuracy_batch_size, 32);
  ASSERT_TRUE(r.dataset.has_value());
  EXPECT_EQ(r.dataset->id, "fashion-mnist");
  EXPECT_EQ(r.dataset->path, "data/fm");
  EXPECT_EQ(r.dataset->limit, 500);
  EXPECT_EQ(r.dataset->classes, (std::vector<int64_t>{0, 9}));
  EXPECT_EQ(r.dataset->resize, 64);
  EXPECT_TRUE(r.dataset->rgb);
}

TEST(BenchmarkRequest, BadKeysTypesAndRangesAreNamed) {
  const std::pair<const char*, std::vector<std::string>> cases[] = {
      {R"([1, 2])", {"must be a JSON object"}},
      {R"({"min_run": 5})", {"unknown key 'min_run'", "min_runs"}},
      {R"({"threads": 0})", {"'threads' = 0 is not in [1, 1024]"}},
      {R"({"threads": 1.5})", {"'threads' must be a whole number, got 1.5"}},
      {R"({"threads": 18446744073709551615})", {"'threads' = 18446744073709551615 is not in [1, 1024]"}},
      {R"({"batch_sizes": []})", {"'batch_sizes' is empty"}},
      {R"({"batch_sizes": [1, -4]})", {"'batch_sizes' holds -4, not in [1, 65536]"}},
      {R"({"batch_sizes": 32})", {"'batch_sizes' must be a list"}},
      {R"({"min_runs": 0})", {"'min_runs' = 0 is not in [1,"}},
      {R"({"min_seconds": -1})", {"'min_seconds' = -1 is not in [0, 86400]"}},
      {R"({"warmup_seconds": 1e300})", {"'warmup_seconds' = 1e+300 is not in [0, 86400]"}},
      {R"({"keep_latencies": 1})", {"'keep_latencies' must be true or false"}},
      {R"({"seed": -1})", {"'seed' must be a whole number >= 0"}},
      {R"({"input_shape": [3, 64]})", {"'input_shape' must be [C, H, W]"}},
      {R"({"input_shape": [3, 0, 64]})", {"'input_shape' holds 0"}},
      {R"({"model": 7})", {"'model' must be a string, got 7"}},
      {R"({"dataset": "fashion-mnist"})", {"'dataset' must be an object"}},
      {R"({"dataset": {"id": "fashion-mnist"}})", {"'dataset' needs 'id' and 'path'"}},
      {R"({"dataset": {"id": "c", "path": "p", "classes": [10]}})", {"'classes' holds 10, not in [0, 9]"}},
      {R"({"dataset": {"id": "c", "path": "p", "resize": 5000}})", {"'resize' = 5000 is not in [0, 4096]"}},
      {R"({"dataset": {"id": "c", "path": "p", "colour": true}})", {"'dataset': unknown key 'colour'"}},
  };
  for (const auto& [text, fragments] : cases) {
    SCOPED_TRACE(text);
    expect_error<InputError>([&, json = Json::parse(text)] { parse_benchmark_request(json); }, fragments);
  }
}

}  // namespace
}  // namespace edgesweep
