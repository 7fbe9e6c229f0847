// What a peer commits to for one round: a leaf per inner step, a Merkle root over the leaves, and
// a RoundCommitment signed with the peer's Ed25519 identity.
//
// A leaf pins everything a verifier needs to replay the step and compare:
//   leaf = SHA-256("tributary.verifier.leaf.v1" ‖ job ‖ round ‖ step ‖ state_before ‖ batch ‖
//                  update ‖ loss_bits ‖ determinism class)
// with strings length-prefixed and integers u64 little-endian. `state_before` is the digest of
// the full training state the step starts from (StepStateDigest: parameters *and* optimiser
// state; without the AdamW moments a forger could solve for moments that explain any update).
// `update` is the digest of what the step produced: the post-step state for a local step
// (DiLoCo inner step), or the raw gradient for a data-parallel step. Leaves of local steps chain:
// leaf[t+1].state_before == leaf[t].update.
//
// Signed bytes are "tributary.verifier.commitment.v1" ‖ Canonical(); the label keeps a
// commitment signature from ever being valid as any other signed message of the system.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "net/identity.h"
#include "verifier/determinism.h"
#include "verifier/merkle.h"

namespace tributary::verifier {

struct StepLeaf {
  std::string job_id;
  uint64_t round = 0;
  uint64_t step = 0;
  Digest state_before{};
  Digest batch{};
  Digest update{};
  uint64_t loss_bits = 0;         // IEEE-754 binary64 bits of the step's loss (LossBits)
  std::string determinism_class;  // DeterminismClass::Canonical() of the prover

  bool operator==(const StepLeaf&) const = default;
};

uint64_t LossBits(double loss);
double LossFromBits(uint64_t bits);

Digest LeafHash(const StepLeaf& leaf);
// Canonical bytes of a leaf (what LeafHash hashes after its label) and back; Decode is strict.
std::string EncodeLeaf(const StepLeaf& leaf);
Result<StepLeaf> DecodeLeaf(std::string_view bytes);

// The training state a step starts from: SHA-256("tributary.verifier.state.v1" ‖ parameters
// digest ‖ optimiser digest). Keeping the two parts separate lets a verifier check the
// parameter half against the round's public θ digest while the optimiser half (private to a
// DiLoCo worker) is checked against the worker's own previous commitment.
Digest StepStateDigest(const Digest& parameters, const Digest& optimizer);

// Builds the round's tree from its leaves (in step order; leaf i must have step == i and the
// same job, round and class as leaf 0). InvalidArgument otherwise.
Result<MerkleTree> BuildRoundTree(const std::vector<StepLeaf>& leaves);

struct RoundCommitment {
  std::string job_id;
  net::PublicKey peer{};
  uint64_t round = 0;
  Digest root{};
  uint64_t leaf_count = 0;
  std::string determinism_class;
  Digest pseudo_gradient{};  // SHA-256 of the round's contribution (Δ bytes, as averaged)

  bool operator==(const RoundCommitment&) const = default;
  // "TRIBCOMMIT1" ‖ job ‖ peer ‖ round ‖ root ‖ leaf_count ‖ class ‖ pseudo_gradient.
  std::string Canonical() const;
};

struct SignedCommitment {
  RoundCommitment body;
  net::Signature signature{};
};

// InvalidArgument if `identity` is not body.peer (a peer signs only its own commitments), or if
// the body is malformed (empty job id, zero leaves).
Result<SignedCommitment> SignCommitment(const RoundCommitment& body, const net::Identity& identity);
// OK iff the signature is body.peer's over the labelled canonical bytes and the body is well
// formed; Corruption otherwise (a forged or altered commitment).
Status VerifyCommitment(const SignedCommitment& commitment);

// Canonical wire bytes: Canonical() ‖ 64-byte signature. Decode is strict (no trailing bytes) but
// does not verify; call VerifyCommitment.
std::string EncodeCommitment(const SignedCommitment& commitment);
Result<SignedCommitment> DecodeCommitment(std::string_view bytes);

// True iff a and b are both validly signed by the same peer for the same (job, round) but
// differ: a transferable proof of equivocation (the peer told two stories).
bool IsEquivocation(const SignedCommitment& a, const SignedCommitment& b);

// Checks that an opened leaf belongs to `commitment` (job, round, class, step == index, and the
// Merkle proof against its root). Corruption naming the first failing check.
Status CheckOpenedLeaf(const RoundCommitment& commitment, uint64_t index, const StepLeaf& leaf,
                       const MerkleProof& proof);

}  // namespace tributary::verifier
