// Aggregate(): input and spec checks, then dispatch to one aggregator.
#include "collectives/robust/aggregator.h"

#include <cmath>

#include "collectives/robust/centered_clip.h"
#include "collectives/robust/coordinate_wise.h"
#include "collectives/robust/multi_krum.h"

namespace tributary::collectives::robust {
namespace {

Status CheckSpecFits(const AggregatorSpec& spec, size_t n) {
  switch (spec.kind) {
    case AggregatorKind::kTrimmedMean:
      if (n <= 2 * size_t{spec.trim}) {
        return InvalidArgument("trimmed_mean:" + std::to_string(spec.trim) + " needs more than " +
                               std::to_string(2 * size_t{spec.trim}) + " contributions, got " +
                               std::to_string(n));
      }
      return Status::Ok();
    case AggregatorKind::kCenteredClip:
      if (!(spec.tau > 0) || !std::isfinite(spec.tau)) {
        return InvalidArgument("centered_clip needs a finite tau > 0");
      }
      return Status::Ok();
    case AggregatorKind::kMultiKrum:
      if (n <= 2 * size_t{spec.krum_f} + 2) {
        return InvalidArgument("multi_krum:" + std::to_string(spec.krum_f) + " needs more than " +
                               std::to_string(2 * size_t{spec.krum_f} + 2) +
                               " contributions, got " + std::to_string(n));
      }
      if (spec.krum_m > n) {
        return InvalidArgument("multi_krum m = " + std::to_string(spec.krum_m) +
                               " exceeds n = " + std::to_string(n));
      }
      return Status::Ok();
    case AggregatorKind::kMean:
    case AggregatorKind::kCoordinateMedian:
      return Status::Ok();
  }
  return InvalidArgument("unknown aggregator kind");
}

Status CheckInitialGuess(std::span<const float> guess, size_t d) {
  if (guess.size() != d) {
    return InvalidArgument("initial guess has " + std::to_string(guess.size()) +
                           " elements, contributions have " + std::to_string(d));
  }
  for (size_t j = 0; j < d; ++j) {
    if (!std::isfinite(guess[j])) {
      return InvalidArgument("initial guess element " + std::to_string(j) + " is not finite");
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckContributions(Contributions inputs) {
  if (inputs.empty()) return InvalidArgument("no contributions to aggregate");
  const size_t d = inputs[0].size();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].size() != d) {
      return InvalidArgument("contribution " + std::to_string(i) + " has " +
                             std::to_string(inputs[i].size()) + " elements, contribution 0 has " +
                             std::to_string(d));
    }
    for (size_t j = 0; j < d; ++j) {
      if (!std::isfinite(inputs[i][j])) {
        return InvalidArgument("contribution " + std::to_string(i) + ": element " +
                               std::to_string(j) + " is not finite");
      }
    }
  }
  return Status::Ok();
}

Result<AggregateResult> Aggregate(const AggregatorSpec& spec, Contributions inputs,
                                  const AggregateOptions& options) {
  TRIB_RETURN_IF_ERROR(CheckContributions(inputs));
  TRIB_RETURN_IF_ERROR(CheckSpecFits(spec, inputs.size()));
  const int threads = options.threads;
  AggregateResult result;
  switch (spec.kind) {
    case AggregatorKind::kMean:
      result.values = Mean(inputs, threads);
      return result;
    case AggregatorKind::kTrimmedMean:
      result.values = TrimmedMean(inputs, spec.trim, threads);
      return result;
    case AggregatorKind::kCoordinateMedian:
      result.values = CoordinateMedian(inputs, threads);
      return result;
    case AggregatorKind::kCenteredClip: {
      std::vector<float> start;
      if (options.initial_guess.empty()) {
        start = CoordinateMedian(inputs, threads);
      } else {
        TRIB_RETURN_IF_ERROR(CheckInitialGuess(options.initial_guess, inputs[0].size()));
        start.assign(options.initial_guess.begin(), options.initial_guess.end());
      }
      return CenteredClip(inputs, start, spec.tau, spec.iterations, spec.tolerance, threads);
    }
    case AggregatorKind::kMultiKrum: {
      const uint32_t n = static_cast<uint32_t>(inputs.size());
      const uint32_t m = spec.krum_m != 0 ? spec.krum_m : n - spec.krum_f;
      return MultiKrum(inputs, spec.krum_f, m, threads);
    }
  }
  return InvalidArgument("unknown aggregator kind");
}

}  // namespace tributary::collectives::robust
