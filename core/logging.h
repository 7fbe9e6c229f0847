// Logging goes through spdlog. Call InitLogging once per process; `role` prefixes every line so
// interleaved multi-process logs stay readable ("[peer 2] ...").
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace tributary {

void InitLogging(const std::string& role, const std::string& level = "info");

}  // namespace tributary
