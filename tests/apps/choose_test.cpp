// End-to-end tests of `edgesweep pareto` and `edgesweep export` on a store written through the Store API (a
// baseline and three trials, two devices, measurements at two batch sizes), so nothing trains.
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "app_harness.h"
#include "edgesweep/common/json.h"
#include "edgesweep/common/trial_config.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep::apps_test {
namespace {

/// Trial ids of the synthetic experiment.
struct Ids {
  int64_t baseline = 0;
  int64_t slow_lr = 0;    ///< lr 0.01: small drop, smaller and faster than the baseline
  int64_t mid_lr = 0;     ///< lr 0.05: fastest, but drops 1.8-2.5 points on the devices
  int64_t fast_lr = 0;    ///< lr 0.1: dominated by lr 0.01 on board-a; measured on board-b at batch 8 only
};

class ChooseTest : public AppTest {
 protected:
  /// Writes the experiment file and its store; `constraints` is the [objectives] constraints array.
  Ids write_store(const std::string& constraints = R"(["accuracy_drop <= 1.0"])") {
    spec_path_ = write_file("choose.toml", fmt::format(R"toml([experiment]
name = "choose"

[run]
results_dir = '{}'

[[pipeline]]
stage = "finetune"
lr = [0.01, 0.05, 0.1]

[[devices]]
name = "board-a"
address = "127.0.0.1:7070"

[[devices]]
name = "board-b"
address = "127.0.0.1:7071"

[objectives]
constraints = {}
)toml",
                                                       results_dir_.string(), constraints));
    const ExperimentSpec spec = parse_spec_file(spec_path_);
    db_ = results_dir_ / "edgesweep.db";
    Store store = Store::open(db_, Store::Mode::ReadWrite);
    const int64_t experiment = store.create_experiment(spec.name, spec.text, spec.hash);
    const std::vector<TrialConfig> configs = expand_trials(spec);
    EXPECT_EQ(configs.size(), 3u);

    DeviceRow a;
    a.name = "board-a";
    a.address = "127.0.0.1:7070";
    const int64_t board_a = store.upsert_device(a);
    DeviceRow b;
    b.name = "board-b";
    b.address = "127.0.0.1:7071";
    const int64_t board_b = store.upsert_device(b);

    const auto add = [&](const std::string& kind, const Json& config, const std::string& hash,
                         const std::vector<MetricRow>& metrics) {
      const int64_t id = store.add_trial(experiment, kind, config, hash);
      store.mark_running(id, 1);
      std::vector<MetricRow> rows = metrics;
      for (MetricRow& m : rows) {
        m.trial_id = id;
        m.step = -1;
      }
      store.add_metrics(rows);
      ArtifactRow artifact;
      artifact.trial_id = id;
      artifact.kind = kind == "baseline" ? "baseline" : "model";
      artifact.path = fmt::format("artifacts/{}.pt", id);
      artifact.sha256 = std::string(64, 'c');
      artifact.bytes = static_cast<int64_t>(metrics.back().value);
      artifact.format = "torchscript";
      const int64_t artifact_id = store.add_artifact(artifact);
      store.mark_done(id);
      return std::make_pair(id, artifact_id);
    };
    const auto measure = [&](int64_t artifact, int64_t device, int64_t batch, double p50, double rss,
                             double accuracy) {
      MeasurementRow m;
      m.artifact_id = artifact;
      m.device_id = device;
      m.batch = batch;
      m.latency_p50_ms = p50;
      m.latency_p90_ms = p50 * 1.2;
      m.latency_p99_ms = p50 * 1.5;
      m.fps = 1000.0 * batch / p50;
      m.peak_rss_mb = rss;
      m.accuracy = accuracy;
      m.raw = {{"runs_ms", {p50, p50}}};
      store.add_measurement(m);
    };

    Ids ids;
    const TrialConfig& first = configs[0];
    const Json baseline_config = Json{{"seed", first.seed}, {"data", first.data}, {"model", first.model},
                                      {"baseline", first.baseline}, {"pipeline", Json::array()}};
    auto [baseline, baseline_artifact] = add("baseline", baseline_config, baseline_hash(first),
                                             {{0, 0, "test_accuracy", 90.0}, {0, 0, "model_bytes", 1000}});
    ids.baseline = baseline;
    measure(baseline_artifact, board_a, 1, 10, 100, 90.0);
    measure(baseline_artifact, board_b, 1, 20, 100, 89.5);

