// Challenges: which (peer, step) pairs get replayed, and by whom — derived only after every
// commitment of the round is fixed.
//
//   seed = SHA-256("tributary.verifier.challenge.v1" ‖ job ‖ round ‖ n ‖
//                  (peer key ‖ root ‖ leaf count) for each admitted commitment, sorted by key ‖
//                  entropy)
//
// `entropy` must be unknown to every prover until the commit deadline has passed: either the
// coordinator's secret, committed as SecretCommitment(secret) in RoundStart *before* the round and
// revealed after the deadline (commit-reveal; anyone checks the reveal with CheckReveal), or a
// public beacon value first published after the deadline. Because the seed hashes every admitted
// root, no prover can steer its own sample by choosing its root without also knowing the entropy,
// and a root that arrives after the deadline is refused (AdmitCommitment) — it can neither
// influence the seed nor be committed with knowledge of it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "net/identity.h"
#include "verifier/commitment.h"
#include "verifier/replay.h"

namespace tributary::verifier {

// ---- commit-reveal of the coordinator's challenge secret ----------------------------------------

// SHA-256("tributary.verifier.secret.v1" ‖ secret). Published before the round starts.
Digest SecretCommitment(const Digest& secret);
// OK iff `revealed` opens `commitment`; Corruption otherwise (the coordinator changed its secret).
Status CheckReveal(const Digest& commitment, const Digest& revealed);

// ---- admission of commitments -------------------------------------------------------------------

struct RoundSchedule {
  std::string job_id;
  uint64_t round = 0;
  uint64_t commit_deadline_ms = 0;  // coordinator clock; a commitment must arrive before it
  // SecretCommitment(secret) published in RoundStart; when set, Seal accepts only its opening.
  // Unset when the entropy is a public beacon value.
  std::optional<Digest> secret_commitment;
};

// The admission rule for one commitment, in this order:
//   DeadlineExceeded   if received_at_ms >= commit_deadline_ms, or the round's challenge has
//                      already been derived (sealed) — a late root must not see or steer its
//                      challenge;
//   Corruption         if the signature or body does not verify;
//   InvalidArgument    if it is for another job or round.
Status AdmitCommitment(const RoundSchedule& schedule, const SignedCommitment& commitment,
                       uint64_t received_at_ms, bool sealed);

// The round's commitments as the coordinator collects them. Not thread-safe (the coordinator
// keeps it on its strand).
class CommitmentBook {
 public:
  explicit CommitmentBook(RoundSchedule schedule) : schedule_(std::move(schedule)) {}

  // AdmitCommitment, then: a repeat of an admitted commitment is OK (idempotent); a *different*
  // validly signed commitment from an admitted peer is recorded as an equivocation and refused
  // with ProtocolError.
  Status Submit(const SignedCommitment& commitment, uint64_t received_at_ms);

  // Derives the challenge seed from the admitted roots and `entropy` and seals the book (every
  // later Submit is DeadlineExceeded). FailedPrecondition before the deadline, with no
  // commitment, or when sealed before with other entropy (the same entropy gives the same seed);
  // Corruption if `entropy` does not open schedule().secret_commitment.
  Result<Digest> Seal(const Digest& entropy, uint64_t now_ms);
  // Moves the commit deadline to `deadline_ms` when that is earlier: a coordinator whose
  // deadline is an event (every member has reported) rather than a time closes admission here.
  void CloseAt(uint64_t deadline_ms) {
    schedule_.commit_deadline_ms = std::min(schedule_.commit_deadline_ms, deadline_ms);
  }

  // Sorted by peer key (the canonical order of the seed).
  const std::vector<SignedCommitment>& admitted() const { return admitted_; }
  // Pairs of conflicting commitments from one peer (transferable proofs, see IsEquivocation).
  const std::vector<std::pair<SignedCommitment, SignedCommitment>>& equivocations() const {
    return equivocations_;
  }
  bool sealed() const { return sealed_; }
  const RoundSchedule& schedule() const { return schedule_; }

 private:
  RoundSchedule schedule_;
  std::vector<SignedCommitment> admitted_;
  std::vector<std::pair<SignedCommitment, SignedCommitment>> equivocations_;
  bool sealed_ = false;
  Digest sealed_entropy_{};
  Digest seed_{};
};

// The seed formula above over `commitments` (any order; they are sorted by peer key here).
// InvalidArgument if two commitments name the same peer, or one is for another job or round.
Result<Digest> ChallengeSeed(const std::string& job_id, uint64_t round,
                             std::vector<RoundCommitment> commitments, const Digest& entropy);

// ---- sampling -----------------------------------------------------------------------------------

struct Participant {
  net::PublicKey key{};
  uint64_t leaf_count = 0;        // 0: this participant only verifies, it proved nothing
  std::string determinism_class;  // verifiers of the prover's class are preferred (bitwise)
};

struct ChallengeParams {
  uint64_t samples_per_peer = 1;  // q; all steps if a peer committed fewer
  uint32_t verifiers_per_step = 1;
  // The job's calibrations (may be null): other classes calibrated for the prover's are
  // preferred over those that cannot judge its steps at all.
  const CalibrationTable* calibrations = nullptr;
};

struct Challenge {
  net::PublicKey prover{};
  uint64_t step = 0;
  std::vector<net::PublicKey> verifiers;  // distinct, never the prover
};

// Deterministic function of (seed, participants as a set, params): for each prover (in key
// order) q distinct steps drawn uniformly without replacement (ascending), and for each sampled
// step `verifiers_per_step` distinct verifiers drawn uniformly from the other participants of
// the prover's determinism class, topped up from the classes calibrated for it only when the
// class has too few, and from the remaining classes only when those have too few as well. InvalidArgument for duplicate keys or verifiers_per_step == 0; FailedPrecondition when
// fewer than verifiers_per_step other participants exist.
Result<std::vector<Challenge>> SampleChallenges(const Digest& seed,
                                                std::vector<Participant> participants,
                                                const ChallengeParams& params);

// ---- detection arithmetic -----------------------------------------------------------------------

// 1 − (1 − f)^q: detection bound for q independent samples when a fraction f of steps is fake.
double DetectionBound(double f, uint64_t q);
// Exact probability that q steps drawn without replacement from n include at least one of `bad`
// fake steps: 1 − C(n − bad, q) / C(n, q).
double DetectionExact(uint64_t n, uint64_t bad, uint64_t q);
// Smallest q with DetectionBound(f, q) >= p (0 < f < 1, 0 < p < 1).
uint64_t SamplesForDetection(double f, double p);
// Smallest q with DetectionExact(n, bad, q) >= p (n if even every step is not enough).
uint64_t SamplesForDetectionExact(uint64_t n, uint64_t bad, double p);

}  // namespace tributary::verifier
