// The typed schema of every experiment setting: name, type, default, range and a doc line.
// The spec parser checks TOML against it; workers read the filled-in values back by name.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "edgesweep/common/json.h"

namespace edgesweep {

enum class ParamType {
  Integer,      ///< a TOML integer
  Float,        ///< a TOML float or integer
  String,       ///< a TOML string, optionally one of `choices`
  Boolean,      ///< a TOML boolean
  StringList,   ///< an array of strings (never swept)
  FloatList,    ///< an array of numbers (never swept)
  IntegerList,  ///< an array of integers (never swept)
  TableList,    ///< an array of tables, checked against its own schema (model layers)
};

/// One setting. A null `default_value` means the key is required.
struct ParamSpec {
  std::string name;
  ParamType type = ParamType::Float;
  Json default_value;
  std::optional<double> min;  ///< inclusive lower bound for numbers
  std::optional<double> max;  ///< inclusive upper bound for numbers
  bool min_exclusive = false;
  bool max_exclusive = false;
  std::vector<std::string> choices;  ///< allowed strings, when not empty
  bool sweepable = false;            ///< a TOML array of scalars for this key is a swept dimension
  /// false: a key left out stays out of the trial's config (its reader takes the default), so experiments recorded
  /// before the key existed keep their trials' configs and hashes, and `--resume` still finds them.
  bool fill_default = true;
  std::string doc;
};

/// One TOML table and its settings.
struct SectionSpec {
  std::string name;
  std::vector<ParamSpec> params;
  /// Finds a setting by name; nullptr when the key is unknown.
  const ParamSpec* find(const std::string& key) const;
};

/// Fixed sections: "experiment", "data", "model", "baseline", "search", "run", "objectives", "measure".
const SectionSpec& section_spec(const std::string& section);

/// The names of the fixed sections, in the order they appear in documentation.
const std::vector<std::string>& section_names();

/// Settings of a [[pipeline]] stage ("train", "finetune", ...), without the `stage` key itself;
/// throws InputError listing the known stages when `stage` is unknown.
const SectionSpec& stage_spec(const std::string& stage);

/// Names of the known pipeline stages.
std::vector<std::string> stage_names();

/// Settings of one inline model layer (an entry of [[model.layers]]).
const SectionSpec& layer_spec();

/// Settings of one device agent (an entry of [[devices]]).
const SectionSpec& device_spec();

/// Checks one scalar value against its spec (type, range, choices); returns an error text or "" when valid.
/// Integers are accepted where floats are expected and converted.
std::string check_value(const ParamSpec& spec, Json& value);

/// Human-readable name of a parameter type, for error messages.
const char* type_name(ParamType type);

}  // namespace edgesweep
