// Process-wide logging setup: messages go to stderr, so stdout carries only a command's output (tables, JSON).
#include "edgesweep/common/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "edgesweep/common/error.h"

namespace edgesweep {

void setup_logging(const std::string& role, const std::string& level) {
  const auto parsed = spdlog::level::from_str(level);
  check_input(parsed != spdlog::level::off || level == "off", "unknown log level '{}'", level);
  static const auto logger = [] {
    auto l = spdlog::stderr_color_mt("edgesweep");
    spdlog::set_default_logger(l);
    return l;
  }();
  logger->set_level(parsed);
  logger->set_pattern(fmt::format("[%H:%M:%S.%e] [{}] [%^%l%$] %v", role));
}

}  // namespace edgesweep
