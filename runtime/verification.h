// The peer's side of the verifier protocol (docs/VERIFIER.md, "What is wired").
//
// As a prover it records a leaf and the pre-step state for every inner step (through the
// trainer's StepObserver), signs a commitment over the round's Merkle root before its round
// report, and answers the coordinator's OpenRequest with the leaf, its proof, the leaf before it
// and the pre-step state. As a verifier (or referee) it replays an opened step through
// runtime::StepKernel — the trainer's own step code — and answers VerifyRequest with its verdict
// and the leaf fields it recomputed.
//
// Everything a request carries is checked before use: the coordinator's envelope signature, the
// prover's commitment signature, the Merkle proofs, the chain to the previous leaf and the opened
// state's digest. Not thread-safe: the peer's training thread owns it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "net/identity.h"
#include "proto/tributary.pb.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "verifier/chain_ends.h"
#include "verifier/commitment.h"
#include "verifier/replay.h"

namespace tributary::runtime {

class StepKernel;

// Misbehaviour for the attack harness only (tests/adversary, binary tributary_adversary): no
// normal peer sets any of it, and the normal CLI has no way to.
struct AdversaryHooks {
  StepTamper step;                   // bends the training itself (skipped/faked steps, ...)
  bool withhold_openings = false;    // never answers an OpenRequest
  bool equivocate = false;           // sends a second, different commitment for each round
  bool commit_after_report = false;  // sends its commitment only after its round report
  bool accuse_falsely = false;       // reports every replay it is asked for as a mismatch
  bool vouch_always = false;         // reports every replay it is asked for as a match (collusion)
  std::string claimed_class;         // non-empty: lies about its determinism class
  // Rewrites the Δ this peer sends in a verifying DiLoCo round (stale, copied, scaled, NaN)
  // before it is bound, so that its manifest and commitment state the sent Δ consistently.
  std::function<void(uint64_t round, std::span<float> sent)> sent_delta;
  // Sees the group's averaged Δ of each round it took part in (what a free rider copies).
  std::function<void(uint64_t round, std::span<const float> averaged)> averaged_delta;
  bool manifest_lies = false;  // signs shard digests other than those of the payloads it sends
  // Rewrites each encoded payload of its sent Δ before it is digested and signed (NaN/Inf or
  // garbage bytes that its manifest does state; the codecs themselves refuse non-finite input).
  std::function<void(uint32_t shard, std::string& payload)> sent_payload;
  // Rewrites the error-feedback residual this peer encodes its sent Δ with (a payload carrying
  // more than Δ plus what it honestly owed); `residual_claim_untampered`: its manifest states,
  // and its audit opens, the residual as it was.
  std::function<void(uint64_t round, std::span<float> residual)> sent_residual;
  bool residual_claim_untampered = false;
  // Announces a detached opening's bulk but never serves it (an unreachable state server);
  // `withhold_inline_bulk`: nor sends the whole opening when the coordinator asks for it.
  bool unserved_bulk = false;
  bool withhold_inline_bulk = false;
  // As a shard owner: rewrites the aggregate of its shard before it is encoded and stated (a
  // lying owner; the statement names the honest contributions, the payload carries this).
  std::function<void(uint64_t round, std::span<float> aggregate)> owner_aggregate;
};

class PeerVerification {
 public:
  // `hooks` may be null (every normal peer). The kernel is created lazily on the first replay,
  // on `device`, a resolved compute device (ResolveComputeDevice), which its class names.
  PeerVerification(v1::JobSpec spec, std::string job_id, TrainingData data,
                   const net::Identity* identity, const AdversaryHooks* hooks, std::string device = "cpu");
  ~PeerVerification();

  // For Trainer::SetStepObserver.
  StepObserver Observer();

  // The StepCommitment envelopes of `round` (after TryRound): `before` go out before the round
  // report, `after` after it (only an adversary has any). FailedPrecondition if the round's
  // leaves are incomplete.
  struct Commitments {
    std::vector<v1::Envelope> before, after;
  };
  Result<Commitments> CommitRound(uint64_t round, uint32_t attempt, const Digest& pseudo_gradient);
  // DiLoCo, after CommitRound: the first and last leaves of `round` with their proofs and the
  // halves of the states they name, for the round report (verifier/chain_ends.h).
  Result<v1::ChainEnds> ChainEnds(uint64_t round) const;

  // Answers an OpenRequest or a VerifyRequest from the coordinator (whose key signs them).
  // nullopt: nothing to send (a withheld opening). A malformed request is an error.
  Result<std::optional<v1::Envelope>> Handle(const v1::Envelope& request,
                                             const net::PublicKey& coordinator_key);

