// Reading a benchmark request (see benchmark_request.h).
#include "edgesweep/common/benchmark_request.h"

#include <cmath>
#include <set>

#include <fmt/format.h>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

/// Longest text of a value quoted in an error.
std::string shown(const Json& value) {
  std::string text = value.dump();
  if (text.size() > 120) text = text.substr(0, 117) + "...";
  return text;
}

void check_keys(const Json& object, const std::set<std::string>& known, const std::string& where) {
  for (const auto& [key, value] : object.items()) {
    if (known.count(key) == 0) {
      std::string names;
      for (const std::string& k : known) names += (names.empty() ? "" : ", ") + k;
      throw InputError(fmt::format("{}: unknown key '{}' (known keys: {})", where, key.substr(0, 80), names));
    }
  }
}

int64_t integer(const Json& object, const char* key, int64_t fallback, int64_t low, int64_t high,
                const std::string& where) {
  if (!object.contains(key) || object.at(key).is_null()) return fallback;
  const Json& value = object.at(key);
  check_input(value.is_number_integer(), "{}: '{}' must be a whole number, got {}", where, key, shown(value));
  check_input(!value.is_number_unsigned() || value.get<uint64_t>() <= static_cast<uint64_t>(high),
              "{}: '{}' = {} is not in [{}, {}]", where, key, shown(value), low, high);
  const int64_t number = value.get<int64_t>();
  check_input(number >= low && number <= high, "{}: '{}' = {} is not in [{}, {}]", where, key, number, low, high);
  return number;
}

double real(const Json& object, const char* key, double fallback, double high, const std::string& where) {
  if (!object.contains(key) || object.at(key).is_null()) return fallback;
  const Json& value = object.at(key);
  check_input(value.is_number(), "{}: '{}' must be a number, got {}", where, key, shown(value));
  const double number = value.get<double>();
  check_input(std::isfinite(number) && number >= 0 && number <= high, "{}: '{}' = {} is not in [0, {}]", where, key,
              shown(value), high);
  return number;
}

std::string text(const Json& object, const char* key, const std::string& where) {
  if (!object.contains(key) || object.at(key).is_null()) return "";
  const Json& value = object.at(key);
  check_input(value.is_string(), "{}: '{}' must be a string, got {}", where, key, shown(value));
  return value.get<std::string>();
}

bool flag(const Json& object, const char* key, bool fallback, const std::string& where) {
  if (!object.contains(key) || object.at(key).is_null()) return fallback;
  const Json& value = object.at(key);
  check_input(value.is_boolean(), "{}: '{}' must be true or false, got {}", where, key, shown(value));
  return value.get<bool>();
}

std::vector<int64_t> integers(const Json& object, const char* key, std::vector<int64_t> fallback, int64_t low,
                              int64_t high, size_t max_count, const std::string& where) {
  if (!object.contains(key) || object.at(key).is_null()) return fallback;
  const Json& value = object.at(key);
  check_input(value.is_array() && value.size() <= max_count, "{}: '{}' must be a list of at most {} whole numbers, "
              "got {}", where, key, max_count, shown(value));
  std::vector<int64_t> numbers;
  for (const Json& item : value) {
    check_input(item.is_number_integer(), "{}: '{}' holds {}, not a whole number", where, key, shown(item));
    check_input(!item.is_number_unsigned() || item.get<uint64_t>() <= static_cast<uint64_t>(high),
                "{}: '{}' holds {}, not in [{}, {}]", where, key, shown(item), low, high);
    const int64_t number = item.get<int64_t>();
    check_input(number >= low && number <= high, "{}: '{}' holds {}, not in [{}, {}]", where, key, number, low, high);
    numbers.push_back(number);
  }
  return numbers;
}

}  // namespace

const std::vector<int64_t>& default_benchmark_batch_sizes() {
  static const std::vector<int64_t> sizes{1, 32};
  return sizes;
}

BenchmarkRequest parse_benchmark_request(const Json& request) {
  const std::string where = "benchmark request";
  check_input(request.is_object(), "{} must be a JSON object, got {}", where, shown(request));
  check_keys(request,
             {"model", "threads", "quantized_engine", "batch_sizes", "warmup_runs", "warmup_seconds", "min_runs",
              "min_seconds", "keep_latencies", "seed", "input_shape", "dataset", "accuracy_batch_size", "crash"},
             where);
  BenchmarkRequest parsed;
  parsed.model = text(request, "model", where);
  parsed.threads = integer(request, "threads", 1, 1, 1024, where);
  parsed.quantized_engine = text(request, "quantized_engine", where);
  parsed.batch_sizes = integers(request, "batch_sizes", default_benchmark_batch_sizes(), 1, 65536, 64, where);
  check_input(!parsed.batch_sizes.empty(), "{}: 'batch_sizes' is empty", where);
  parsed.warmup_runs = integer(request, "warmup_runs", 5, 0, int64_t{1} << 40, where);
  parsed.warmup_seconds = real(request, "warmup_seconds", 0.5, 86400, where);
  parsed.min_runs = integer(request, "min_runs", 20, 1, int64_t{1} << 40, where);
  parsed.min_seconds = real(request, "min_seconds", 1.0, 86400, where);
  parsed.keep_latencies = flag(request, "keep_latencies", true, where);
  if (request.contains("seed") && !request.at("seed").is_null()) {
    const Json& seed = request.at("seed");
    check_input(seed.is_number_unsigned() || (seed.is_number_integer() && seed.get<int64_t>() >= 0),
                "{}: 'seed' must be a whole number >= 0, got {}", where, shown(seed));
    parsed.seed = seed.get<uint64_t>();
  }
  if (request.contains("input_shape") && !request.at("input_shape").is_null()) {
    parsed.input_shape = integers(request, "input_shape", {}, 1, 65536, 3, where);
    check_input(parsed.input_shape.size() == 3, "{}: 'input_shape' must be [C, H, W], got {}", where,
                shown(request.at("input_shape")));
  }
  parsed.accuracy_batch_size = integer(request, "accuracy_batch_size", 256, 1, 65536, where);
  parsed.crash = text(request, "crash", where);
  if (request.contains("dataset") && !request.at("dataset").is_null()) {
    const Json& spec = request.at("dataset");
    const std::string in = where + " 'dataset'";
    check_input(spec.is_object(), "{} must be an object with 'id' and 'path', got {}", in, shown(spec));
    check_keys(spec, {"id", "path", "limit", "classes", "resize", "rgb"}, in);
    BenchmarkDataset dataset;
    dataset.id = text(spec, "id", in);
    dataset.path = text(spec, "path", in);
    check_input(!dataset.id.empty() && !dataset.path.empty(), "{} needs 'id' and 'path', got {}", in, shown(spec));
    dataset.limit = integer(spec, "limit", 0, 0, int64_t{1} << 40, in);
    dataset.classes = integers(spec, "classes", {}, 0, 9, 10, in);
    dataset.resize = integer(spec, "resize", 0, 0, 4096, in);
    dataset.rgb = flag(spec, "rgb", false, in);
    parsed.dataset = dataset;
  }
  return parsed;
}

}  // namespace edgesweep
