// JSON forms and content hashes of trial configs.
#include "edgesweep/common/trial_config.h"

#include "edgesweep/common/error.h"
#include "edgesweep/common/hash.h"

namespace edgesweep {

void to_json(Json& j, const StageConfig& c) {
  j = c.params;
  j["stage"] = c.stage;
}

void from_json(const Json& j, StageConfig& c) {
  j.at("stage").get_to(c.stage);
  c.params = j;
}

std::string json_hash(const Json& value) { return sha256_hex(value.dump()); }

std::string baseline_hash(const TrialConfig& config) {
  return json_hash(Json{{"seed", config.seed}, {"data", config.data}, {"model", config.model},
                        {"baseline", config.baseline}});
}

std::string trial_hash(const TrialConfig& config) { return json_hash(Json(config)); }

}  // namespace edgesweep
