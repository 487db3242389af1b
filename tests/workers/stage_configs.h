// A pipeline stage's parameters as the experiment reader fills them in: the schema's defaults, then overrides.
#pragma once

#include <string>

#include "edgesweep/common/json.h"
#include "edgesweep/common/params.h"
#include "edgesweep/common/trial_config.h"

namespace edgesweep {

inline StageConfig stage_config(const std::string& stage, const Json& overrides) {
  Json params = Json::object();
  for (const ParamSpec& p : stage_spec(stage).params) {
    if (!p.default_value.is_null()) params[p.name] = p.default_value;
  }
  params.update(overrides);
  params["stage"] = stage;
  return StageConfig{stage, params};
}

}  // namespace edgesweep
