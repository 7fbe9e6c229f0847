// Small statistics and machine readings every benchmark reports: medians and percentiles of
// repeated timings, and the load average (these machines are shared; the load says how far a
// wall-clock number can be trusted). Header-only, no dependencies beyond libc.
#pragma once

#include <stdlib.h>  // getloadavg

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace tributary::bench {

// The middle value (the mean of the two middle ones for an even count); 0 for none.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The nearest-rank value at `p` percent (0..100); 0 for none.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<size_t>(std::llround(p / 100.0 * static_cast<double>(v.size() - 1)));
  return v[std::min(i, v.size() - 1)];
}

// The 1-minute load average, or -1 when it cannot be read.
inline double LoadAverage1Min() {
  double load[1] = {0};
  return ::getloadavg(load, 1) == 1 ? load[0] : -1;
}

// "1.23 0.98 0.75" (1, 5 and 15 minutes), or "unknown".
inline std::string LoadAverages() {
  double load[3] = {0, 0, 0};
  if (::getloadavg(load, 3) != 3) return "unknown";
  char text[64];
  std::snprintf(text, sizeof(text), "%.2f %.2f %.2f", load[0], load[1], load[2]);
  return text;
}

}  // namespace tributary::bench
