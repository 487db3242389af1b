// What a choice is made on: objectives (a metric and its direction) and constraints ("accuracy_drop <= 1.0"), with
// the metric names they may use. Apart from pareto.h so that the experiment spec needs neither the selection nor the
// store.
#pragma once

#include <string>
#include <vector>

namespace edgesweep {

/// One objective: a metric name and its direction.
struct Objective {
  std::string metric;
  bool maximize = false;
};

/// A constraint "<metric> <op> <value>", e.g. "accuracy_drop <= 1.0"; `text` is what the user wrote.
struct Constraint {
  std::string metric;
  std::string op;  ///< one of <=, <, >=, >, ==
  double value = 0;
  std::string text;
};

/// The metrics a candidate can carry (what objectives and constraints may name), in display order.
const std::vector<std::string>& pareto_metric_names();

/// Throws InputError naming `context` (e.g. "objective") and listing the known metrics when `metric` is unknown.
void check_metric_name(const std::string& metric, const std::string& context);

/// Parses "<metric> <op> <number>" (spaces optional; ops <=, <, >=, >, ==). Throws InputError naming the text, the
/// expected form and the known metrics when it is malformed or names an unknown metric.
Constraint parse_constraint(const std::string& text);

/// Whether `value` satisfies the constraint (a NaN never does).
bool constraint_holds(const Constraint& constraint, double value);

}  // namespace edgesweep
