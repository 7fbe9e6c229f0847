// Misbehaviour policies for the attack harness: what a cheating peer does, as runtime hooks.
// Test-only: built into the tributary_adversary binary and the adversary tests, never into the
// normal peer (which has no way to set runtime::AdversaryHooks).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "runtime/verification.h"

namespace tributary::adversary {

struct PolicyOptions {
  std::string attack;        // one of AttackNames()
  double rate = 1.0;         // partial: fraction of steps faked
  double scale = 1000.0;     // scale: factor applied to each step's update
  uint64_t seed = 1;         // which steps a partial cheater fakes
};

// zero, random, skip, partial, shard, sign_flip, scale, subnormal, withhold, equivocate,
// commit_late, accuse, collude, class_lie, honest; and on the sent Δ of a verifying DiLoCo job:
// stale (the previous round's own Δ), copy (the group's previous average), send_scaled
// (× scale), alie (μ − 1.5·σ, estimated alone), ipm (−0.5·μ), manifest_lie (a signed manifest
// that states other payloads than those sent), send_nan / send_inf / send_garbage (honest steps
// and Δ, but each encoded payload carries a NaN / +Inf / is one byte short, and is signed so);
// owner_scale (as a shard owner, returns its shard's aggregate × scale, stated as its own);
// unserved_bulk (honest, but nobody can fetch its openings' bulk from it: a firewalled state
// server) and withhold_bulk (the same, and it never sends the whole opening either);
// forged_moments (honest steps from AdamW moments it chose at each round's start);
// forged_start (honest steps from a θ it chose in round 0, and the honest Δ from θ_0).
// stale and copy send their honest Δ in round 0 (nothing to replay yet).
const std::vector<std::string>& AttackNames();

// True iff a partial cheater with `seed` fakes (round, step) at `rate` (a pure function).
bool Faked(uint64_t seed, double rate, uint64_t round, uint64_t step);

// The hooks implementing `options.attack`. InvalidArgument for an unknown attack.
Result<runtime::AdversaryHooks> MakePolicy(const PolicyOptions& options);

}  // namespace tributary::adversary
