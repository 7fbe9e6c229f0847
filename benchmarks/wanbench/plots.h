// PNG plots of one benchmark run, drawn by gnuplot (Debian package `gnuplot`): eval loss vs
// wall-clock and vs tokens, wire bytes per peer per round and cumulative, and where the peers'
// wall-clock goes (compute, all-reduce, other). The data files and the gnuplot script stay in
// the run directory, so a plot can be redrawn by hand.
#pragma once

#include <string>
#include <vector>

#include "benchmarks/wanbench/metrics.h"
#include "core/status.h"

namespace tributary::wanbench {

struct PlotRequest {
  std::string title;       // scenario name and network, for the plot titles
  std::string data_dir;    // where the .dat files and plots.gp go
  std::string out_prefix;  // PNGs are <out_prefix>_loss_wall.png etc.
};

// The gnuplot script for these results (pure; exposed for tests).
std::string GnuplotScript(const PlotRequest& request, const std::vector<SystemResult>& results);

// Writes the data and the script, runs gnuplot, and returns the PNG paths it made. Fails with
// FailedPrecondition when gnuplot is not installed.
Result<std::vector<std::string>> DrawPlots(const PlotRequest& request,
                                           const std::vector<SystemResult>& results);

}  // namespace tributary::wanbench
