// Search: expands an experiment spec's swept dimensions into trial configs, as a full grid or a seeded random
// sample of distinct combinations.
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <unordered_map>

#include "edgesweep/common/error.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {
namespace {

/// The most trials one experiment may expand to: each is a row and a training run.
constexpr uint64_t kMaxTrials = 1000000;

/// A uniform integer in [0, bound) from the raw 64-bit output of the engine (the same on every standard library,
/// unlike std::uniform_int_distribution).
uint64_t draw_below(std::mt19937_64& engine, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound: values below it would bias the result
  for (;;) {
    const uint64_t r = engine();
    if (r >= threshold) return r % bound;
  }
}

/// `count` distinct indices of [0, total) in random order: a partial Fisher-Yates shuffle over a virtual array of
/// all indices, so memory grows with `count`, not with `total`.
std::vector<uint64_t> sample_indices(uint64_t total, uint64_t count, uint64_t seed) {
  std::mt19937_64 engine(seed);
  std::unordered_map<uint64_t, uint64_t> moved;  // positions of the virtual array that no longer hold themselves
  auto at = [&moved](uint64_t i) {
    auto it = moved.find(i);
    return it == moved.end() ? i : it->second;
  };
  std::vector<uint64_t> picked;
  picked.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t j = i + draw_below(engine, total - i);
    const uint64_t value_j = at(j);
    moved[j] = at(i);
    picked.push_back(value_j);
  }
  return picked;
}

/// The trial config of combination `index`, read as a mixed-radix number whose lowest digit is the last
/// dimension's value index. Values are set in dimension order.
TrialConfig build_trial(const ExperimentSpec& spec, uint64_t index) {
  std::vector<uint64_t> digits(spec.dimensions.size());
  for (size_t d = spec.dimensions.size(); d-- > 0;) {
    const uint64_t size = spec.dimensions[d].values.size();
    digits[d] = index % size;
    index /= size;
  }
  Json config = spec.base_trial;
  for (size_t d = 0; d < spec.dimensions.size(); ++d) {
    const SweepDimension& dimension = spec.dimensions[d];
    config[Json::json_pointer(dimension.pointer)] = dimension.values[digits[d]];
  }
  return config.get<TrialConfig>();
}

}  // namespace

uint64_t count_combinations(const ExperimentSpec& spec) {
  uint64_t count = 1;
  for (const SweepDimension& dimension : spec.dimensions) {
    const uint64_t size = dimension.values.size();
    EDGESWEEP_ASSERT(size > 0);
    if (count > std::numeric_limits<uint64_t>::max() / size) return std::numeric_limits<uint64_t>::max();
    count *= size;
  }
  return count;
}

std::vector<TrialConfig> expand_trials(const ExperimentSpec& spec) {
  const uint64_t total = count_combinations(spec);
  const uint64_t max_trials = spec.max_trials > 0 ? static_cast<uint64_t>(spec.max_trials) : 0;

  std::vector<uint64_t> indices;
  const uint64_t count = max_trials == 0 || max_trials >= total ? total : max_trials;
  check_input(count <= kMaxTrials,
              "{}: the sweep would make {} trials, more than edgesweep schedules in one experiment ({}); hint: set "
              "[search] strategy = \"random\" with max_trials, or sweep fewer values",
              spec.path.string(), total, kMaxTrials);
  if (spec.strategy == "grid") {
    check_input(max_trials == 0 || total <= max_trials,
                "grid has {} combinations, more than [search] max_trials = {}; hint: raise max_trials, or sample "
                "with strategy = \"random\"",
                total, max_trials);
    indices.reserve(total);
    for (uint64_t i = 0; i < total; ++i) indices.push_back(i);
  } else {
    check_input(spec.strategy == "random", "unknown search strategy '{}' (known: grid, random)", spec.strategy);
    indices = sample_indices(total, count, spec.seed);
  }

  std::vector<TrialConfig> trials;
  std::set<std::string> seen;
  trials.reserve(indices.size());
  for (uint64_t index : indices) {
    TrialConfig trial = build_trial(spec, index);
    if (seen.insert(trial_hash(trial)).second) trials.push_back(std::move(trial));
  }
  return trials;
}

}  // namespace edgesweep
