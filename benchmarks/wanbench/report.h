// The benchmark's outputs from its SystemResults: the Markdown tables printed on stdout and the
// JSON document written to benchmarks/results/wan_<scenario>.json. Pure.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "benchmarks/wanbench/metrics.h"
#include "benchmarks/wanbench/scenario.h"
#include "core/human_bytes.h"

namespace tributary::wanbench {

// The loss every successful system reached: the worst final eval loss among them.
std::optional<double> CommonTargetLoss(const std::vector<SystemResult>& results);

// How many times sooner `a` reached `b`'s final eval loss than `b` did ("–" without a loss,
// "not reached (L)" with a's final loss L): benchmark (d), the time to DDP's final loss.
std::string FasterToFinalLoss(const SystemResult& a, const SystemResult& b);

// One row per system, then one row per (Tributary system, baseline) pair with the ratios.
std::string MarkdownReport(const BenchScenario& scenario, const std::vector<SystemResult>& results);

struct RunInfo {
  std::string command;
  std::string started_at;  // ISO 8601, local time
  double load_before = 0, load_after = 0;
  int cpus = 0;
  std::string run_dir;
  std::vector<std::string> plots;
  double reference_compute_s_per_step = 0;  // what Normalise used
};
nlohmann::json ReportJson(const BenchScenario& scenario, const std::vector<SystemResult>& results,
                          const RunInfo& info);

// HumanBytes (core/human_bytes.h) is what the tables use for byte counts.
using ::tributary::HumanBytes;

}  // namespace tributary::wanbench