    auto [slow, slow_artifact] =
        add("trial", Json(configs[0]), trial_hash(configs[0]),
            {{0, 0, "test_accuracy", 89.6}, {0, 0, "accuracy_drop", 0.4}, {0, 0, "latency_b1_ms", 3.0},
             {0, 0, "model_bytes", 500}});
    ids.slow_lr = slow;
    measure(slow_artifact, board_a, 1, 5, 60, 89.5);
    measure(slow_artifact, board_b, 1, 9, 60, 89.0);

    auto [mid, mid_artifact] = add("trial", Json(configs[1]), trial_hash(configs[1]),
                                   {{0, 0, "test_accuracy", 88.0}, {0, 0, "accuracy_drop", 2.0},
                                    {0, 0, "model_bytes", 250}});
    ids.mid_lr = mid;
    measure(mid_artifact, board_a, 1, 2, 40, 88.2);
    measure(mid_artifact, board_b, 1, 4, 40, 87.0);

    auto [fast, fast_artifact] = add("trial", Json(configs[2]), trial_hash(configs[2]),
                                     {{0, 0, "test_accuracy", 89.7}, {0, 0, "accuracy_drop", 0.3},
                                      {0, 0, "model_bytes", 600}});
    ids.fast_lr = fast;
    measure(fast_artifact, board_a, 1, 6, 70, 89.4);
    measure(fast_artifact, board_b, 8, 30, 70, 89.3);
    return ids;
  }

  /// The front of `device` in `pareto --format json` output: trial ids in order and the knee's trial id.
  static std::pair<std::vector<int64_t>, int64_t> front_of(const Json& fronts, const std::string& device) {
    for (const Json& f : fronts) {
      if (f["device"] != device) continue;
      std::vector<int64_t> trials;
      int64_t knee = 0;
      for (const Json& member : f["front"]) {
        trials.push_back(member["trial_id"].get<int64_t>());
        if (member["knee"].get<bool>()) knee = member["trial_id"].get<int64_t>();
      }
      return {trials, knee};
    }
    ADD_FAILURE() << "no device " << device << " in " << fronts.dump();
    return {};
  }

  fs::path spec_path_;
  fs::path db_;
};

