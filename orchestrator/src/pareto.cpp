// Pareto selection: constraint parsing, the exact non-dominated set by sorting and divide and conquer, the knee,
// and the per-device selection (the candidates are read from the store in candidates.cpp).
#include "edgesweep/orchestrator/pareto.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <set>

#include <fmt/format.h>

#include "edgesweep/common/error.h"
#include "edgesweep/common/trial_config.h"
#include "edgesweep/orchestrator/spec.h"

namespace edgesweep {

const char* const in_process_device = "in-process";

namespace {

std::string join(const std::vector<std::string>& items) {
  std::string joined;
  for (const std::string& item : items) joined += (joined.empty() ? "" : ", ") + item;
  return joined;
}

std::string trim(const std::string& text) {
  size_t begin = 0;
  size_t end = text.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return text.substr(begin, end - begin);
}

// ---- The non-dominated set ----------------------------------------------------------------------------------------
//
// Every objective is turned into one to minimise (maximised values are negated) and equal points are merged, so the
// points are distinct. For distinct points, q dominates p exactly when q <= p in every coordinate. The search is
// Kung-style divide and conquer on the coordinates:
//   solve(S, k): the points of S are equal in coordinates < k; marks each point of S dominated by another of S.
//     Split S at the median m of coordinate k into L (<= m) and H (> m) (or < m and >= m when m is the largest
//     value); solve(L, k), solve(H, k), then cross(L, H, k + 1): every point of L is already <= every point of H in
//     coordinates <= k, and no point of H can dominate one of L; only the points of L left undominated need
//     comparing (a dominator of a point of L lies in L). When all of S shares coordinate k, solve(S, k + 1).
//   cross(A, B, k): every a is <= every b in coordinates < k; marks each b with some a <= b in coordinates >= k.
//     One coordinate left: compare with the minimum of A. Two left: sort both by the first and sweep with the
//     running minimum of the second. More: split A u B at a median of coordinate k and recurse as solve does:
//     cross(A_low, B_low, k), cross(A_high, B_high, k), cross(A_low, B_high, k + 1).
// Small sets are compared pairwise. Points found dominated leave B early. Every list is kept in ascending order of
// coordinate d - 2 (the initial list is sorted once, and every split keeps the order), so the two-coordinate sweep
// merges instead of sorting: O(n log^(d-2) n) for d >= 3 objectives. Two objectives take one scan of the
// lexicographic order instead: a point is dominated exactly when an earlier one has a second value <= its own.

/// The distinct points, row-major, with the dominated flag of each.
struct PointSet {
  size_t dimensions = 0;
  std::vector<double> values;  ///< values[i * dimensions + j]
  std::vector<char> dominated;

