// Tests of the Pareto selection against its definitions: the front equals a brute-force dominance check on seeded
// random points (2-4 objectives, mixed directions, duplicates and ties), constraints, the knee and parse errors.
#include "edgesweep/orchestrator/pareto.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "edgesweep/common/error.h"

namespace edgesweep {
namespace {

/// Whether a dominates b: at least as good in every objective and strictly better in one.
bool dominates(const std::vector<double>& a, const std::vector<double>& b, const std::vector<Objective>& objectives) {
  bool strictly = false;
  for (size_t j = 0; j < objectives.size(); ++j) {
    const double x = objectives[j].maximize ? -a[j] : a[j];
    const double y = objectives[j].maximize ? -b[j] : b[j];
    if (x > y) return false;
    if (x < y) strictly = true;
  }
  return strictly;
}

/// The definition, O(n^2): every point no other point dominates, ascending.
std::vector<size_t> brute_force_front(const std::vector<std::vector<double>>& points,
                                      const std::vector<Objective>& objectives) {
  std::vector<size_t> front;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) dominated = dominates(points[j], points[i], objectives);
    if (!dominated) front.push_back(i);
  }
  return front;
}

/// Seeded random points; `levels` > 0 draws each value from that many levels (many ties), and a share of points are
/// copies of earlier ones, and about 2% hold an infinity. `tradeoff` puts points near the plane sum = const, so
/// fronts are large.
std::vector<std::vector<double>> random_points(std::mt19937_64& random, size_t n, size_t d, int levels,
                                               bool tradeoff) {
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<int> level(0, std::max(levels - 1, 0));
  std::vector<std::vector<double>> points;
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && uniform(random) < 0.1) {
      points.push_back(points[std::uniform_int_distribution<size_t>(0, i - 1)(random)]);
      continue;
    }
    std::vector<double> p(d);
    double sum = 0;
    for (size_t j = 0; j < d; ++j) {
      p[j] = levels > 0 ? level(random) : uniform(random);
      sum += p[j];
    }
    if (tradeoff && levels == 0) {
      for (double& x : p) x = x / sum + 0.01 * uniform(random);
    }
    if (uniform(random) < 0.02) p[i % d] = (i % 2 == 0 ? 1 : -1) * std::numeric_limits<double>::infinity();
    points.push_back(p);
  }
  return points;
}

TEST(ParetoFront, EqualsBruteForceOnRandomPoints) {
  std::mt19937_64 random(20261201);
  int cases = 0;
  for (size_t d = 1; d <= 5; ++d) {
    for (size_t n : {0, 1, 2, 7, 60, 400, 1500}) {
      for (int levels : {0, 3, 12}) {
        for (bool tradeoff : {false, true}) {
          std::vector<Objective> objectives;
          for (size_t j = 0; j < d; ++j) objectives.push_back({fmt::format("m{}", j), random() % 2 == 0});
          const auto points = random_points(random, n, d, levels, tradeoff);
          SCOPED_TRACE(fmt::format("d={} n={} levels={} tradeoff={}", d, n, levels, tradeoff));
          EXPECT_EQ(pareto_front(points, objectives), brute_force_front(points, objectives));
          ++cases;
        }
      }
    }
  }
  EXPECT_EQ(cases, 5 * 7 * 3 * 2);
}

TEST(ParetoFront, KeepsEveryCopyOfANonDominatedPointAndDropsDominatedOnes) {
  const std::vector<Objective> objectives = {{"accuracy", true}, {"latency_p50_ms", false}};
  const std::vector<std::vector<double>> points = {
      {90, 2}, {90, 2}, {80, 1}, {85, 3}, {90, 3}, {80, 1}, {95, 5},
  };
  // {85,3} and {90,3} are dominated by {90,2}; the copies of {90,2} and {80,1} stay.
  EXPECT_EQ(pareto_front(points, objectives), (std::vector<size_t>{0, 1, 2, 5, 6}));
}

