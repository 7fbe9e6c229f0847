// Multi-Krum (Blanchard et al. 2017; El Mhamdi et al. 2018). Each contribution's score is the sum
// of squared ℓ2 distances to its n − f − 2 nearest other contributions; the m lowest scores
// (ties to the lower index) are averaged. Needs n > 2f + 2 and 1 ≤ m ≤ n; the caller checks.
// Inputs must pass CheckContributions. Pairwise distances cost O(n²·d).
#pragma once

#include <cstdint>

#include "collectives/robust/aggregator.h"

namespace tributary::collectives::robust {

AggregateResult MultiKrum(Contributions inputs, uint32_t f, uint32_t m, int threads);

}  // namespace tributary::collectives::robust