TEST_F(ChooseTest, ParetoUsesTheExperimentsObjectivesPerDevice) {
  const Ids ids = write_store();
  const ProcessResult result = edgesweep({"pareto", db_.string(), "--format", "json"});
  ASSERT_FALSE(result.timed_out) << describe(result);
  ASSERT_EQ(result.exit_code, 0) << describe(result);
  Json fronts;
  ASSERT_NO_THROW(fronts = Json::parse(result.out)) << describe(result);
  ASSERT_EQ(fronts.size(), 3u) << "board-a, board-b and the in-process latency\n" << describe(result);

  // Default objectives (max accuracy; min latency_p50_ms, peak_rss_mb, model_bytes), accuracy_drop <= 1.0 from the
  // spec, the drop measured against the baseline on the same device: lr 0.05 fails it, lr 0.1 is dominated.
  const auto [a_front, a_knee] = front_of(fronts, "board-a");
  EXPECT_EQ(a_front, (std::vector<int64_t>{ids.baseline, ids.slow_lr})) << "best accuracy first";
  EXPECT_EQ(a_knee, ids.slow_lr);
  EXPECT_EQ(fronts[0]["rejected"], 1);
  EXPECT_EQ(fronts[0]["objectives"].size(), 4u);
  EXPECT_EQ(fronts[0]["constraints"], Json::array({"accuracy_drop <= 1.0"}));
  const Json& slow = fronts[0]["front"][1];
  EXPECT_EQ(slow["settings"], Json::parse(R"({"pipeline[0].lr": 0.01})"));
  EXPECT_DOUBLE_EQ(slow["values"]["accuracy"].get<double>(), 89.5);
  EXPECT_DOUBLE_EQ(slow["values"]["accuracy_drop"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(slow["values"]["peak_rss_mb"].get<double>(), 60);
  const auto [b_front, b_knee] = front_of(fronts, "board-b");
  EXPECT_EQ(b_front, (std::vector<int64_t>{ids.baseline, ids.slow_lr}));
  EXPECT_EQ(fronts[1]["rejected"], 1);
  // In-process: only latency, no peak RSS, so nothing is complete.
  EXPECT_EQ(fronts[2]["device"], "in-process");
  EXPECT_EQ(fronts[2]["incomplete"], 1);
  EXPECT_TRUE(fronts[2]["front"].empty());

  // The table marks the knee and shows the settings; the experiment file names the same store.
  const ProcessResult table = edgesweep({"pareto", spec_path_.string()});
  ASSERT_EQ(table.exit_code, 0) << describe(table);
  EXPECT_TRUE(contains(table.out, "device board-a: 4 candidate(s), 2 on the front, 1 failing the constraints"))
      << describe(table);
  EXPECT_TRUE(contains(table.out, fmt::format("*      {}  pipeline[0].lr=0.01", ids.slow_lr))) << describe(table);
  EXPECT_TRUE(contains(table.out, "baseline")) << describe(table);
  EXPECT_TRUE(contains(table.out, "constraints: accuracy_drop <= 1.0")) << describe(table);
  EXPECT_TRUE(contains(table.out, "no feasible candidate")) << describe(table);
}

TEST_F(ChooseTest, CommandLineObjectivesConstraintsDeviceAndBatchReplaceTheDefaults) {
  const Ids ids = write_store();
  const ProcessResult result =
      edgesweep({"pareto", db_.string(), "--device", "board-a", "--constraint", "accuracy_drop <= 3", "--maximize",
                 "accuracy", "--minimize", "latency_p50_ms", "--format", "json"});
  ASSERT_EQ(result.exit_code, 0) << describe(result);
  Json fronts = Json::parse(result.out);
  ASSERT_EQ(fronts.size(), 1u);
  EXPECT_EQ(front_of(fronts, "board-a").first, (std::vector<int64_t>{ids.baseline, ids.slow_lr, ids.mid_lr}));
  EXPECT_EQ(fronts[0]["rejected"], 0);

  const ProcessResult unconstrained = edgesweep({"pareto", db_.string(), "--device", "board-b", "--no-constraints",
                                                 "--minimize", "latency_p50_ms", "--format", "json"});
  ASSERT_EQ(unconstrained.exit_code, 0) << describe(unconstrained);
  EXPECT_EQ(front_of(Json::parse(unconstrained.out), "board-b").first, (std::vector<int64_t>{ids.mid_lr}));

  // Batch 8: only lr 0.1 on board-b; its drop is against the baseline's board-b accuracy at batch 1.
  const ProcessResult batch8 = edgesweep({"pareto", db_.string(), "--batch", "8", "--format", "json"});
  ASSERT_EQ(batch8.exit_code, 0) << describe(batch8);
  fronts = Json::parse(batch8.out);
  ASSERT_EQ(fronts.size(), 1u) << describe(batch8);
  EXPECT_EQ(front_of(fronts, "board-b").first, (std::vector<int64_t>{ids.fast_lr}));
  EXPECT_NEAR(fronts[0]["front"][0]["values"]["accuracy_drop"].get<double>(), 0.2, 1e-9);

  const ProcessResult csv = edgesweep({"pareto", db_.string(), "--format", "csv", "--device", "board-a"});
  ASSERT_EQ(csv.exit_code, 0) << describe(csv);
  EXPECT_TRUE(contains(csv.out, "device,batch,knee,trial_id,artifact_id,kind,settings,accuracy,latency_p50_ms,"
                                "peak_rss_mb,model_bytes,accuracy_drop\n"))
      << describe(csv);
  EXPECT_TRUE(contains(csv.out, fmt::format("board-a,1,1,{},", ids.slow_lr))) << describe(csv);
}

TEST_F(ChooseTest, BadParetoInputExitsTwoWithAClearMessage) {
  write_store();
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--constraint", "acc <= 1"}, "constraint 'acc <= 1'"},
      {{"--constraint", "accuracy_drop => 1"}, "known metrics: accuracy, accuracy_drop"},
      {{"--maximize", "speed"}, "unknown metric 'speed'"},
      {{"--maximize", "fps", "--minimize", "fps"}, "'fps' is both maximised and minimised"},
      {{"--device", "phone"}, "device 'phone' has no candidate at batch 1 (devices: board-a, board-b, in-process)"},
      {{"--format", "xml"}, "unknown format 'xml'"},
      {{"--batch", "0"}, ""},
      {{"--experiment", "other"}, "holds no experiment 'other'"},
  };
  for (const auto& [extra, message] : cases) {
    std::vector<std::string> args = {"pareto", db_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    const ProcessResult result = edgesweep(args);
    SCOPED_TRACE(extra.front() + " " + extra.back());
    ASSERT_FALSE(result.timed_out) << describe(result);
    EXPECT_EQ(result.exit_code, 2) << describe(result);
    EXPECT_TRUE(contains(result.err, message)) << describe(result);
  }
}

TEST_F(ChooseTest, ParetoWithoutMeasurementsSaysSo) {
  const fs::path db = results_dir_ / "empty.db";
  {
    Store store = Store::open(db, Store::Mode::ReadWrite);
    const int64_t experiment = store.create_experiment("empty", "[experiment]\nname = \"empty\"\n", "h");
    store.add_trial(experiment, "trial", Json::object(), "pending-one");
  }
  const ProcessResult result = edgesweep({"pareto", db.string()});
  ASSERT_EQ(result.exit_code, 0) << describe(result);
  EXPECT_TRUE(contains(result.out, "no candidate at batch 1")) << describe(result);
}

TEST_F(ChooseTest, ExportWritesTrialsSettingsMetricsAndMeasurements) {
  const Ids ids = write_store();
  const ProcessResult json = edgesweep({"export", db_.string(), "--format", "json"});
  ASSERT_EQ(json.exit_code, 0) << describe(json);
  Json exported;
  ASSERT_NO_THROW(exported = Json::parse(json.out)) << describe(json);
  EXPECT_EQ(exported["experiment"]["name"], "choose");
  EXPECT_EQ(exported["devices"].size(), 2u);
  ASSERT_EQ(exported["trials"].size(), 4u);
  const Json& slow = exported["trials"][1];
  EXPECT_EQ(slow["id"], ids.slow_lr);
  EXPECT_EQ(slow["settings"], Json::parse(R"({"pipeline[0].lr": 0.01})"));
  EXPECT_EQ(slow["metrics"]["test_accuracy"], 89.6);
  ASSERT_EQ(slow["artifacts"].size(), 1u);
  ASSERT_EQ(slow["artifacts"][0]["measurements"].size(), 2u);
  EXPECT_EQ(slow["artifacts"][0]["measurements"][1]["device"], "board-b");
  EXPECT_EQ(slow["artifacts"][0]["measurements"][1]["peak_rss_mb"], 60.0);
  EXPECT_EQ(slow["artifacts"][0]["measurements"][1]["latency_min_ms"], nullptr) << "not measured: null";
  EXPECT_EQ(slow["artifacts"][0]["measurements"][1]["raw"]["runs_ms"].size(), 2u);

  const fs::path csv_file = folder_ / "out.csv";
  const ProcessResult csv = edgesweep({"export", db_.string(), "--format", "csv", "--output", csv_file.string()});
  ASSERT_EQ(csv.exit_code, 0) << describe(csv);
  EXPECT_TRUE(csv.out.empty()) << describe(csv);
  std::ifstream in(csv_file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 9u) << "a header and one row per measurement (8)";
  EXPECT_EQ(lines[0],
            "trial_id,kind,status,pipeline[0].lr,accuracy_drop,latency_b1_ms,model_bytes,test_accuracy,artifact_id,"
            "sha256,device,batch,latency_min_ms,latency_mean_ms,latency_p50_ms,latency_p90_ms,latency_p99_ms,"
            "latency_std_ms,fps,peak_rss_mb,device_accuracy,measured_at");
  EXPECT_TRUE(contains(lines[3], fmt::format("{},trial,done,0.01,0.4,3,500,89.6,", ids.slow_lr))) << lines[3];
  EXPECT_TRUE(contains(lines[3], ",board-a,1,,,5,6,7.5,,200,60,89.5,")) << lines[3];

  for (const std::vector<std::string>& bad :
       std::vector<std::vector<std::string>>{{"export", db_.string(), "--format", "xml"},
                                             {"export", db_.string()},
                                             {"export", db_.string(), "--format", "csv", "--output",
                                              (folder_ / "missing" / "x.csv").string()}}) {
    const ProcessResult result = edgesweep(bad);
    SCOPED_TRACE(bad.back());
    EXPECT_EQ(result.exit_code, 2) << describe(result);
    EXPECT_FALSE(result.err.empty()) << describe(result);
  }
}

}  // namespace
}  // namespace edgesweep::apps_test
