// Tests of in-process latency measurement: quantiles and summaries of known latencies, both minimums (count and
// duration) honoured, sane statistics, a larger model measured slower than a tiny one, the artifact metrics, and
// the frozen and optimized inference forms.
#include "edgesweep/workers/measure_latency.h"

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "edgesweep/common/error.h"
#include "edgesweep/workers/torchscript.h"
#include "edgesweep/workers/zoo.h"
#include "temp_folder.h"

namespace edgesweep {
namespace {

TEST(LatencySummary, QuantilesInterpolateBetweenOrderStatistics) {
  // Sorted: 1, 2, 3, 4, 10. Position q * 4: median at 2 -> 3; p90 at 3.6 -> 4 + 0.6 * 6 = 7.6; p99 at 3.96 -> 9.76.
  const LatencyStats stats = summarize_latencies({4.0, 1.0, 10.0, 3.0, 2.0}, 8);
  EXPECT_EQ(stats.runs, 5);
  EXPECT_EQ(stats.batch_size, 8);
  EXPECT_DOUBLE_EQ(stats.min_ms, 1.0);
  EXPECT_DOUBLE_EQ(stats.mean_ms, 4.0);
  EXPECT_DOUBLE_EQ(stats.p50_ms, 3.0);
  EXPECT_DOUBLE_EQ(stats.p90_ms, 7.6);
  EXPECT_DOUBLE_EQ(stats.p99_ms, 9.76);
  EXPECT_DOUBLE_EQ(stats.std_ms, std::sqrt(50.0 / 4.0));  // squares: 0 + 9 + 36 + 1 + 4
  EXPECT_DOUBLE_EQ(stats.images_per_second, 2000.0);      // 8 images in 4 ms
  EXPECT_DOUBLE_EQ(latency_quantile({5.0}, 0.9), 5.0);
  EXPECT_DOUBLE_EQ(latency_quantile({1.0, 2.0}, 0.5), 1.5);
}

torch::jit::Module exported(const std::string& arch, double width) {
  torch::manual_seed(3);
  GraphModule model(build_zoo_model(arch, Shape{1, 28, 28, false}, 10, width));
  model->eval();
  return export_torchscript(model);
}

TEST(MeasureLatency, MeetsBothMinimumsAndABiggerModelIsSlower) {
  torch::jit::Module tiny = exported("small-cnn", 0.25);
  torch::jit::Module big = exported("resnet20", 1.0);
  LatencyOptions options;
  options.warmup_runs = 2;
  options.warmup_seconds = 0.02;
  options.min_runs = 5;
  options.min_seconds = 0.1;
  options.threads = 1;
  const auto input = torch::randn({8, 1, 28, 28});
  const auto start = std::chrono::steady_clock::now();
  const LatencyStats fast = measure_latency(tiny, input, options);
  EXPECT_GE(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.12);
  const LatencyStats slow = measure_latency(big, input, options);
  for (const LatencyStats& s : {fast, slow}) {
    EXPECT_EQ(s.batch_size, 8);
    EXPECT_GE(s.runs, 5);
    EXPECT_GE(s.mean_ms * static_cast<double>(s.runs), 0.1 * 1000.0 * 0.9);  // the timed minimum, less loop overhead
    EXPECT_GT(s.min_ms, 0.0);
    EXPECT_LE(s.min_ms, s.p50_ms);
    EXPECT_LE(s.p50_ms, s.p90_ms);
    EXPECT_LE(s.p90_ms, s.p99_ms);
    EXPECT_GT(s.images_per_second, 0.0);
  }
  EXPECT_GT(slow.p50_ms, 2.0 * fast.p50_ms) << "resnet20 " << slow.p50_ms << " ms, small-cnn " << fast.p50_ms;
}

TEST(MeasureLatency, ArtifactMetricsAtBatchOneAndThirtyTwo) {
  TempFolder folder("latency");
  torch::manual_seed(4);
  GraphModule model(build_zoo_model("small-cnn", Shape{1, 28, 28, false}, 10, 0.5));
  save_torchscript(model, Json::object(), folder / "model.pt");
  const auto metrics = measure_artifact_latency(folder / "model.pt", Shape{1, 28, 28, false}, 0.1, 1);
  std::vector<std::string> names;
  for (const Metric& m : metrics) {
    names.push_back(m.name);
    EXPECT_EQ(m.step, -1);
    EXPECT_GT(m.value, 0.0) << m.name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"latency_b1_ms", "latency_b1_p90_ms", "latency_b32_ms",
                                             "latency_b32_p90_ms"}));
  EXPECT_LE(metrics[0].value, metrics[1].value);
  EXPECT_LE(metrics[2].value, metrics[3].value);
  EXPECT_LT(metrics[0].value, metrics[2].value);  // one image is quicker than 32
  EXPECT_TRUE(measure_artifact_latency(folder / "model.pt", Shape{1, 28, 28, false}, 0.0, 1).empty());
}

TEST(InferenceForm, FrozenAndOptimizedComputeWhatTheArchiveDoesWithBatchNormFolded) {
  torch::jit::Module archive = exported("resnet20", 0.5);
  const auto graph_text = [](torch::jit::Module& m) { return m.get_method("forward").graph()->toString(); };
  EXPECT_NE(graph_text(archive).find("aten::batch_norm"), std::string::npos);
  const auto input = torch::randn({4, 1, 28, 28});
  c10::InferenceMode inference;
  const auto expected = archive.forward({input}).toTensor();
  for (InferenceForm form : {InferenceForm::Archive, InferenceForm::Frozen, InferenceForm::Optimized}) {
    torch::jit::Module prepared = prepare_for_inference(archive.clone(), form);
    EXPECT_TRUE(torch::allclose(prepared.forward({input}).toTensor(), expected, 1e-4, 1e-4))
        << inference_form_name(form);
    if (form != InferenceForm::Archive) {
      EXPECT_EQ(graph_text(prepared).find("aten::batch_norm"), std::string::npos) << inference_form_name(form);
    }
    EXPECT_EQ(inference_form_from_name(inference_form_name(form)), form);
  }
  EXPECT_THROW(inference_form_from_name("fast"), InputError);
}

}  // namespace
}  // namespace edgesweep
