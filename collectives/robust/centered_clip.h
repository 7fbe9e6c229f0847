// CenteredClip (Karimireddy, He & Jaggi, "Learning from History for Byzantine Robust
// Optimization", 2021) and the check another peer runs on a claimed result.
//
// One step from x: s(x) = (1/n)·Σ_i clip_τ(g_i − x), with clip_τ(v) = v·min(1, τ/‖v‖₂) over the
// whole vector; then x ← x + s(x). A fixed point has s(x) = 0, so ‖s(x)‖₂ (the fixed-point
// residual) measures how far a claimed aggregate is from one. Checking it costs one step (two
// passes over the inputs) and needs neither the starting point nor the iteration count.
// Inputs must pass CheckContributions; x must be finite and of the same length.
#pragma once

#include <cstdint>
#include <span>

#include "collectives/robust/aggregator.h"

namespace tributary::collectives::robust {

// Iterates from `start` until the residual is at most `tolerance` or `iterations` steps are done.
AggregateResult CenteredClip(Contributions inputs, std::span<const float> start, double tau,
                             uint32_t iterations, double tolerance, int threads);

// ‖(1/n)·Σ clip_τ(g_i − x)‖₂, computed exactly as CenteredClip reports it.
Result<double> CenteredClipResidual(Contributions inputs, std::span<const float> x, double tau,
                                    int threads = 1);

// OK if x's residual is at most max_residual; Corruption saying by how much it is off if not.
Status CheckCenteredClip(Contributions inputs, std::span<const float> x, double tau,
                         double max_residual, int threads = 1);

}  // namespace tributary::collectives::robust