  double at(size_t point, size_t coordinate) const { return values[point * dimensions + coordinate]; }
};

constexpr size_t pairwise_limit = 24;

/// Whether a <= b in every coordinate from `first` on.
bool weakly_below(const PointSet& set, size_t a, size_t b, size_t first) {
  for (size_t j = first; j < set.dimensions; ++j) {
    if (set.at(a, j) > set.at(b, j)) return false;
  }
  return true;
}

/// Splits `items` at a median of coordinate k: returns the value m and whether the low side is "<= m" (true) or
/// "< m" (false); nothing when every item has the same value.
std::optional<std::pair<double, bool>> median_split(const PointSet& set, const std::vector<size_t>& items, size_t k) {
  std::vector<double> keys(items.size());
  for (size_t i = 0; i < items.size(); ++i) keys[i] = set.at(items[i], k);
  const auto [low, high] = std::minmax_element(keys.begin(), keys.end());
  if (*low == *high) return std::nullopt;
  const double largest = *high;
  auto middle = keys.begin() + static_cast<std::ptrdiff_t>(keys.size() / 2);
  std::nth_element(keys.begin(), middle, keys.end());
  const double m = *middle;
  return std::make_pair(m, m < largest);
}

bool goes_low(double value, const std::pair<double, bool>& split) {
  return split.second ? value <= split.first : value < split.first;
}

void cross(PointSet& set, const std::vector<size_t>& a_items, std::vector<size_t> b_items, size_t k);

void cross_split(PointSet& set, const std::vector<size_t>& a_items, const std::vector<size_t>& b_items, size_t k) {
  std::vector<size_t> both = a_items;
  both.insert(both.end(), b_items.begin(), b_items.end());
  const auto split = median_split(set, both, k);
  if (!split) {
    cross(set, a_items, b_items, k + 1);
    return;
  }
  std::vector<size_t> a_low, a_high, b_low, b_high;
  for (size_t a : a_items) (goes_low(set.at(a, k), *split) ? a_low : a_high).push_back(a);
  for (size_t b : b_items) (goes_low(set.at(b, k), *split) ? b_low : b_high).push_back(b);
  cross(set, a_low, b_low, k);
  cross(set, a_high, b_high, k);
  cross(set, a_low, b_high, k + 1);
}

void cross(PointSet& set, const std::vector<size_t>& a_items, std::vector<size_t> b_items, size_t k) {
  b_items.erase(std::remove_if(b_items.begin(), b_items.end(), [&](size_t b) { return set.dominated[b] != 0; }),
                b_items.end());
  if (a_items.empty() || b_items.empty()) return;
  if (k >= set.dimensions) {  // every coordinate already satisfied: every b is dominated
    for (size_t b : b_items) set.dominated[b] = 1;
    return;
  }
  if (a_items.size() * b_items.size() <= pairwise_limit * pairwise_limit / 4) {
    for (size_t b : b_items) {
      for (size_t a : a_items) {
        if (weakly_below(set, a, b, k)) {
          set.dominated[b] = 1;
          break;
        }
      }
    }
    return;
  }
  if (k + 1 == set.dimensions) {
    double lowest = std::numeric_limits<double>::infinity();
    for (size_t a : a_items) lowest = std::min(lowest, set.at(a, k));
    for (size_t b : b_items) {
      if (lowest <= set.at(b, k)) set.dominated[b] = 1;
    }
    return;
  }
  if (k + 2 == set.dimensions) {
    // Both lists are in ascending order of coordinate d - 2 already (see pareto_front): merge them.
    double lowest = std::numeric_limits<double>::infinity();
    size_t next = 0;
    for (size_t b : b_items) {
      while (next < a_items.size() && set.at(a_items[next], k) <= set.at(b, k)) {
        lowest = std::min(lowest, set.at(a_items[next], k + 1));
        ++next;
      }
      if (next > 0 && lowest <= set.at(b, k + 1)) set.dominated[b] = 1;
    }
    return;
  }
  cross_split(set, a_items, b_items, k);
}

void solve(PointSet& set, const std::vector<size_t>& items, size_t k) {
  if (items.size() < 2 || k >= set.dimensions) return;
  if (items.size() <= pairwise_limit) {
    for (size_t p : items) {
      for (size_t q : items) {
        if (q != p && weakly_below(set, q, p, k)) {
          set.dominated[p] = 1;
          break;
        }
      }
    }
    return;
  }
  if (k + 1 == set.dimensions) {  // distinct values: all but the smallest are dominated
    size_t best = items.front();
    for (size_t p : items) {
      if (set.at(p, k) < set.at(best, k)) best = p;
    }
    for (size_t p : items) {
      if (p != best) set.dominated[p] = 1;
    }
    return;
  }
  const auto split = median_split(set, items, k);
  if (!split) {
    solve(set, items, k + 1);
    return;
  }
  std::vector<size_t> low, high;
  for (size_t p : items) (goes_low(set.at(p, k), *split) ? low : high).push_back(p);
  solve(set, low, k);
  solve(set, high, k);
  // A dominated point of `low` has a dominator in `low` that is not dominated (solve(low) compared them), and that
  // one dominates whatever the point dominates: only the front of `low` needs to be compared with `high`.
  low.erase(std::remove_if(low.begin(), low.end(), [&](size_t p) { return set.dominated[p] != 0; }), low.end());
  cross(set, low, high, k + 1);
}

/// The metrics of a candidate: what the store holds, in display order.
const std::vector<std::string>& metric_names() {
  static const std::vector<std::string> names = {
      "accuracy",       "accuracy_drop",  "latency_p50_ms", "latency_p90_ms",   "latency_p99_ms",
      "latency_mean_ms", "latency_min_ms", "fps",            "peak_rss_mb",      "model_bytes",
      "compressed_bytes", "params",        "macs"};
  return names;
}

}  // namespace

const std::vector<std::string>& pareto_metric_names() { return metric_names(); }

void check_metric_name(const std::string& metric, const std::string& context) {
  const auto& names = metric_names();
  check_input(std::find(names.begin(), names.end(), metric) != names.end(), "{}: unknown metric '{}' (known metrics: {})",
              context, metric, join(names));
}

Constraint parse_constraint(const std::string& text) {
  const std::string form = fmt::format(
      "constraint '{}': expected '<metric> <op> <number>' with op one of <=, <, >=, >, == (known metrics: {})", text,
      join(metric_names()));
  const std::string trimmed = trim(text);
  const size_t op_begin = trimmed.find_first_of("<>=");
  check_input(op_begin != std::string::npos && op_begin > 0, "{}", form);
  size_t op_end = op_begin + 1;
  if (op_end < trimmed.size() && trimmed[op_end] == '=') ++op_end;
  Constraint constraint;
  constraint.text = trimmed;
  constraint.metric = trim(trimmed.substr(0, op_begin));
  constraint.op = trimmed.substr(op_begin, op_end - op_begin);
  check_input(constraint.op != "=", "{} ('=' is not an operator: use ==)", form);
  const std::string number = trim(trimmed.substr(op_end));
  check_input(!number.empty(), "{} (the number is missing)", form);
  char* end = nullptr;
  constraint.value = std::strtod(number.c_str(), &end);
  check_input(end == number.c_str() + number.size() && std::isfinite(constraint.value),
              "{} ('{}' is not a finite number)", form, number);
  for (char c : constraint.metric) {
    check_input(std::isalnum(static_cast<unsigned char>(c)) || c == '_', "{} ('{}' is not a metric name)", form,
                constraint.metric);
  }
  check_metric_name(constraint.metric, fmt::format("constraint '{}'", text));
  return constraint;
}

bool constraint_holds(const Constraint& constraint, double value) {
  if (std::isnan(value)) return false;
  if (constraint.op == "<=") return value <= constraint.value;
  if (constraint.op == "<") return value < constraint.value;
  if (constraint.op == ">=") return value >= constraint.value;
  if (constraint.op == ">") return value > constraint.value;
  if (constraint.op == "==") return value == constraint.value;
  throw InputError(fmt::format("constraint '{}': unknown operator '{}' (<=, <, >=, >, ==)", constraint.text,
                               constraint.op));
}

std::vector<size_t> pareto_front(const std::vector<std::vector<double>>& points,
                                 const std::vector<Objective>& objectives) {
  const size_t d = objectives.size();
  check_input(d > 0, "Pareto front: no objective given");
  const size_t n = points.size();
  for (size_t i = 0; i < n; ++i) {
    check_input(points[i].size() == d, "Pareto front: point {} has {} values for {} objectives", i, points[i].size(),
                d);
    for (size_t j = 0; j < d; ++j) {
      check_input(!std::isnan(points[i][j]), "Pareto front: point {} has no value (NaN) for objective '{}'", i,
                  objectives[j].metric);
    }
  }
  // The values to minimise, row-major.
  std::vector<double> flat(n * d);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < d; ++j) flat[i * d + j] = objectives[j].maximize ? -points[i][j] : points[i][j];
  }
  // Distinct points in lexicographic order; copies[u] lists the input indices of distinct point u.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const double* x = &flat[a * d];
    const double* y = &flat[b * d];
    for (size_t j = 0; j < d; ++j) {
      if (x[j] < y[j]) return true;
      if (y[j] < x[j]) return false;
    }
    return a < b;
  });
  PointSet set;
  set.dimensions = d;
  set.values.reserve(n * d);
  std::vector<std::vector<size_t>> copies;
  for (size_t position = 0; position < n; ++position) {
    const size_t i = order[position];
    const double* row = &flat[i * d];
    if (!copies.empty() && std::equal(row, row + d, set.values.end() - static_cast<std::ptrdiff_t>(d))) {
      copies.back().push_back(i);
      continue;
    }
    set.values.insert(set.values.end(), row, row + d);
    copies.push_back({i});
  }
  const size_t distinct = copies.size();
  set.dominated.assign(distinct, 0);
  if (d == 1) {
    for (size_t u = 1; u < distinct; ++u) set.dominated[u] = 1;
  } else if (d == 2) {
    double lowest = std::numeric_limits<double>::infinity();
    for (size_t u = 0; u < distinct; ++u) {
      if (u > 0 && lowest <= set.at(u, 1)) set.dominated[u] = 1;
      lowest = std::min(lowest, set.at(u, 1));
    }
  } else {
    std::vector<size_t> items(distinct);
    std::iota(items.begin(), items.end(), size_t{0});
    std::stable_sort(items.begin(), items.end(),
                     [&](size_t a, size_t b) { return set.at(a, d - 2) < set.at(b, d - 2); });
    solve(set, items, 0);
  }

  std::vector<size_t> front;
  for (size_t u = 0; u < copies.size(); ++u) {
    if (set.dominated[u] == 0) front.insert(front.end(), copies[u].begin(), copies[u].end());
  }
  std::sort(front.begin(), front.end());
  return front;
}

