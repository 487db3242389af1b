// Tests of the on-device benchmark of an artifact (what a device agent's child runs): latency statistics consistent
// with their own raw runs, accuracy on a tiny idx evaluation set equal to evaluating the model directly, the quantized
// engine taken from the artifact or the request, and clean errors for files that are not models and for the
// test-only fault key.
#include "edgesweep/workers/benchmark_artifact.h"

#include <stdlib.h>

#include <cmath>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"
#include "edgesweep/workers/compress/quantize.h"
#include "edgesweep/workers/dataset.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/trainer.h"
#include "edgesweep/workers/zoo.h"
#include "expect_error.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

namespace fs = std::filesystem;

/// Writes an idx file: magic, dimensions (big-endian u32), then the bytes.
void write_idx(const fs::path& path, uint32_t magic, const std::vector<uint32_t>& dims, const torch::Tensor& data) {
  std::ofstream out(path, std::ios::binary);
  const auto put = [&](uint32_t v) {
    const char bytes[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
                           static_cast<char>(v)};
    out.write(bytes, 4);
  };
  put(magic);
  for (uint32_t d : dims) put(d);
  const auto flat = data.to(torch::kUInt8).contiguous();
  out.write(reinterpret_cast<const char*>(flat.data_ptr<uint8_t>()), flat.numel());
}

class BenchmarkArtifact : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(11);
    model_ = GraphModule(build_zoo_model("small-cnn", Shape{1, 28, 28, false}, 10, 0.25));
    model_->eval();
    metadata_ = Json{{"input_shape", {1, 28, 28}}, {"mean", {0.3}}, {"std", {0.35}}, {"quantized_engine", "none"},
                     {"precision", "fp32"}};
    save_torchscript(model_, metadata_, folder_ / "model.pt");
    // 37 images: the accuracy batches of 16 end with a partial one.
    fs::create_directories(folder_ / "eval");
    images_ = torch::randint(0, 256, {37, 28, 28}, torch::kInt64);
    labels_ = torch::randint(0, 10, {37}, torch::kInt64);
    write_idx(folder_ / "eval" / "t10k-images-idx3-ubyte", 2051, {37, 28, 28}, images_);
    write_idx(folder_ / "eval" / "t10k-labels-idx1-ubyte", 2049, {37}, labels_);
  }

  Json quick_request() const {
    return Json{{"model", (folder_ / "model.pt").string()}, {"threads", 1},        {"batch_sizes", {1, 4}},
                {"warmup_runs", 2},                         {"warmup_seconds", 0.01}, {"min_runs", 7},
                {"min_seconds", 0.05}};
  }

  TempFolder folder_{"benchmark-artifact"};
  GraphModule model_{nullptr};
  Json metadata_;
  torch::Tensor images_;
  torch::Tensor labels_;
};