TEST(ParetoFront, HandlesInfinitiesAndRefusesNaNAndWrongSizes) {
  const std::vector<Objective> objectives = {{"a", false}, {"b", false}};
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(pareto_front({{inf, 0}, {0, inf}, {inf, inf}, {1, 1}}, objectives), (std::vector<size_t>{0, 1, 3}));
  EXPECT_THROW(pareto_front({{1, std::nan("")}}, objectives), InputError);
  EXPECT_THROW(pareto_front({{1, 2, 3}}, objectives), InputError);
  EXPECT_THROW(pareto_front({{1}}, {}), InputError);
}

TEST(KneePoint, IsTheFrontPointNearestTheNormalisedIdeal) {
  const std::vector<Objective> objectives = {{"accuracy", true}, {"latency_p50_ms", false}};
  // Front: (70, 1), (88, 2), (90, 10). Normalised (0 = best): (1, 0), (0.1, 0.111), (0, 1): the knee is (88, 2).
  const std::vector<std::vector<double>> points = {{70, 1}, {88, 2}, {90, 10}, {60, 5}};
  const auto front = pareto_front(points, objectives);
  ASSERT_EQ(front, (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(knee_point(points, front, objectives), std::optional<size_t>(1));
  EXPECT_EQ(knee_point(points, {}, objectives), std::nullopt);
  // One point: it is the knee. Equal distances: the lower index.
  EXPECT_EQ(knee_point(points, {2}, objectives), std::optional<size_t>(2));
  const std::vector<std::vector<double>> symmetric = {{1, 0}, {0, 1}};
  EXPECT_EQ(knee_point(symmetric, {0, 1}, {{"a", false}, {"b", false}}), std::optional<size_t>(0));
}

TEST(ParseConstraint, ReadsEveryOperatorWithOrWithoutSpaces) {
  const Constraint c = parse_constraint("  accuracy_drop <= 1.0 ");
  EXPECT_EQ(c.metric, "accuracy_drop");
  EXPECT_EQ(c.op, "<=");
  EXPECT_EQ(c.value, 1.0);
  EXPECT_EQ(c.text, "accuracy_drop <= 1.0");
  for (const char* op : {"<=", "<", ">=", ">", "=="}) {
    const Constraint d = parse_constraint(fmt::format("fps{}25", op));
    EXPECT_EQ(d.metric, "fps");
    EXPECT_EQ(d.op, op);
    EXPECT_EQ(d.value, 25.0);
  }
  EXPECT_EQ(parse_constraint("peak_rss_mb < 1e3").value, 1000.0);
  EXPECT_EQ(parse_constraint("accuracy_drop>=-0.5").value, -0.5);
}

TEST(ParseConstraint, ErrorsNameTheTextAndTheKnownMetrics) {
  for (const char* bad : {"accuracy_drop", "accuracy_drop <=", "<= 1", "accuracy_drop = 1", "accuracy_drop <= x",
                          "accuracy_drop <= 1 2", "accuracy_drop <= inf", "accuracy drop <= 1", "speed >= 3", ""}) {
    SCOPED_TRACE(bad);
    try {
      parse_constraint(bad);
      ADD_FAILURE() << "expected an InputError";
    } catch (const InputError& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(fmt::format("'{}'", bad)), std::string::npos) << message;
      EXPECT_NE(message.find("known metrics: accuracy, accuracy_drop, latency_p50_ms"), std::string::npos) << message;
    }
  }
}

TEST(ConstraintHolds, FollowsTheOperatorAndRefusesNaN) {
  EXPECT_TRUE(constraint_holds(parse_constraint("fps >= 25"), 25));
  EXPECT_FALSE(constraint_holds(parse_constraint("fps > 25"), 25));
  EXPECT_TRUE(constraint_holds(parse_constraint("fps < 25"), 24.9));
  EXPECT_TRUE(constraint_holds(parse_constraint("fps == 25"), 25));
  EXPECT_FALSE(constraint_holds(parse_constraint("fps <= 25"), std::nan("")));
}

Candidate candidate(int64_t trial, const std::string& device, std::map<std::string, double> values,
                    int64_t batch = 1) {
  Candidate c;
  c.trial_id = trial;
  c.artifact_id = trial + 100;
  c.device = device;
  c.batch = batch;
  c.values = std::move(values);
  return c;
}

TEST(SelectPareto, AppliesConstraintsPerDeviceAndMarksTheKnee) {
  const std::vector<Candidate> candidates = {
      candidate(1, "board", {{"accuracy", 91}, {"accuracy_drop", 0}, {"latency_p50_ms", 10}}),
      candidate(2, "board", {{"accuracy", 90.8}, {"accuracy_drop", 0.2}, {"latency_p50_ms", 4}}),
      candidate(3, "board", {{"accuracy", 88}, {"accuracy_drop", 3}, {"latency_p50_ms", 1}}),  // fails the constraint
      candidate(4, "board", {{"accuracy", 89}, {"accuracy_drop", 2}, {"latency_p50_ms", 6}}),  // fails, dominated
      candidate(5, "board", {{"accuracy", 90}, {"latency_p50_ms", 3}}),                      // lacks accuracy_drop
      candidate(6, "board", {{"accuracy", 90}, {"accuracy_drop", 1}, {"latency_p50_ms", 5}}),  // dominated by 2
      candidate(9, "board", {{"accuracy", 80}, {"accuracy_drop", 0.5}, {"latency_p50_ms", 1}}),
      candidate(7, "laptop", {{"accuracy", 91}, {"accuracy_drop", 0}, {"latency_p50_ms", 2}}),
      candidate(8, "laptop", {{"accuracy", 91}, {"accuracy_drop", 0}, {"latency_p50_ms", 2}}, 32),  // other batch
  };
  ParetoOptions options;
  options.objectives = {{"accuracy", true}, {"latency_p50_ms", false}};
  options.constraints = {parse_constraint("accuracy_drop <= 1.0")};
  const auto fronts = select_pareto(candidates, options);
  ASSERT_EQ(fronts.size(), 2u);
  const DeviceFront& board = fronts[0];
  EXPECT_EQ(board.device, "board");
  EXPECT_EQ(board.candidates, 7u);
  EXPECT_EQ(board.rejected, 2u);
  EXPECT_EQ(board.incomplete, 1u);
  ASSERT_EQ(board.feasible.size(), 4u);
  std::vector<int64_t> front_trials;
  for (size_t i : board.front) front_trials.push_back(board.feasible[i].trial_id);
  EXPECT_EQ(front_trials, (std::vector<int64_t>{1, 2, 9})) << "best accuracy first";
  for (size_t i : board.front) {
    EXPECT_TRUE(constraint_holds(options.constraints[0], board.feasible[i].values.at("accuracy_drop")));
  }
  ASSERT_TRUE(board.knee.has_value());
  // Normalised over the front (accuracy 80..91, latency 1..10): trial 1 (0, 1), trial 2 (0.018, 0.333), trial 9 (1, 0).
  EXPECT_EQ(board.feasible[*board.knee].trial_id, 2);
  EXPECT_EQ(fronts[1].device, "laptop");
  ASSERT_EQ(fronts[1].front.size(), 1u);
  EXPECT_EQ(fronts[1].feasible[fronts[1].front[0]].trial_id, 7);

  options.device = "laptop";
  EXPECT_EQ(select_pareto(candidates, options).size(), 1u);
  options.batch = 32;
  ASSERT_EQ(select_pareto(candidates, options).size(), 1u);
  EXPECT_EQ(select_pareto(candidates, options)[0].feasible[0].trial_id, 8);
}

TEST(SelectPareto, RefusesUnknownMetricsNamingThemAndTheKnownOnes) {
  const std::vector<Candidate> candidates = {candidate(1, "board", {{"accuracy", 91}})};
  ParetoOptions options;
  options.objectives = {{"acuracy", true}};
  try {
    select_pareto(candidates, options);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown metric 'acuracy' (known metrics: accuracy,"), std::string::npos)
        << e.what();
  }
  options.objectives = {{"accuracy", true}, {"accuracy", false}};
  EXPECT_THROW(select_pareto(candidates, options), InputError);
  options.objectives = {};
  EXPECT_THROW(select_pareto(candidates, options), InputError);
  options.objectives = {{"accuracy", true}};
  options.constraints = {Constraint{"sped", "<=", 1, "sped <= 1"}};
  EXPECT_THROW(select_pareto(candidates, options), InputError);
  options.constraints = {};
  options.device = "phone";
  try {
    select_pareto(candidates, options);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("device 'phone' has no candidate at batch 1 (devices: board)"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace edgesweep