std::optional<size_t> knee_point(const std::vector<std::vector<double>>& points, const std::vector<size_t>& front,
                                 const std::vector<Objective>& objectives) {
  if (front.empty()) return std::nullopt;
  const size_t d = objectives.size();
  std::vector<double> best(d, std::numeric_limits<double>::infinity());
  std::vector<double> worst(d, -std::numeric_limits<double>::infinity());
  const auto value = [&](size_t i, size_t j) { return objectives[j].maximize ? -points[i][j] : points[i][j]; };
  for (size_t i : front) {
    for (size_t j = 0; j < d; ++j) {
      best[j] = std::min(best[j], value(i, j));
      worst[j] = std::max(worst[j], value(i, j));
    }
  }
  std::optional<size_t> knee;
  double knee_distance = std::numeric_limits<double>::infinity();
  for (size_t i : front) {
    double distance = 0;
    for (size_t j = 0; j < d; ++j) {
      const double range = worst[j] - best[j];
      // A range that is zero or not finite (an infinite value) adds nothing that could tell points apart.
      if (!(range > 0) || !std::isfinite(range)) continue;
      const double x = (value(i, j) - best[j]) / range;
      distance += x * x;
    }
    if (distance < knee_distance || (distance == knee_distance && knee && i < *knee)) {
      knee_distance = distance;
      knee = i;
    }
  }
  return knee;
}

