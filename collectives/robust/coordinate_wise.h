// Coordinate-wise aggregators. Inputs must already have passed CheckContributions (and n > 2·trim
// for TrimmedMean); these only compute. Sums are taken in double in a fixed order: contributors
// in index order for Mean, sorted values for the others.
#pragma once

#include <cstdint>
#include <vector>

#include "collectives/robust/aggregator.h"

namespace tributary::collectives::robust {

std::vector<float> Mean(Contributions inputs, int threads);
std::vector<float> TrimmedMean(Contributions inputs, uint32_t trim, int threads);
std::vector<float> CoordinateMedian(Contributions inputs, int threads);

}  // namespace tributary::collectives::robust
