// Tests of trial expansion: grid order, the max_trials bound, seeded random samples and deduplication.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "edgesweep/common/error.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {
namespace {

/// The design's example with the stages that exist; `search` is appended as the [search] table's body.
std::string example_with_search(const std::string& search, uint64_t seed = 7) {
  return "[experiment]\nname = \"fmnist-quickstart\"\nseed = " + std::to_string(seed) + R"(
[data]
dataset = "fashion-mnist"
train_subset = 10000
[model]
arch = ["small-cnn", "resnet8"]
[baseline]
epochs = 3
lr = 0.05
batch_size = 128
[[pipeline]]
stage = "finetune"
lr = [0.01, 0.05]
epochs = [1, 2]
[search]
)" + search;
}

std::vector<std::string> hashes_of(const std::vector<TrialConfig>& trials) {
  std::vector<std::string> hashes;
  for (const TrialConfig& trial : trials) hashes.push_back(trial_hash(trial));
  return hashes;
}

TEST(Search, CountsCombinations) {
  EXPECT_EQ(count_combinations(parse_spec_string(example_with_search(""), "x.toml")), 8u);
  EXPECT_EQ(count_combinations(parse_spec_string("[experiment]\nname = \"t\"\n", "x.toml")), 1u);
  EXPECT_EQ(count_combinations(parse_spec_string("[experiment]\nname = \"t\"\n[baseline]\nepochs = [1, 2, 3]\n"
                                                 "[model]\nwidth = [0.5, 1, 2, 4, 8]\n",
                                                 "x.toml")),
            15u);
}

TEST(Search, NoSweepGivesTheBaseTrial) {
  const ExperimentSpec spec = parse_spec_string("[experiment]\nname = \"t\"\nseed = 3\n", "x.toml");
  const std::vector<TrialConfig> trials = expand_trials(spec);
  ASSERT_EQ(trials.size(), 1u);
  EXPECT_EQ(Json(trials[0]), spec.base_trial);
  EXPECT_EQ(trials[0].seed, 3u);
  EXPECT_TRUE(trials[0].pipeline.empty());
}

TEST(Search, GridVariesTheLastDimensionFastest) {
  const ExperimentSpec spec = parse_spec_string(example_with_search(""), "x.toml");
  const std::vector<TrialConfig> trials = expand_trials(spec);
  ASSERT_EQ(trials.size(), 8u);
  const std::string archs[] = {"small-cnn", "resnet8"};
  const double lrs[] = {0.01, 0.05};
  const int64_t epochs[] = {1, 2};
  for (size_t i = 0; i < trials.size(); ++i) {
    SCOPED_TRACE(i);
    const TrialConfig& trial = trials[i];
    EXPECT_EQ(trial.model.arch, archs[i / 4]);
    ASSERT_EQ(trial.pipeline.size(), 1u);
    EXPECT_EQ(trial.pipeline[0].stage, "finetune");
    EXPECT_DOUBLE_EQ(trial.pipeline[0].params.at("lr").get<double>(), lrs[(i / 2) % 2]);
    EXPECT_EQ(trial.pipeline[0].params.at("epochs").get<int64_t>(), epochs[i % 2]);
    // Settings that are not swept keep their values in every trial.
    EXPECT_EQ(trial.seed, 7u);
    EXPECT_EQ(trial.data.train_subset, 10000);
    EXPECT_EQ(trial.baseline.epochs, 3);
    EXPECT_DOUBLE_EQ(trial.baseline.lr, 0.05);
    EXPECT_EQ(trial.baseline.optimizer, "sgd");
    EXPECT_EQ(trial.pipeline[0].params.at("optimizer"), "sgd");
  }
  const std::vector<std::string> hashes = hashes_of(trials);
  EXPECT_EQ(std::set<std::string>(hashes.begin(), hashes.end()).size(), 8u);
}

TEST(Search, GridSetsSweptBaselineSettings) {
  const ExperimentSpec spec =
      parse_spec_string("[experiment]\nname = \"t\"\n[baseline]\nepochs = [1, 2]\nnesterov = [true, false]\n",
                        "x.toml");
  const std::vector<TrialConfig> trials = expand_trials(spec);
  ASSERT_EQ(trials.size(), 4u);
  EXPECT_EQ(trials[0].baseline.epochs, 1);
  EXPECT_TRUE(trials[0].baseline.nesterov);
  EXPECT_EQ(trials[1].baseline.epochs, 1);
  EXPECT_FALSE(trials[1].baseline.nesterov);
  EXPECT_EQ(trials[2].baseline.epochs, 2);
  EXPECT_TRUE(trials[2].baseline.nesterov);
  EXPECT_EQ(trials[3].baseline.epochs, 2);
  EXPECT_FALSE(trials[3].baseline.nesterov);
}

