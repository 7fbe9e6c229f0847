// The two ends of a round's committed chain of local steps (DiLoCo), which a round report
// carries (RoundReport.chain_ends) so that the coordinator, from digests alone, holds every
// prover to two facts on every round rather than only on sampled steps:
//
//   - its step 0 starts from the round's θ (the parameter half of the first leaf's state), and
//   - its optimiser state at step 0 is a fresh one or the one its last committed round ended
//     with (the optimiser half of that round's last leaf's update).
//
// The second closes a forgery the step replays cannot see: the AdamW moments are part of the
// state a replay starts from, so moments chosen freely at a round's start would make any first
// step replay correctly. The halves are the prover's claims; the leaves, proven under its signed
// root, bind them through SHA-256 (StepStateDigest), so a prover can name only the halves it
// committed to.
#pragma once

#include "core/digest.h"
#include "core/status.h"
#include "proto/tributary.pb.h"
#include "verifier/commitment.h"
#include "verifier/merkle.h"

namespace tributary::verifier {

struct StateHalves {
  Digest parameters{};  // the θ digest (models::ParameterDigest)
  Digest optimizer{};   // OptimizerDigest
  bool operator==(const StateHalves&) const = default;
};

// What the prover sends: its first and last leaves with their proofs, and the halves.
v1::ChainEnds MakeChainEnds(const StepLeaf& first, const MerkleProof& first_proof, const StepLeaf& last,
                            const MerkleProof& last_proof, const StateHalves& start, const StateHalves& end);

struct CheckedChainEnds {
  StateHalves start, end;
};
// Checks `ends` against the prover's commitment: the leaves decode, are committed as steps 0 and
// leaf_count − 1, and name the states their halves give (the first leaf's state_before, the last
// leaf's update). Corruption naming the first failing check.
Result<CheckedChainEnds> CheckChainEnds(const RoundCommitment& commitment, const v1::ChainEnds& ends);

// OptimizerDigest of an optimiser that has taken no step: what a new worker, or one whose state
// was replaced by a download, starts its next round with.
Digest FreshOptimizerDigest();

}  // namespace tributary::verifier
