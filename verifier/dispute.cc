#include "verifier/dispute.h"

namespace tributary::verifier {
namespace {

// Opens `step` and checks it against the commitment; on failure fills a default result.
std::optional<OpenedLeaf> Open(const RoundCommitment& c, const LeafOpener& prover, uint64_t step,
                               BisectionResult& result) {
  ++result.openings;
  Result<OpenedLeaf> opened = prover(step);
  Status valid =
      opened.ok() ? CheckOpenedLeaf(c, step, opened->leaf, opened->proof) : opened.status();
  if (!valid.ok()) {
    result.outcome = BisectionOutcome::kProverDefault;
    result.step = step;
    result.reason = valid.ToString();
    return std::nullopt;
  }
  return std::move(opened).value();
}

}  // namespace

const char* BisectionOutcomeName(BisectionOutcome outcome) {
  switch (outcome) {
    case BisectionOutcome::kDivergence:
      return "divergence";
    case BisectionOutcome::kNoDivergence:
      return "no-divergence";
    case BisectionOutcome::kProverDefault:
      return "prover-default";
  }
  return "?";
}

const char* RulingName(Ruling ruling) {
  return ruling == Ruling::kProverGuilty ? "prover-guilty" : "accuser-guilty";
}

Result<BisectionResult> Bisect(const RoundCommitment& c, const LeafOpener& prover,
                               const LeafRecomputer& challenger,
                               std::optional<uint64_t> known_divergent,
                               const LeafAgreement& agree) {
  if (c.leaf_count == 0) return InvalidArgument("commitment covers no steps");
  if (known_divergent && *known_divergent >= c.leaf_count) {
    return InvalidArgument("step " + std::to_string(*known_divergent) + " is beyond the " +
                           std::to_string(c.leaf_count) + " committed steps");
  }
  auto agrees = [&agree](const StepLeaf& p, const StepLeaf& q) {
    return agree ? agree(p, q) : p == q;
  };
  BisectionResult result;

  // Probe one step: opens the prover's leaf and recomputes the challenger's. Returns whether
  // they agree, or nullopt after a prover default (result is then final).
  std::optional<OpenedLeaf> hi_leaf;
  std::optional<StepLeaf> hi_mine;
  std::optional<OpenedLeaf> lo_leaf;
  auto probe = [&](uint64_t step) -> Result<std::optional<bool>> {
    std::optional<OpenedLeaf> theirs = Open(c, prover, step, result);
    if (!theirs) return std::optional<bool>();
    ++result.recomputations;
    TRIB_ASSIGN_OR_RETURN(StepLeaf mine, challenger(step));
    const bool same = agrees(theirs->leaf, mine);
    if (same) {
      lo_leaf = std::move(theirs);
    } else {
      hi_leaf = std::move(theirs);
      hi_mine = std::move(mine);
    }
    return std::optional<bool>(same);
  };

  // Invariant: lo agreed (−1 = the round's start), hi disagreed.
  int64_t lo = -1;
  uint64_t hi = known_divergent.value_or(c.leaf_count - 1);
  TRIB_ASSIGN_OR_RETURN(std::optional<bool> first, probe(hi));
  if (!first) return result;
  if (*first) {
    result.outcome = BisectionOutcome::kNoDivergence;
    result.step = hi;
    return result;
  }
  while (static_cast<int64_t>(hi) - lo > 1) {
    const uint64_t mid = static_cast<uint64_t>(lo + (static_cast<int64_t>(hi) - lo) / 2);
    TRIB_ASSIGN_OR_RETURN(std::optional<bool> same, probe(mid));
    if (!same) return result;
    if (*same) {
      lo = static_cast<int64_t>(mid);
    } else {
      hi = mid;
    }
  }
  result.outcome = BisectionOutcome::kDivergence;
  result.step = hi;
  result.prover = std::move(hi_leaf);
  result.challenger = std::move(hi_mine);
  if (lo >= 0) {
    if (!lo_leaf || lo_leaf->leaf.step != static_cast<uint64_t>(lo)) {
      // lo was never probed in this call only if lo == −1; anything else is a bug.
      return Internal("bisection lost its agreed leaf");
    }
    result.agreed = std::move(lo_leaf);
  }
  return result;
}

Result<RefereeVerdict> Referee(const SignedCommitment& prover, const net::PublicKey& accuser,
                               const BisectionResult& b, const StepReplayFn& replay,
                               const RefereeOptions& options) {
  TRIB_RETURN_IF_ERROR(VerifyCommitment(prover).WithContext("referee"));
  const RoundCommitment& c = prover.body;
  RefereeVerdict v;
  v.prover = c.peer;
  v.accuser = accuser;
  v.round = c.round;
  v.step = b.step;
  auto rule = [&v](Ruling ruling, std::string reason) {
    v.ruling = ruling;
    v.guilty = ruling == Ruling::kProverGuilty ? v.prover : v.accuser;
    v.reason = std::move(reason);
    return v;
  };

  switch (b.outcome) {
    case BisectionOutcome::kProverDefault:
      return rule(Ruling::kProverGuilty,
                  "prover did not open step " + std::to_string(b.step) + ": " + b.reason);
    case BisectionOutcome::kNoDivergence:
      return rule(Ruling::kAccuserGuilty, "the accuser's recomputation agreed with the prover");
    case BisectionOutcome::kDivergence:
      break;
  }
  // Re-check the evidence: the referee trusts the commitment's signature, nothing else.
  if (!b.prover || !b.challenger || b.prover->leaf.step != b.step) {
    return FailedPrecondition("bisection result lacks the divergent leaves");
  }
  TRIB_RETURN_IF_ERROR(CheckOpenedLeaf(c, b.step, b.prover->leaf, b.prover->proof)
                           .WithContext("referee: divergent leaf"));
  const StepLeaf& leaf = b.prover->leaf;
  if (b.step > 0) {
    if (!b.agreed) return FailedPrecondition("bisection result lacks the agreed predecessor");
    TRIB_RETURN_IF_ERROR(CheckOpenedLeaf(c, b.step - 1, b.agreed->leaf, b.agreed->proof)
                             .WithContext("referee: agreed leaf"));
  }
  if (options.chained_states) {
    const std::optional<Digest> start =
        b.step > 0 ? std::optional<Digest>(b.agreed->leaf.update) : options.round_start_state;
    if (start && leaf.state_before != *start) {
      return rule(Ruling::kProverGuilty,
                  "prover's step " + std::to_string(b.step) +
                      " does not start from the state its " +
                      (b.step > 0 ? "previous step produced" : "round started from"));
    }
  }
  Result<ReplayedStep> replayed = replay(leaf);
  v.replays = 1;
  if (!replayed.ok()) {
    if (replayed.status().code() == StatusCode::kNotFound) {
      return rule(Ruling::kProverGuilty, "prover withheld the state of step " +
                                             std::to_string(b.step) + ": " +
                                             replayed.status().message());
    }
    return replayed.status().WithContext("referee replay of step " + std::to_string(b.step));
  }
  const ReplayComparator compare =
      options.compare ? options.compare : ReplayComparator(&CompareBitwise);
  const ReplayDecision on_prover = compare(leaf, *replayed);
  if (on_prover.match()) {
    return rule(Ruling::kAccuserGuilty, "the referee's replay of step " + std::to_string(b.step) +
                                            " reproduces the prover's leaf: false accusation");
  }
  v.accuser_also_wrong = !compare(*b.challenger, *replayed).match();
  return rule(Ruling::kProverGuilty, on_prover.reason);
}

}  // namespace tributary::verifier
