// ParseAggregator / ToString: the aggregator spec strings.
#include <charconv>
#include <cmath>
#include <vector>

#include "collectives/robust/aggregator.h"

namespace tributary::collectives::robust {
namespace {

std::vector<std::string_view> Split(std::string_view spec) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    const size_t colon = spec.find(':', start);
    parts.push_back(spec.substr(start, colon - start));
    if (colon == std::string_view::npos) return parts;
    start = colon + 1;
  }
}

Result<uint32_t> ParseCount(std::string_view text, uint32_t min, const char* what) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < min) {
    return InvalidArgument(std::string(what) + " '" + std::string(text) + "' is not an integer ≥ " +
                           std::to_string(min));
  }
  return value;
}

Result<double> ParseNonNegative(std::string_view text, const char* what) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value) || value < 0) {
    return InvalidArgument(std::string(what) + " '" + std::string(text) +
                           "' is not a finite number ≥ 0");
  }
  return value;
}

std::string Number(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

Status ExpectArgs(const std::vector<std::string_view>& parts, size_t min, size_t max) {
  const size_t args = parts.size() - 1;
  if (args >= min && args <= max) return Status::Ok();
  return InvalidArgument("'" + std::string(parts[0]) + "' takes " + std::to_string(min) +
                         (max > min ? " to " + std::to_string(max) : std::string()) +
                         " parameter(s), got " + std::to_string(args));
}

Result<AggregatorSpec> Parse(const std::vector<std::string_view>& parts) {
  AggregatorSpec spec;
  const std::string_view kind = parts[0];
  if (kind == "mean") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 0, 0));
    spec.kind = AggregatorKind::kMean;
  } else if (kind == "trimmed_mean") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 1, 1));
    spec.kind = AggregatorKind::kTrimmedMean;
    TRIB_ASSIGN_OR_RETURN(spec.trim, ParseCount(parts[1], 0, "trim"));
  } else if (kind == "median" || kind == "coordinate_median") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 0, 0));
    spec.kind = AggregatorKind::kCoordinateMedian;
  } else if (kind == "centered_clip") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 1, 3));
    spec.kind = AggregatorKind::kCenteredClip;
    TRIB_ASSIGN_OR_RETURN(spec.tau, ParseNonNegative(parts[1], "tau"));
    if (spec.tau == 0) return InvalidArgument("tau must be > 0");
    if (parts.size() > 2) {
      TRIB_ASSIGN_OR_RETURN(spec.iterations, ParseCount(parts[2], 0, "iterations"));
    }
    if (parts.size() > 3) {
      TRIB_ASSIGN_OR_RETURN(spec.tolerance, ParseNonNegative(parts[3], "tolerance"));
    }
  } else if (kind == "multi_krum") {
    TRIB_RETURN_IF_ERROR(ExpectArgs(parts, 1, 2));
    spec.kind = AggregatorKind::kMultiKrum;
    TRIB_ASSIGN_OR_RETURN(spec.krum_f, ParseCount(parts[1], 0, "f"));
    if (parts.size() > 2) {
      TRIB_ASSIGN_OR_RETURN(spec.krum_m, ParseCount(parts[2], 1, "m"));
    }
  } else {
    return InvalidArgument("unknown aggregator '" + std::string(kind) +
                           "' (want mean, trimmed_mean, median, centered_clip or multi_krum)");
  }
  return spec;
}

}  // namespace

Result<AggregatorSpec> ParseAggregator(std::string_view spec) {
  auto parsed = Parse(Split(spec));
  if (!parsed.ok())
    return parsed.status().WithContext("aggregator spec '" + std::string(spec) + "'");
  return parsed;
}

std::string ToString(const AggregatorSpec& spec) {
  switch (spec.kind) {
    case AggregatorKind::kMean:
      return "mean";
    case AggregatorKind::kTrimmedMean:
      return "trimmed_mean:" + std::to_string(spec.trim);
    case AggregatorKind::kCoordinateMedian:
      return "median";
    case AggregatorKind::kCenteredClip:
      return "centered_clip:" + Number(spec.tau) + ":" + std::to_string(spec.iterations) + ":" +
             Number(spec.tolerance);
    case AggregatorKind::kMultiKrum:
      return "multi_krum:" + std::to_string(spec.krum_f) +
             (spec.krum_m != 0 ? ":" + std::to_string(spec.krum_m) : std::string());
  }
  return "unknown";
}

}  // namespace tributary::collectives::robust
