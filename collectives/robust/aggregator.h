// Robust aggregation of n equal-length contributions (one per peer) into one vector.
//
// Aggregators: mean; trimmed_mean (drop the b largest and b smallest values per coordinate, mean
// of the rest); coordinate median (mean of the two middle values for even n); CenteredClip
// (Karimireddy, He & Jaggi 2021: x ← x + (1/n)·Σ clip_τ(g_i − x), clip by the ℓ2 norm of the
// whole vector, from a given starting point or the coordinate median); Multi-Krum (Blanchard et
// al. 2017: average the m contributions whose n−f−2 nearest neighbours are closest).
//
// Contributions are checked before anything is computed: at least one, equal lengths, and every
// value finite; InvalidArgument names the offending contributor so the caller can exclude it.
// Results are deterministic: sums run in a fixed order (contributors in index order, or sorted
// values, accumulated in double), and vectors are cut into fixed blocks whose partial sums are
// combined in block order, so the output is bit-identical for any `threads` (same build, same
// CPU class). That lets anyone re-run a shard owner's aggregation and compare bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tributary::collectives::robust {

using Contributions = std::span<const std::span<const float>>;

enum class AggregatorKind { kMean, kTrimmedMean, kCoordinateMedian, kCenteredClip, kMultiKrum };

struct AggregatorSpec {
  AggregatorKind kind = AggregatorKind::kMean;
  uint32_t trim = 0;        // trimmed_mean: b, needs n > 2b
  double tau = 0;           // centered_clip: clipping radius τ > 0
  uint32_t iterations = 5;  // centered_clip: at most this many steps
  double tolerance = 0;     // centered_clip: stop once the residual is at most this
  uint32_t krum_f = 0;      // multi_krum: tolerated attackers f, needs n > 2f + 2
  uint32_t krum_m = 0;      // multi_krum: contributions averaged; 0 means n − f
};

// "mean" | "trimmed_mean:B" | "median" (or "coordinate_median") |
// "centered_clip:TAU[:ITERATIONS[:TOLERANCE]]" | "multi_krum:F[:M]". InvalidArgument names the bad
// part.
Result<AggregatorSpec> ParseAggregator(std::string_view spec);
// Canonical spec string; ParseAggregator(ToString(s)) gives s back.
std::string ToString(const AggregatorSpec& spec);

struct AggregateOptions {
  // CenteredClip's starting point (e.g. the previous round's aggregate); empty means the
  // coordinate median. Must be finite and as long as the contributions.
  std::span<const float> initial_guess;
  // Worker threads (1 = the calling thread only). Never changes the result.
  int threads = 1;
};

struct AggregateResult {
  std::vector<float> values;
  // CenteredClip: ‖(1/n)·Σ clip_τ(g_i − x)‖₂ at the returned x, what CheckCenteredClip
  // recomputes; 0 for the other aggregators.
  double fixed_point_residual = 0;
  uint32_t iterations = 0;         // CenteredClip steps actually taken
  std::vector<uint32_t> selected;  // Multi-Krum: the averaged contributors, ascending
};

// At least one contribution, all of the same length, every value finite.
Status CheckContributions(Contributions inputs);

// Checks the inputs (CheckContributions) and the spec against n, then aggregates.
Result<AggregateResult> Aggregate(const AggregatorSpec& spec, Contributions inputs,
                                  const AggregateOptions& options = {});

}  // namespace tributary::collectives::robust
