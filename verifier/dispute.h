// Disputes: when a verifier's replay of a sampled step disagrees with the prover, bisection over
// the prover's committed leaves finds a step where the two stories part, and a referee replays
// only that one step.
//
// Bisection keeps an agreed index `lo` (−1 = the round's public start) and a disagreeing index
// `hi`; each probe opens the prover's leaf (with its Merkle proof against the signed root) and
// asks the challenger to recompute the same leaf. It ends with hi = lo + 1: leaf lo agreed, leaf
// hi did not. When divergence persists once it starts (a wrong state stays wrong, as in chained
// local steps) hi is the *first* divergent step; in any case hi is a step whose predecessor both
// sides agree on, which is all the referee needs. Cost: ⌈log2(hi + 1)⌉ recomputations from a
// known divergent step, ⌈log2 T⌉ + 1 without one (the last leaf is checked first).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "core/status.h"
#include "net/identity.h"
#include "verifier/commitment.h"
#include "verifier/replay.h"

namespace tributary::verifier {

struct OpenedLeaf {
  StepLeaf leaf;
  MerkleProof proof;
};

// The prover's side: opens its committed leaf for `step`. An error, or an opening that does not
// verify against the commitment, is the prover's default.
using LeafOpener = std::function<Result<OpenedLeaf>(uint64_t step)>;
// The challenger's side: its own recomputation of leaf `step` (one replay per call).
using LeafRecomputer = std::function<Result<StepLeaf>(uint64_t step)>;
// Whether the prover's leaf and the challenger's leaf tell the same story (default: equal).
using LeafAgreement = std::function<bool(const StepLeaf& prover, const StepLeaf& challenger)>;

enum class BisectionOutcome {
  kDivergence,     // `step` is divergent and its predecessor (or the round start) agreed
  kNoDivergence,   // nothing disagreed: the challenger had no case
  kProverDefault,  // the prover did not open `step` validly
};
const char* BisectionOutcomeName(BisectionOutcome outcome);

struct BisectionResult {
  BisectionOutcome outcome = BisectionOutcome::kNoDivergence;
  uint64_t step = 0;
  std::optional<OpenedLeaf> agreed;    // the prover's leaf step − 1 (absent for step 0)
  std::optional<OpenedLeaf> prover;    // the prover's leaf at `step` (kDivergence)
  std::optional<StepLeaf> challenger;  // the challenger's leaf at `step` (kDivergence)
  uint64_t recomputations = 0;         // calls to the LeafRecomputer
  uint64_t openings = 0;               // calls to the LeafOpener
  std::string reason;                  // kProverDefault: why the opening failed
};

// `known_divergent`: a step the challenger already knows to disagree (the sampled step whose
// replay mismatched); it is opened and recomputed once more here, so the evidence in the result
// is self-contained. InvalidArgument if known_divergent >= leaf_count; a recomputer error is
// returned as is (the challenger failed, not the prover).
Result<BisectionResult> Bisect(const RoundCommitment& commitment, const LeafOpener& prover,
                               const LeafRecomputer& challenger,
                               std::optional<uint64_t> known_divergent = std::nullopt,
                               const LeafAgreement& agree = {});

// ---- referee ------------------------------------------------------------------------------------

// The referee's single replay of `prover_leaf.step`, starting from the state whose digest is
// prover_leaf.state_before (obtained from the prover and checked against that digest). NotFound
// means the prover could not supply that state: a default, ruled against the prover. Any other
// error means the referee could not rule.
using StepReplayFn = std::function<Result<ReplayedStep>(const StepLeaf& prover_leaf)>;
// Default: CompareBitwise. GPU classes pass a calibrated comparison.
using ReplayComparator =
    std::function<ReplayDecision(const StepLeaf& claimed, const ReplayedStep&)>;

struct RefereeOptions {
  // Leaves of local steps chain (leaf[t+1].state_before == leaf[t].update); a break in the
  // prover's own chain convicts it without any replay.
  bool chained_states = true;
  // The public state the round started from (e.g. θ_r with the committed optimiser state);
  // when set, leaf 0 must start from it.
  std::optional<Digest> round_start_state;
  ReplayComparator compare;
};

enum class Ruling { kProverGuilty, kAccuserGuilty };
const char* RulingName(Ruling ruling);

struct RefereeVerdict {
  Ruling ruling = Ruling::kProverGuilty;
  net::PublicKey prover{};
  net::PublicKey accuser{};
  net::PublicKey guilty{};  // whom the ledger penalises (a false accusation costs the accuser)
  uint64_t round = 0;
  uint64_t step = 0;
  uint64_t replays = 0;             // 0 or 1: the referee replays at most the one step
  bool accuser_also_wrong = false;  // prover guilty, yet the accuser's leaf was not right either
  std::string reason;
};

// Rules on a bisection. The prover is guilty on a default, a chain break, or a replay that does
// not reproduce its leaf; the accuser is guilty when no divergence was found or the replay
// reproduces the prover's leaf. FailedPrecondition if the commitment does not verify or the
// bisection's evidence (openings) does not check out against it.
Result<RefereeVerdict> Referee(const SignedCommitment& prover, const net::PublicKey& accuser,
                               const BisectionResult& bisection, const StepReplayFn& replay,
                               const RefereeOptions& options = {});

}  // namespace tributary::verifier
