#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace tributary {

void InitLogging(const std::string& role, const std::string& level) {
  spdlog::drop("tributary-" + role);  // idempotent: tests may initialise twice
  auto logger = spdlog::stderr_color_mt("tributary-" + role);
  logger->set_pattern("%H:%M:%S.%e %^%l%$ [" + role + "] %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

}  // namespace tributary
