// Times the Pareto selection on synthetic candidates: select_pareto on 100k candidates spread over several devices
// (constraint filtering, the front and the knee per device) and pareto_front alone on 100k points with 2, 3 and 4
// objectives, for independent values and for trade-off data (accuracy rising with cost, so fronts are large).
// Prints one JSON line per case: median, min and max seconds of the repetitions, and the front sizes.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "edgesweep/common/json.h"
#include "edgesweep/orchestrator/pareto.h"

using namespace edgesweep;

namespace {

/// Synthetic candidates: a model "size" s drives accuracy up and latency, memory and bytes up, with noise; each
/// device scales latency differently.
std::vector<Candidate> make_candidates(size_t count, size_t devices, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::normal_distribution<double> noise(0.0, 1.0);
  std::lognormal_distribution<double> size(0.0, 0.8);
  std::vector<Candidate> candidates;
  candidates.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const double s = size(random);
    const size_t device = i % devices;
    Candidate c;
    c.trial_id = static_cast<int64_t>(i / devices) + 1;
    c.artifact_id = c.trial_id;
    c.device = fmt::format("device-{}", device);
    c.batch = 1;
    c.settings = Json{{"pipeline[0].sparsity", std::round(100 * std::min(0.95, 1.0 / (1.0 + s))) / 100}};
    const double accuracy = 92.0 - 12.0 * std::exp(-s) + 0.8 * noise(random);
    c.values["accuracy"] = accuracy;
    c.values["accuracy_drop"] = 92.0 - accuracy;
    c.values["latency_p50_ms"] = (0.5 + 2.0 * s) * (1.0 + 0.5 * device) * std::exp(0.1 * noise(random));
    c.values["peak_rss_mb"] = 40.0 + 25.0 * s * std::exp(0.1 * noise(random));
    c.values["model_bytes"] = std::round(1e6 * s * std::exp(0.05 * noise(random)));
    candidates.push_back(std::move(c));
  }
  return candidates;
}

std::vector<std::vector<double>> make_points(size_t count, size_t dimensions, bool tradeoff, uint64_t seed) {
  std::mt19937_64 random(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<std::vector<double>> points(count, std::vector<double>(dimensions));
  for (auto& p : points) {
    double sum = 0;
    for (double& x : p) {
      x = uniform(random);
      sum += x;
    }
    if (tradeoff) {
      for (double& x : p) x = x / sum + 0.02 * uniform(random);  // near the plane sum = 1: many points on the front
    }
    p[0] = -p[0];  // the first objective is maximised
  }
  return points;
}

/// CPU time of this thread in seconds (not counting time spent waiting for a core on a busy machine).
double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

/// Runs `body` `repetitions` times: median, min and max of the wall-clock time, and the median CPU time.
template <typename Body>
Json time_repeated(int repetitions, Body&& body) {
  std::vector<double> seconds, cpu_seconds;
  for (int r = 0; r < repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
    const double cpu_start = thread_cpu_seconds();
    body();
    cpu_seconds.push_back(thread_cpu_seconds() - cpu_start);
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(seconds.begin(), seconds.end());
  std::sort(cpu_seconds.begin(), cpu_seconds.end());
  return {{"median_s", seconds[seconds.size() / 2]}, {"min_s", seconds.front()}, {"max_s", seconds.back()},
          {"cpu_median_s", cpu_seconds[cpu_seconds.size() / 2]}, {"repetitions", repetitions}};
}

}  // namespace

int main(int argc, char** argv) {
  const size_t count = argc > 1 ? static_cast<size_t>(std::atoll(argv[1])) : 100000;
  const int repetitions = argc > 2 ? std::atoi(argv[2]) : 5;

  // select_pareto: 4 devices, 4 objectives, one constraint.
  const std::vector<Candidate> candidates = make_candidates(count, 4, 7);
  ParetoOptions options;
  options.objectives = {{"accuracy", true}, {"latency_p50_ms", false}, {"peak_rss_mb", false}, {"model_bytes", false}};
  options.constraints = {parse_constraint("accuracy_drop <= 3.0")};
  for (size_t objectives : {3, 4}) {
    ParetoOptions o = options;
    o.objectives.resize(objectives);
    std::vector<DeviceFront> fronts;
    Json row = time_repeated(repetitions, [&] { fronts = select_pareto(candidates, o); });
    Json sizes = Json::array();
    size_t feasible = 0;
    for (const DeviceFront& f : fronts) {
      sizes.push_back(f.front.size());
      feasible += f.feasible.size();
    }
    row["case"] = "select_pareto";
    row["candidates"] = candidates.size();
    row["devices"] = fronts.size();
    row["objectives"] = objectives;
    row["feasible"] = feasible;
    row["front_sizes"] = sizes;
    std::printf("%s\n", row.dump().c_str());
  }

  // pareto_front alone.
  for (bool tradeoff : {false, true}) {
    for (size_t d : {2, 3, 4}) {
      const auto points = make_points(count, d, tradeoff, 11 + d);
      std::vector<Objective> objectives;
      for (size_t j = 0; j < d; ++j) objectives.push_back({fmt::format("m{}", j), j == 0});
      std::vector<size_t> front;
      Json row = time_repeated(repetitions, [&] { front = pareto_front(points, objectives); });
      row["case"] = "pareto_front";
      row["data"] = tradeoff ? "trade-off" : "independent";
      row["points"] = points.size();
      row["objectives"] = d;
      row["front_size"] = front.size();
      std::printf("%s\n", row.dump().c_str());
    }
  }
  return 0;
}
