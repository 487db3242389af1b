// The JSON type used for configs, results and messages.
#pragma once

#include <nlohmann/json.hpp>

namespace edgesweep {
using Json = nlohmann::json;
}
