// Process-wide logging setup.
#include "edgesweep/common/log.h"

#include "edgesweep/common/error.h"

namespace edgesweep {

void setup_logging(const std::string& role, const std::string& level) {
  const auto parsed = spdlog::level::from_str(level);
  check_input(parsed != spdlog::level::off || level == "off", "unknown log level '{}'", level);
  spdlog::set_level(parsed);
  spdlog::set_pattern(fmt::format("[%H:%M:%S.%e] [{}] [%^%l%$] %v", role));
}

}  // namespace edgesweep
