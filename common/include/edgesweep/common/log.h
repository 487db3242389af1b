// Logging: one spdlog logger for the process, tagged with the MPI rank when there is one.
#pragma once

#include <string>

#include <spdlog/spdlog.h>

namespace edgesweep {

/// Sets the log pattern (with `role`, e.g. "rank 1") and level ("debug", "info", "warn", "error").
void setup_logging(const std::string& role, const std::string& level);

}  // namespace edgesweep
