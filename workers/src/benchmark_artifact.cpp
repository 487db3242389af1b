// The on-device benchmark of one TorchScript artifact, as run in a device agent's child process.
#include "edgesweep/workers/benchmark_artifact.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "edgesweep/common/allocator.h"
#include "edgesweep/common/benchmark_request.h"
#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/dataset.h"
#include "edgesweep/workers/measure_latency.h"
#include "edgesweep/workers/torchscript.h"

namespace edgesweep {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

std::string engine_label(at::QEngine engine) {
  return engine == at::QEngine::NoQEngine ? "none" : lower(c10::toString(engine));
}

Json runtime_description() {
  std::vector<std::string> engines;
  for (const at::QEngine e : at::globalContext().supportedQEngines()) {
    if (e != at::QEngine::NoQEngine) engines.push_back(engine_label(e));
  }
  return Json{{"libtorch_version", TORCH_VERSION},
              {"threads", at::get_num_threads()},
              {"allocator", allocator_policy()},
              {"quantized_engine", engine_label(at::globalContext().qEngine())},
              {"quantized_engines", engines}};
}

/// The process's own peak resident set (VmHWM of /proc/self/status) in MiB; 0 where there is no such file.
double own_peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return 0.0;
}

/// The artifact's edgesweep/meta.json, read from the zip archive without loading the module (the quantized engine
/// it names has to be active before loading, since packed weights are repacked for the engine active at load).
Json read_benchmark_metadata(const fs::path& model) {
  check_input(fs::is_regular_file(model), "benchmark: model file '{}' does not exist", model.string());
  try {
    return read_archive_metadata(model);
  } catch (const InputError& e) {
    throw InputError(fmt::format("benchmark: {}", e.what()));
  }
}

/// Sets threads and the quantized engine: the request's engine, else the artifact's, else LibTorch's default.
void configure_runtime(const BenchmarkRequest& request, const Json& metadata) {
  at::set_num_threads(static_cast<int>(request.threads));
  std::string engine = request.quantized_engine;
  if (engine.empty()) engine = metadata.value("quantized_engine", std::string());
  if (!engine.empty() && engine != "none") at::globalContext().setQEngine(engine_from_name(engine));
}

/// One sample's [C, H, W]: the request's "input_shape", else the artifact's.
std::vector<int64_t> input_shape(const BenchmarkRequest& request, const Json& metadata, const fs::path& model) {
  if (!request.input_shape.empty()) return request.input_shape;
  const Json shape = metadata.value("input_shape", Json());
  check_input(shape.is_array() && shape.size() == 3,
              "benchmark: '{}' names no input shape [C, H, W] in {} (got {}); give 'input_shape' in the request",
              model.string(), kMetadataFile, shape.dump());
  std::vector<int64_t> dims;
  for (const Json& d : shape) {
    check_input(d.is_number_integer() && d.get<int64_t>() > 0, "benchmark: input shape {} of '{}' is not positive",
                shape.dump(), model.string());
    dims.push_back(d.get<int64_t>());
  }
  return dims;
}

/// Latency statistics of one batch size, with every timed run kept when asked.
Json measure_batch(torch::jit::Module& module, const std::vector<int64_t>& shape, int64_t batch,
                   const LatencyOptions& options, bool keep_latencies, torch::Generator& generator) {
  const auto input = torch::randn({batch, shape[0], shape[1], shape[2]}, generator);
  const LatencyRuns runs = time_latency_runs(module, input, options);
  const LatencyStats stats = summarize_latencies(runs.ms, batch);
  Json out{{"batch_size", batch},
           {"runs", stats.runs},
           {"warmup_runs", runs.warmup_runs},
           {"warmup_seconds", runs.warmup_seconds},
           {"timed_seconds", runs.timed_end_seconds - runs.timed_start_seconds},
           {"timed_window", {runs.timed_start_seconds, runs.timed_end_seconds}},
           {"min_ms", stats.min_ms},
           {"mean_ms", stats.mean_ms},
           {"std_ms", stats.std_ms},
           {"p50_ms", stats.p50_ms},
           {"p90_ms", stats.p90_ms},
           {"p99_ms", stats.p99_ms},
           {"fps", stats.images_per_second}};
  if (keep_latencies) out["latencies_ms"] = runs.ms;
  return out;
}

/// The test split of the device's copy of a dataset, with the files it came from.
struct EvaluationSet {
  Dataset data;
  std::vector<fs::path> files;
};