  // The error-feedback residual the sent Δ of `round` was encoded with
  // (AttemptBinding::sent_residual; empty = zero): opened with the end state in a Δ audit.
  // A later attempt of the round replaces it.
  void KeepSentResidual(uint64_t round, std::vector<float> residual);
  // What this peer aggregated as a shard owner in `round` (AttemptBinding::TakeOwnerOpening): the
  // contributions by rank and the residual it owed before; opened in an aggregate audit. A later
  // attempt of the round replaces it.
  void KeepOwnerOpening(uint64_t round, std::vector<std::string> contributions, std::vector<float> residual_in);

  // The opening of (round, step), or NotFound when this peer no longer holds that round.
  // `end_state`: the state after `step`, which must be the round's last (a Δ audit).
  // `state_after`: the state after `step` besides the one before (a tolerance judgement).
  Result<v1::Opening> Open(uint64_t round, uint64_t step, bool end_state = false, bool state_after = false) const;
  // The verdict on one VerifyRequest: the replay of a step, or a Δ audit. A replay is judged
  // bit for bit, or, when it is not bit-identical and the job publishes a calibration for (the
  // prover's class, this peer's), against that calibration's limits on the opened post-step
  // state; another class without a calibration cannot replay.
  v1::VerifyResult Verify(const v1::VerifyRequest& request);

  const std::string& determinism_class() const { return class_; }

  // Openings peer to peer (verifier/opening_bulk.h). `offer` serves a detached opening's bulk
  // from this peer's state server; unset, every opening goes whole through the coordinator.
  // `fetch` downloads a bulk from the prover a VerifyRequest names (bulk_source).
  // `fetch` downloads the bulk of a VerifyRequest's opening from its bulk_source (the peer may
  // have started it when the request arrived: see WantsBulk).
  struct BulkTransport {
    std::function<void(const Digest& digest, std::shared_ptr<const std::string> bulk)> offer;
    std::function<Result<std::string>(const v1::VerifyRequest& request)> fetch;
  };
  void SetBulkTransport(BulkTransport transport) { bulk_ = std::move(transport); }
  // Whether Verify(request) would fetch its opening's bulk: a detached opening of a class this
  // peer can judge. Thread-safe (reads only what the constructor set), so that the peer can start
  // the download when the request arrives, while its training thread is still busy.
  bool WantsBulk(const v1::VerifyRequest& request) const;

 private:
  struct RoundLog {
    std::vector<std::optional<verifier::StepLeaf>> leaves;
    std::vector<verifier::TrainingState> states;
    std::optional<verifier::TrainingState> end;  // after the last step (DiLoCo)
    verifier::StateHalves start_halves, end_halves;  // DiLoCo: of step 0's state and of `end`
    std::vector<float> sent_residual;            // KeepSentResidual
    std::optional<std::vector<std::string>> owned_contributions;  // KeepOwnerOpening
    std::vector<float> owned_residual_in;
    std::optional<verifier::MerkleTree> tree;
  };
  void Record(StepRecord record);
  // θ_start − θ_end of the opened end state against the prover's signed manifest.
  v1::VerifyResult AuditDelta(const v1::VerifyRequest& request, const verifier::SignedCommitment& commitment,
                              const verifier::StepLeaf& leaf);
  // A replay that is not bit-identical, judged against the job's calibration for (the prover's
  // class, this peer's) on the opened post-step state. An error: this peer cannot judge.
  Result<verifier::ReplayDecision> JudgeWithinTolerance(const verifier::StepLeaf& leaf,
                                                        const verifier::TrainingState& before,
                                                        const verifier::ReplayedStep& replayed,
                                                        const verifier::TrainingState& replayed_after,
                                                        const v1::Opening& opening, StepKernel& kernel);
  Result<StepKernel*> Kernel();
  // Verify() once the opening is whole.
  v1::VerifyResult VerifyOpened(const v1::VerifyRequest& request);
  // The answer to an OpenRequest: the opening, its bulk detached and offered when it is large.
  std::optional<v1::Envelope> AnswerOpenRequest(const v1::OpenRequest& request);
  // The answer when this peer no longer holds the requested round (Opening.not_held).
  std::optional<v1::Envelope> NotHeld(const v1::OpenRequest& request) const;

  v1::JobSpec spec_;
  std::string job_id_;
  TrainingData data_;
  const net::Identity* identity_;
  const AdversaryHooks* hooks_;
  std::string device_;
  std::string class_;
  verifier::CalibrationTable calibrations_;  // the job's (JobSpec.tolerance_calibrations)
  std::map<uint64_t, RoundLog> rounds_;  // the last few rounds (openings come after commit)
  std::unique_ptr<StepKernel> kernel_;
  BulkTransport bulk_;
};

}  // namespace tributary::runtime
