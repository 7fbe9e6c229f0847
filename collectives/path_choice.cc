#include "collectives/path_choice.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

namespace tributary::collectives {

namespace {

// One path's model cost: a + b·S seconds.
struct Cost {
  double a = 0, b = 0;
  double At(double bytes) const { return a + b * bytes; }
};

double Alpha(const LinkEstimate& link) {
  return std::max(0.0, link.rtt_seconds) / 2 + kMessageOverheadSeconds;
}
double Bandwidth(const LinkEstimate& link) {
  return link.bytes_per_second > 0 ? link.bytes_per_second : kDefaultLink.bytes_per_second;
}

Cost DirectCost(uint32_t world, const LinkEstimate& link) {
  const double n = world;
  return {Alpha(link), (n - 1) / Bandwidth(link) + n / kReduceBytesPerSecond};
}
Cost DoublingCost(uint32_t world, const LinkEstimate& link) {
  const double steps = std::bit_width(world) - 1;
  return {steps * Alpha(link), steps * (1 / Bandwidth(link) + 2 / kReduceBytesPerSecond)};
}
Cost RingCost(uint32_t world, const LinkEstimate& link) {
  const double n = world;
  return {2 * (n - 1) * Alpha(link), 2 * (n - 1) / (n * Bandwidth(link))};
}

// The largest S at which `cheap` (cheaper at S = 0) still costs no more than `other`.
double Crossover(const Cost& cheap, const Cost& other) {
  if (cheap.b <= other.b) return std::numeric_limits<double>::infinity();
  return (other.a - cheap.a) / (cheap.b - other.b);
}

size_t Capped(double bytes) {
  if (!std::isfinite(bytes) || bytes >= static_cast<double>(kMaxDirectBytes)) return kMaxDirectBytes;
  return bytes <= 0 ? 0 : static_cast<size_t>(bytes);
}

}  // namespace

double DirectSeconds(uint32_t world, const LinkEstimate& link, double bytes) {
  return world <= 1 ? 0 : DirectCost(world, link).At(bytes);
}
double DoublingSeconds(uint32_t world, const LinkEstimate& link, double bytes) {
  return DoublingFits(world) ? DoublingCost(world, link).At(bytes)
                             : std::numeric_limits<double>::infinity();
}
double RingLatencySeconds(uint32_t world, const LinkEstimate& link, size_t segment_bytes) {
  return 2.0 * (world - 1) * (Alpha(link) + static_cast<double>(segment_bytes) / Bandwidth(link));
}
double RingSeconds(uint32_t world, const LinkEstimate& link, double bytes) {
  return world <= 1 ? 0 : RingCost(world, link).At(bytes);
}

bool DoublingFits(uint32_t world) { return world >= 4 && std::has_single_bit(world); }

bool Measured(const std::optional<LinkEstimate>& link) {
  return link.has_value() && link->bytes_per_second > 0;
}

size_t DirectThresholdBytes(uint32_t world, const std::optional<LinkEstimate>& measured) {
  if (world <= 1) return kMaxDirectBytes;
  if (!Measured(measured)) return DoublingFits(world) ? 0 : kUnmeasuredDirectMaxBytes;
  const LinkEstimate& link = *measured;
  const Cost direct = DirectCost(world, link);
  double s = Crossover(direct, RingCost(world, link));
  if (DoublingFits(world)) s = std::min(s, Crossover(direct, DoublingCost(world, link)));
  return Capped(s);
}

size_t DoublingThresholdBytes(uint32_t world, const std::optional<LinkEstimate>& measured,
                              size_t segment_bytes) {
  if (!DoublingFits(world)) return 0;
  if (!Measured(measured)) return kUnmeasuredDoublingMaxBytes;
  const LinkEstimate& link = *measured;
  // Doubling only wins while the ring's hop latencies, not its bytes, decide its time.
  const Cost doubling = DoublingCost(world, link);
  const size_t s = Capped((RingLatencySeconds(world, link, segment_bytes) - doubling.a) / doubling.b);
  return s > DirectThresholdBytes(world, link) ? s : 0;
}

size_t RingSegmentBytes(const std::optional<LinkEstimate>& measured) {
  constexpr size_t kMin = 64 << 10, kMax = 1 << 20;
  constexpr double kLinkSeconds = 4e-3;
  const LinkEstimate& link = measured ? *measured : kDefaultLink;
  if (link.bytes_per_second <= 0) return kMax;
  const double bytes = link.bytes_per_second * kLinkSeconds;
  const size_t clamped = bytes >= kMax ? kMax : std::max(kMin, static_cast<size_t>(bytes));
  return clamped / sizeof(float) * sizeof(float);
}

std::optional<LinkEstimate> GroupLink(const LinkMatrix& links) {
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
  if (counted == 0) return std::nullopt;
  return LinkEstimate{.rtt_seconds = rtt_sum / static_cast<double>(counted), .bytes_per_second = bandwidth};
}

}  // namespace tributary::collectives