EvaluationSet read_evaluation_set(const std::string& id, const fs::path& root) {
  check_input(fs::is_directory(root), "benchmark: dataset folder '{}' for '{}' does not exist", root.string(), id);
  EvaluationSet set;
  if (id == "fashion-mnist") {
    const auto pick = [&](const std::string& stem) {
      const fs::path gz = root / (stem + ".gz");
      return fs::exists(gz) ? gz : root / stem;
    };
    set.files = {pick("t10k-images-idx3-ubyte"), pick("t10k-labels-idx1-ubyte")};
    set.data = read_idx(set.files[0], set.files[1]);
  } else if (id == "cifar10") {
    const fs::path dir = fs::is_directory(root / "cifar-10-batches-bin") ? root / "cifar-10-batches-bin" : root;
    set.files = {dir / "test_batch.bin"};
    check_input(fs::exists(set.files[0]), "benchmark: CIFAR-10 test file '{}' does not exist", set.files[0].string());
    set.data = read_cifar10(set.files);
  } else {
    throw InputError(fmt::format("benchmark: dataset id '{}' is not one the agent reads (fashion-mnist, cifar10)", id));
  }
  return set;
}

std::vector<double> doubles(const Json& metadata, const char* key, const fs::path& model) {
  const Json value = metadata.value(key, Json());
  check_input(value.is_array() && !value.empty(), "benchmark: '{}' names no normalisation '{}' in {}", model.string(),
              key, kMetadataFile);
  return value.get<std::vector<double>>();
}

/// Top-1 accuracy of `module` on the request's evaluation set, with what identifies the set.
Json measure_accuracy(torch::jit::Module& module, const BenchmarkDataset& spec, const Json& metadata,
                      const fs::path& model, const std::vector<int64_t>& shape, int64_t batch_size) {
  const std::string& id = spec.id;
  const std::string& path = spec.path;
  const int64_t limit = spec.limit;
  EvaluationSet set = read_evaluation_set(id, path);
  // The experiment's [data] classes: labels relabelled as in training (each checked to be 0..9).
  if (!spec.classes.empty()) set.data = select_classes(set.data, spec.classes);
  if (limit > 0 && limit < set.data.size()) {
    set.data = set.data.select(torch::arange(limit, torch::kInt64));
  }
  if (spec.resize > 0 || spec.rgb) set.data = transform_images(set.data, spec.resize, spec.rgb);
  const Dataset& data = set.data;
  check_input(data.size() > 0, "benchmark: the evaluation set '{}' in '{}' is empty", id, path);
  check_input(data.images.size(1) == shape[0] && data.images.size(2) == shape[1] && data.images.size(3) == shape[2],
              "benchmark: images of '{}' in '{}' are [{}, {}, {}], the model '{}' takes [{}, {}, {}]", id, path,
              data.images.size(1), data.images.size(2), data.images.size(3), model.string(), shape[0], shape[1],
              shape[2]);
  const auto mean = doubles(metadata, "mean", model);
  const auto deviation = doubles(metadata, "std", model);

  module.eval();
  c10::InferenceMode inference;
  int64_t correct = 0;
  for (const auto& batch : make_batches(data.size(), batch_size, false, nullptr)) {
    const auto inputs = normalize_images(data.images.index_select(0, batch), mean, deviation);
    const torch::jit::IValue output = module.forward({inputs});
    check(output.isTensor(), "benchmark: '{}' returns {}, not a tensor of logits", model.string(),
          output.tagKind());
    correct += output.toTensor().argmax(1).eq(data.labels.index_select(0, batch)).sum().item<int64_t>();
  }

  Json files = Json::array();
  std::string listing;
  for (const fs::path& f : set.files) {
    const std::string digest = sha256_file(f);
    files.push_back({{"name", f.filename().string()}, {"sha256", digest}});
    listing += f.filename().string() + " " + digest + "\n";
  }
  const auto bytes = data.images.contiguous();
  const std::string images_digest = sha256_hex(std::string_view(
      reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(bytes.numel())));
  // The same form as the id a training run records in the artifact (name @ the first 12 hex of the test images).
  const std::string dataset_id = id + "@" + images_digest.substr(0, 12);
  const std::string artifact_id = metadata.value("dataset_id", std::string());
  return Json{{"top1", 100.0 * static_cast<double>(correct) / static_cast<double>(data.size())},
              {"correct", correct},
              {"images", data.size()},
              {"dataset", id},
              {"dataset_id", dataset_id},
              {"sha256", sha256_hex(listing)},
              {"files", files},
              {"artifact_dataset_id", artifact_id},
              {"matches_artifact", !artifact_id.empty() && artifact_id == dataset_id}};
}

bool is_out_of_memory(const std::string& message) {
  return message.find("can't allocate memory") != std::string::npos ||
         message.find("std::bad_alloc") != std::string::npos;
}