TEST_F(BenchmarkArtifact, LatencyFiguresAgreeWithTheirRawRuns) {
  const Json result = benchmark_artifact(quick_request());
  EXPECT_GT(result.at("load_seconds").get<double>(), 0.0);
  EXPECT_EQ(result.at("model").at("sha256"), sha256_file(folder_ / "model.pt"));
  EXPECT_EQ(result.at("model").at("input_shape"), Json({1, 28, 28}));
  EXPECT_TRUE(result.at("accuracy").is_null());
  EXPECT_EQ(result.at("runtime").at("libtorch_version"), TORCH_VERSION);
  EXPECT_EQ(result.at("runtime").at("threads"), 1);
  EXPECT_FALSE(result.at("runtime").at("quantized_engines").empty());
  ASSERT_EQ(result.at("batches").size(), 2u);
  int64_t expected_batch = 1;
  for (const Json& b : result.at("batches")) {
    SCOPED_TRACE(b.dump());
    EXPECT_EQ(b.at("batch_size").get<int64_t>(), expected_batch);
    expected_batch = 4;
    const auto raw = b.at("latencies_ms").get<std::vector<double>>();
    const int64_t runs = b.at("runs").get<int64_t>();
    EXPECT_EQ(static_cast<int64_t>(raw.size()), runs);
    EXPECT_GE(runs, 7);
    EXPECT_GE(b.at("warmup_runs").get<int64_t>(), 2);
    EXPECT_GE(b.at("warmup_seconds").get<double>(), 0.01);
    EXPECT_GE(b.at("timed_seconds").get<double>(), 0.05);
    // The summary is of the kept runs: min and mean recomputed from them.
    EXPECT_DOUBLE_EQ(b.at("min_ms").get<double>(), *std::min_element(raw.begin(), raw.end()));
    const double mean = std::accumulate(raw.begin(), raw.end(), 0.0) / static_cast<double>(raw.size());
    EXPECT_NEAR(b.at("mean_ms").get<double>(), mean, 1e-9 * mean);
    EXPECT_GT(b.at("min_ms").get<double>(), 0.0);
    EXPECT_LE(b.at("min_ms").get<double>(), b.at("mean_ms").get<double>());
    EXPECT_LE(b.at("min_ms").get<double>(), b.at("p50_ms").get<double>());
    EXPECT_LE(b.at("p50_ms").get<double>(), b.at("p90_ms").get<double>());
    EXPECT_LE(b.at("p90_ms").get<double>(), b.at("p99_ms").get<double>());
    EXPECT_GE(b.at("std_ms").get<double>(), 0.0);
    // FPS is batch / mean latency (relative tolerance 1e-9: the same quantity, computed once).
    const double fps = 1000.0 * static_cast<double>(b.at("batch_size").get<int64_t>()) / mean;
    EXPECT_NEAR(b.at("fps").get<double>(), fps, 1e-9 * fps);
    // The timed runs fit in the timed window they report.
    EXPECT_LE(std::accumulate(raw.begin(), raw.end(), 0.0), 1000.0 * b.at("timed_seconds").get<double>() * 1.0001);
  }
}

TEST_F(BenchmarkArtifact, AccuracyEqualsEvaluatingTheModelDirectly) {
  Json request = quick_request();
  request["batch_sizes"] = {1};
  request["dataset"] = {{"id", "fashion-mnist"}, {"path", (folder_ / "eval").string()}};
  request["accuracy_batch_size"] = 16;
  const Json accuracy = benchmark_artifact(request).at("accuracy");

  const Dataset eval =
      read_idx(folder_ / "eval" / "t10k-images-idx3-ubyte", folder_ / "eval" / "t10k-labels-idx1-ubyte");
  const double expected = evaluate_accuracy(model_, eval, {0.3}, {0.35}, 16);
  EXPECT_DOUBLE_EQ(accuracy.at("top1").get<double>(), expected);
  EXPECT_EQ(accuracy.at("images"), 37);
  EXPECT_NEAR(100.0 * accuracy.at("correct").get<double>() / 37.0, expected, 1e-9);
  EXPECT_EQ(accuracy.at("dataset"), "fashion-mnist");
  EXPECT_EQ(accuracy.at("dataset_id").get<std::string>().rfind("fashion-mnist@", 0), 0u);
  ASSERT_EQ(accuracy.at("files").size(), 2u);
  EXPECT_EQ(accuracy.at("files")[0].at("sha256"), sha256_file(folder_ / "eval" / "t10k-images-idx3-ubyte"));
  EXPECT_EQ(accuracy.at("files")[1].at("sha256"), sha256_file(folder_ / "eval" / "t10k-labels-idx1-ubyte"));
  EXPECT_EQ(accuracy.at("sha256").get<std::string>().size(), 64u);
  EXPECT_FALSE(accuracy.at("matches_artifact").get<bool>());  // the archive names no dataset id

  // A limit evaluates the first images only.
  request["dataset"]["limit"] = 10;
  const Json limited = benchmark_artifact(request).at("accuracy");
  EXPECT_EQ(limited.at("images"), 10);
  const Dataset first = eval.select(torch::arange(10, torch::kInt64));
  EXPECT_DOUBLE_EQ(limited.at("top1").get<double>(), evaluate_accuracy(model_, first, {0.3}, {0.35}, 16));

  // An experiment's [data] classes: the device keeps those classes, relabelled as in training, before the limit.
  request["dataset"]["classes"] = {7, 2, 4};
  request["dataset"]["limit"] = 0;
  const Json subset = benchmark_artifact(request).at("accuracy");
  const Dataset kept = select_classes(eval, {7, 2, 4});
  ASSERT_GT(kept.size(), 0);
  EXPECT_EQ(subset.at("images"), kept.size());
  EXPECT_DOUBLE_EQ(subset.at("top1").get<double>(), evaluate_accuracy(model_, kept, {0.3}, {0.35}, 16));
  request["dataset"]["classes"] = {7, 12};
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"'dataset': 'classes' holds 12, not in [0, 9]"});
}

