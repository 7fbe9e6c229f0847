#include "collectives/path_choice.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tributary::collectives {

size_t DirectThresholdBytes(uint32_t world, const LinkEstimate& link) {
  if (world <= 1) return kMaxDirectBytes;
  const double bandwidth =
      link.bytes_per_second > 0 ? link.bytes_per_second : kDefaultLink.bytes_per_second;
  const double alpha = std::max(0.0, link.rtt_seconds) / 2 + kMessageOverheadSeconds;
  const double n = world;
  const double s = (2 * n - 3) * alpha /
                   ((n - 1) * (n - 2) / (n * bandwidth) + n / kReduceBytesPerSecond);
  if (!std::isfinite(s) || s >= static_cast<double>(kMaxDirectBytes)) return kMaxDirectBytes;
  return static_cast<size_t>(s);
}

size_t RingSegmentBytes(const LinkEstimate& link) {
  constexpr size_t kMin = 64 << 10, kMax = 1 << 20;
  constexpr double kLinkSeconds = 4e-3;
  if (link.bytes_per_second <= 0) return kMax;
  const double bytes = link.bytes_per_second * kLinkSeconds;
  const size_t clamped = bytes >= kMax ? kMax : std::max(kMin, static_cast<size_t>(bytes));
  return clamped / sizeof(float) * sizeof(float);
}

LinkEstimate GroupLink(const LinkMatrix& links) {
  double rtt_sum = 0;
  double bandwidth = std::numeric_limits<double>::infinity();
  size_t counted = 0;
  for (size_t i = 0; i < links.size(); ++i) {
    for (size_t j = 0; j < links.size(); ++j) {
      const LinkEstimate& l = links.at(i, j);
      if (i == j || l.bytes_per_second <= 0) continue;
      rtt_sum += l.rtt_seconds;
      bandwidth = std::min(bandwidth, l.bytes_per_second);
      ++counted;
    }
  }
  if (counted == 0) return kDefaultLink;
  return {.rtt_seconds = rtt_sum / static_cast<double>(counted), .bytes_per_second = bandwidth};
}

}  // namespace tributary::collectives