/// Faults on purpose, for tests of the runner that isolates this process; only with EDGESWEEP_TEST_FAULTS=1.
void inject_fault(const BenchmarkRequest& request) {
  if (request.crash.empty()) return;
  const char* allowed = std::getenv("EDGESWEEP_TEST_FAULTS");
  check_input(allowed != nullptr && std::string(allowed) == "1",
              "benchmark request: 'crash' is a test-only key (honoured only with EDGESWEEP_TEST_FAULTS=1)");
  const std::string& crash = request.crash;
  if (crash == "segv") std::raise(SIGSEGV);
  if (crash == "abort") std::abort();
  if (crash == "hang") {
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  throw InputError(fmt::format("benchmark request: 'crash' is \"{}\"; expected segv, abort or hang", crash));
}

void write_json(const fs::path& path, const Json& value) {
  const fs::path staging = path.string() + ".partial";
  {
    std::ofstream out(staging);
    check(out.good(), "benchmark: cannot write '{}'", staging.string());
    out << value.dump() << "\n";
    check(out.good(), "benchmark: cannot write '{}'", staging.string());
  }
  fs::rename(staging, path);
}

}  // namespace

Json benchmark_artifact(const Json& json) {
  const BenchmarkRequest request = parse_benchmark_request(json);
  const fs::path model = request.model;
  check_input(!model.empty(), "benchmark request names no 'model'");
  const Json metadata = read_benchmark_metadata(model);
  configure_runtime(request, metadata);
  const std::vector<int64_t> shape = input_shape(request, metadata, model);

  LatencyOptions options;
  options.warmup_runs = request.warmup_runs;
  options.warmup_seconds = request.warmup_seconds;
  options.min_runs = request.min_runs;
  options.min_seconds = request.min_seconds;
  const std::vector<int64_t>& batch_sizes = request.batch_sizes;

  const auto load_start = Clock::now();
  torch::jit::Module module;
  try {
    module = torch::jit::load(model.string());
  } catch (const c10::Error& e) {
    throw InputError(fmt::format("benchmark: cannot load '{}' as TorchScript ({})", model.string(),
                                 e.what_without_backtrace()));
  }
  const double load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  module.eval();

  Json result{{"model",
               {{"path", model.string()},
                {"sha256", sha256_file(model)},
                {"bytes", fs::file_size(model)},
                {"precision", metadata.value("precision", std::string("fp32"))},
                {"artifact_quantized_engine", metadata.value("quantized_engine", std::string("none"))},
                {"input_shape", shape}}},
              {"load_seconds", load_seconds}};
  torch::Generator generator = at::detail::createCPUGenerator(request.seed);
  const bool keep = request.keep_latencies;
  Json batches = Json::array();
  for (int64_t b : batch_sizes) {
    try {
      batches.push_back(measure_batch(module, shape, b, options, keep, generator));
    } catch (const c10::Error& e) {
      throw Error(fmt::format("benchmark: '{}' failed at batch size {}: {}", model.string(), b,
                              e.what_without_backtrace()));
    }
  }
  result["batches"] = batches;
  result["accuracy"] = nullptr;
  if (request.dataset) {
    result["accuracy"] =
        measure_accuracy(module, *request.dataset, metadata, model, shape, request.accuracy_batch_size);
  }
  result["runtime"] = runtime_description();
  result["self_peak_rss_mb"] = own_peak_rss_mb();
  return result;
}

Json benchmark_runtime_only(const Json& json) {
  configure_runtime(parse_benchmark_request(json), Json::object());
  {
    // Start what a model's first run starts (the intra-op thread pool, the allocator) on a negligible tensor.
    c10::InferenceMode inference;
    const auto x = torch::ones({64, 64});
    const double sum = at::matmul(x, x).sum().item<double>();
    check(sum > 0, "benchmark: LibTorch's first operation gave {}", sum);
  }
  Json result{{"runtime", runtime_description()}};
  result["self_peak_rss_mb"] = own_peak_rss_mb();
  return result;
}

int run_benchmark_request(const fs::path& request_file, const fs::path& output_file, bool empty) {
  Json out;
  int code = 0;
  try {
    std::ifstream in(request_file);
    check_input(in.good(), "benchmark: cannot read request file '{}'", request_file.string());
    Json request;
    try {
      request = Json::parse(in);
    } catch (const Json::exception& e) {
      throw InputError(fmt::format("benchmark: request file '{}' is not JSON ({})", request_file.string(), e.what()));
    }
    inject_fault(parse_benchmark_request(request));
    out = Json{{"ok", true}, {"result", empty ? benchmark_runtime_only(request) : benchmark_artifact(request)}};
  } catch (const InputError& e) {
    out = Json{{"ok", false}, {"kind", "input"}, {"error", e.what()}};
    code = 2;
  } catch (const std::bad_alloc& e) {
    out = Json{{"ok", false}, {"kind", "out_of_memory"}, {"error", "out of memory (std::bad_alloc)"}};
    code = 1;
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    out = Json{{"ok", false}, {"kind", is_out_of_memory(message) ? "out_of_memory" : "error"}, {"error", message}};
    code = 1;
  } catch (const std::exception& e) {
    const std::string message = e.what();
    out = Json{{"ok", false}, {"kind", is_out_of_memory(message) ? "out_of_memory" : "error"}, {"error", message}};
    code = 1;
  }
  try {
    write_json(output_file, out);
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return code;
}

}  // namespace edgesweep