TEST(Search, GridLargerThanMaxTrialsIsAnError) {
  const ExperimentSpec spec = parse_spec_string(example_with_search("max_trials = 4\n"), "x.toml");
  try {
    expand_trials(spec);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "grid has 8 combinations, more than [search] max_trials = 4; hint: raise max_trials, or sample "
                 "with strategy = \"random\"");
  }
  EXPECT_EQ(expand_trials(parse_spec_string(example_with_search("max_trials = 8\n"), "x.toml")).size(), 8u);
}

TEST(Search, RandomSamplesDistinctCombinationsReproducibly) {
  const std::string search = "strategy = \"random\"\nmax_trials = 3\n";
  const ExperimentSpec spec = parse_spec_string(example_with_search(search, 7), "x.toml");
  const std::vector<TrialConfig> trials = expand_trials(spec);
  ASSERT_EQ(trials.size(), 3u);
  const std::vector<std::string> hashes = hashes_of(trials);
  EXPECT_EQ(std::set<std::string>(hashes.begin(), hashes.end()).size(), 3u);

  // Every sampled trial is one of the grid's.
  ExperimentSpec grid_spec = spec;
  grid_spec.strategy = "grid";
  grid_spec.max_trials = 0;
  const std::vector<std::string> grid = hashes_of(expand_trials(grid_spec));
  for (const std::string& hash : hashes) EXPECT_NE(std::find(grid.begin(), grid.end(), hash), grid.end());

  // The same seed gives the same trials in the same order.
  EXPECT_EQ(hashes_of(expand_trials(parse_spec_string(example_with_search(search, 7), "x.toml"))), hashes);

  // Another seed gives another sample or order (the trial seed differs too, so compare the swept values).
  auto swept_values = [](const std::vector<TrialConfig>& sample) {
    std::vector<Json> values;
    for (const TrialConfig& trial : sample) {
      values.push_back(Json{trial.model.arch, trial.pipeline[0].params["lr"], trial.pipeline[0].params["epochs"]});
    }
    return values;
  };
  const std::vector<TrialConfig> other = expand_trials(parse_spec_string(example_with_search(search, 8), "x.toml"));
  ASSERT_EQ(other.size(), 3u);
  EXPECT_NE(swept_values(other), swept_values(trials));
}

TEST(Search, RandomWithoutLimitGivesTheWholeGridShuffled) {
  for (const std::string& limit : {std::string("max_trials = 0\n"), std::string("max_trials = 8\n"),
                                   std::string("max_trials = 100\n")}) {
    SCOPED_TRACE(limit);
    const ExperimentSpec spec = parse_spec_string(example_with_search("strategy = \"random\"\n" + limit), "x.toml");
    const std::vector<std::string> sample = hashes_of(expand_trials(spec));
    ExperimentSpec grid_spec = spec;
    grid_spec.strategy = "grid";
    grid_spec.max_trials = 0;
    const std::vector<std::string> grid = hashes_of(expand_trials(grid_spec));
    ASSERT_EQ(sample.size(), 8u);
    EXPECT_EQ(std::set<std::string>(sample.begin(), sample.end()), std::set<std::string>(grid.begin(), grid.end()));
    EXPECT_NE(sample, grid);  // shuffled (for this seed the identity order is not drawn)
  }
}

TEST(Search, IdenticalConfigsAppearOnce) {
  ExperimentSpec spec = parse_spec_string("[experiment]\nname = \"t\"\n[baseline]\nepochs = [1, 2]\n", "x.toml");
  // A second dimension at the same pointer makes combinations (1, 5) and (2, 5) the same config, as are
  // (1, 6) and (2, 6): the later dimension wins.
  spec.dimensions.push_back({"/baseline/epochs", "baseline.epochs", {5, 6}});
  EXPECT_EQ(count_combinations(spec), 4u);
  const std::vector<TrialConfig> trials = expand_trials(spec);
  ASSERT_EQ(trials.size(), 2u);
  EXPECT_EQ(trials[0].baseline.epochs, 5);
  EXPECT_EQ(trials[1].baseline.epochs, 6);
}

}  // namespace
}  // namespace edgesweep