std::vector<DeviceFront> select_pareto(const std::vector<Candidate>& candidates, const ParetoOptions& options) {
  check_input(!options.objectives.empty(), "Pareto selection: no objective (give --maximize or --minimize)");
  std::map<std::string, bool> directions;
  for (const Objective& o : options.objectives) {
    check_metric_name(o.metric, o.maximize ? "objective (maximize)" : "objective (minimize)");
    auto [it, inserted] = directions.emplace(o.metric, o.maximize);
    check_input(inserted || it->second == o.maximize, "objective '{}' is both maximised and minimised", o.metric);
  }
  std::vector<Objective> objectives;  // each metric once
  for (const Objective& o : options.objectives) {
    bool seen = false;
    for (const Objective& p : objectives) seen = seen || p.metric == o.metric;
    if (!seen) objectives.push_back(o);
  }
  for (const Constraint& c : options.constraints) check_metric_name(c.metric, fmt::format("constraint '{}'", c.text));

  std::map<std::string, std::vector<const Candidate*>> by_device;
  for (const Candidate& c : candidates) {
    if (c.batch != options.batch) continue;
    if (!options.device.empty() && c.device != options.device) continue;
    by_device[c.device].push_back(&c);
  }
  if (!options.device.empty() && by_device.empty()) {
    std::set<std::string> known;
    for (const Candidate& c : candidates) known.insert(c.device);
    throw InputError(fmt::format("device '{}' has no candidate at batch {} (devices: {})", options.device,
                                 options.batch,
                                 known.empty() ? std::string("none") : join({known.begin(), known.end()})));
  }

  std::vector<DeviceFront> fronts;
  for (const auto& [device, members] : by_device) {
    DeviceFront front;
    front.device = device;
    front.candidates = members.size();
    std::vector<std::vector<double>> points;
    for (const Candidate* c : members) {
      bool complete = true;
      for (const Objective& o : objectives) complete = complete && c->values.count(o.metric) != 0;
      for (const Constraint& k : options.constraints) complete = complete && c->values.count(k.metric) != 0;
      if (!complete) {
        ++front.incomplete;
        continue;
      }
      bool holds = true;
      for (const Constraint& k : options.constraints) holds = holds && constraint_holds(k, c->values.at(k.metric));
      if (!holds) {
        ++front.rejected;
        continue;
      }
      std::vector<double> point;
      for (const Objective& o : objectives) point.push_back(c->values.at(o.metric));
      points.push_back(std::move(point));
      front.feasible.push_back(*c);
    }
    front.front = pareto_front(points, objectives);
    front.knee = knee_point(points, front.front, objectives);
    const Objective& first = objectives.front();
    std::stable_sort(front.front.begin(), front.front.end(), [&](size_t a, size_t b) {
      return first.maximize ? points[a][0] > points[b][0] : points[a][0] < points[b][0];
    });
    fronts.push_back(std::move(front));
  }
  return fronts;
}

}  // namespace edgesweep