TEST_F(BenchmarkArtifact, QuantizedEngineComesFromTheArtifactUnlessTheRequestNamesOne) {
  QuantizeOptions options;
  options.mode = "dynamic-int8";
  options.engine = "onednn";
  const ScriptedModel scripted = export_dynamic_int8(model_, options);
  save_scripted_model(scripted, metadata_, folder_ / "int8.pt");
  Json request = quick_request();
  request["model"] = (folder_ / "int8.pt").string();
  request["batch_sizes"] = {2};
  const Json from_artifact = benchmark_artifact(request);
  EXPECT_EQ(from_artifact.at("runtime").at("quantized_engine"), "onednn");
  EXPECT_EQ(from_artifact.at("model").at("artifact_quantized_engine"), "onednn");
  EXPECT_EQ(from_artifact.at("model").at("precision"), "int8-dynamic");
  request["quantized_engine"] = "qnnpack";
  EXPECT_EQ(benchmark_artifact(request).at("runtime").at("quantized_engine"), "qnnpack");
  request["quantized_engine"] = "tpu";
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"tpu"});
}

TEST_F(BenchmarkArtifact, FilesThatAreNotModelsAndBadRequestsAreInputErrors) {
  {
    std::ofstream out(folder_ / "notes.pt");
    out << "not a model\n";
  }
  Json request = quick_request();
  request["model"] = (folder_ / "notes.pt").string();
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"notes.pt", "not a TorchScript archive"});
  request["model"] = (folder_ / "missing.pt").string();
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"missing.pt", "does not exist"});
  request = quick_request();
  request["batch_sizes"] = {0};
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"'batch_sizes' holds 0, not in [1, 65536]"});
  request = quick_request();
  request["threads"] = "two";
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"'threads' must be a whole number, got \"two\""});
  request = quick_request();
  request["min_run"] = 5;  // misspelt: refused, not ignored
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"unknown key 'min_run'", "min_runs"});
  request = quick_request();
  request["dataset"] = {{"id", "fashion-mnist"}, {"path", (folder_ / "nowhere").string()}};
  expect_error<InputError>([&] { benchmark_artifact(request); }, {"nowhere", "does not exist"});
}

TEST_F(BenchmarkArtifact, RequestFilesGiveResultFilesAndTheFaultKeyIsForTestsOnly) {
  const auto write = [&](const Json& request) {
    std::ofstream out(folder_ / "request.json");
    out << request.dump();
  };
  const auto read = [&] {
    std::ifstream in(folder_ / "result.json");
    return Json::parse(in);
  };
  Json request = quick_request();
  request["batch_sizes"] = {1};
  write(request);
  EXPECT_EQ(run_benchmark_request(folder_ / "request.json", folder_ / "result.json", false), 0);
  EXPECT_TRUE(read().at("ok").get<bool>());
  EXPECT_EQ(read().at("result").at("batches").size(), 1u);

  EXPECT_EQ(run_benchmark_request(folder_ / "request.json", folder_ / "result.json", true), 0);
  EXPECT_FALSE(read().at("result").contains("batches"));
  EXPECT_EQ(read().at("result").at("runtime").at("threads"), 1);

  unsetenv("EDGESWEEP_TEST_FAULTS");
  request["crash"] = "segv";
  write(request);
  EXPECT_EQ(run_benchmark_request(folder_ / "request.json", folder_ / "result.json", false), 2);
  EXPECT_FALSE(read().at("ok").get<bool>());
  EXPECT_EQ(read().at("kind"), "input");
  EXPECT_NE(read().at("error").get<std::string>().find("EDGESWEEP_TEST_FAULTS=1"), std::string::npos);

  {
    std::ofstream out(folder_ / "request.json");
    out << "{ not json";
  }
  EXPECT_EQ(run_benchmark_request(folder_ / "request.json", folder_ / "result.json", false), 2);
  EXPECT_NE(read().at("error").get<std::string>().find("request.json"), std::string::npos);
}

}  // namespace
}  // namespace edgesweep
