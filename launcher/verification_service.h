// The coordinator's side of the verifier protocol for one job (docs/VERIFIER.md, "What is
// wired"): commit–reveal secrets in RoundStart, admission of step commitments until every member
// has reported (a report without a commitment is refused), challenges derived after that
// deadline, openings checked against the signed roots, replays by other members, disputes
// settled by a referee replay (verifier::Referee), and the consequences: the ledger in SQLite,
// bans, and — through the caller's ban callback — the cheater's exclusion from any round still
// in progress.
//
// Verification of round r runs while round r+1 trains (off the critical path): a caught cheater
// is banned and dropped, so its contribution is excluded from every round not yet committed.
//
// Not thread-safe: the coordinator's strand owns it. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "net/identity.h"
#include "proto/tributary.pb.h"
#include "verifier/challenge.h"
#include "verifier/contribution.h"
#include "verifier/ledger.h"
#include "verifier/replay.h"

namespace tributary::launcher {

class CoordinatorStore;
struct ResidualLink;

class VerificationService {
 public:
  // Sends a (to be signed) envelope to the member with this key; false if it is not connected.
  using SendFn = std::function<bool(const net::PublicKey& to, v1::Envelope e)>;
  // Disconnects a banned peer (and drops it from a round in progress).
  using BanFn = std::function<void(const net::PublicKey& who, const std::string& why)>;

  struct Member {
    net::PublicKey key{};
    uint32_t shard = 0;
    // θ digest (raw) this member's round started from; empty = the round's (OnRoundStart). In
    // grouped jobs members of one round start from different states, and a replay of step 0 is
    // checked against the prover's own: the opening carries the full state, so any member of
    // the determinism class can replay it.
    std::string round_start_theta;
  };

  // Where a member serves the bulk of its openings (its state server), when it can be reached.
  using BulkSourceFn = std::function<std::optional<v1::Member>(const net::PublicKey& prover)>;

  // Loads the job's ledger and bans from `store` (kept alive by the caller).
  static Result<std::unique_ptr<VerificationService>> Create(const v1::JobSpec& spec, std::string job_id,
                                                             const net::Identity* coordinator,
                                                             CoordinatorStore* store, SendFn send, BanFn ban);

  bool enabled() const { return spec_.verify_samples() > 0; }
  // Openings peer to peer: a detached opening's verifiers are told to fetch its bulk here.
  // Unset (or nullopt), they report it unavailable and the prover sends it through us.
  void SetBulkSources(BulkSourceFn fn) { bulk_source_ = std::move(fn); }
  bool IsBanned(const net::PublicKey& key) const { return banned_.count(key) > 0; }
  // Records a ban (SQLite) and asks the caller to disconnect the peer.
  void Ban(const net::PublicKey& who, const std::string& why);
  // Challenges of committed rounds are still open.
  bool busy() const;

  // A RoundStart of `round` goes out (any attempt): returns the challenge commitment it carries.
  // `round_start_theta`: the θ digest the round starts from (raw, empty for round 0). A DDP
  // retry re-runs its steps with other survivors, so each DDP attempt gets a fresh commitment
  // book (same secret); a DiLoCo retry resends the same root.
  std::string OnRoundStart(uint64_t round, const std::string& round_start_theta, uint32_t attempt = 0);
  // A StepCommitment from a peer. An error means the peer cheated or misbehaved (forged, late,
  // equivocating): the caller refuses it; the peer is already banned where that is warranted.
  Status OnCommitment(const net::PublicKey& from, const v1::StepCommitment& commitment, uint64_t now_ms);
  // OK iff `from` has an admitted commitment for the report's round and, in a DiLoCo job, the
  // report carries the manifest `from` signed for its sent Δ in this attempt of `world` members,
  // stating the committed H(Δ), and an error-feedback residual that continues its last one (its
  // residual_in is zero, or the residual_out or residual_in of its manifest in the last round
  // committed with it: a peer that never heard of that commit rolled it back). It must also carry
  // the signed aggregate statement of every non-empty shard of its group
  // (verifier/aggregate_statement.h), each naming at `from`'s rank the contribution its manifest
  // states, its own among them with an owner's residual that continues its last one likewise.
  // An error: the caller refuses the report and bans `from`. A shard owner whose statement
  // differs from the one another member reported for the same attempt signed two aggregates
  // (equivocation): it is banned here, and the report is still OK.
  //
  // In a verifying DiLoCo job the report must also carry the ends of its committed steps
  // (verifier/chain_ends.h): step 0 starts from `start_theta` (the raw θ digest `from`'s round
  // starts from; empty: not known here, as for θ_0, and left to step-0 replays) and from a fresh
  // optimiser state or the one `from`'s last committed round ended with (or started with: a
  // peer that never heard of that commit).
  Status CheckReport(const net::PublicKey& from, const v1::RoundReport& report, uint32_t world,
                     const std::string& start_theta = "");
  // A shard owner's proof against a sender (verifier::DecodeContributionProof): its contribution
  // contradicts its signed manifest, or its signed payload does not decode with the job's codec
  // or decodes to NaN/Inf. The sender is banned if the proof holds, the reporter if it does not
  // (a baseless accusation) or if it names another job, or another round/attempt than its
  // message. A proof about an attempt this coordinator has not started is ignored.
  void OnContributionProof(const net::PublicKey& from, const v1::ContributionProof& proof);
  // Round `round` is about to be recorded as committed with these members: their residual links
  // (the error-feedback digests their manifests of the round stated), for the round's record,
  // and from now on what each one's next manifest must continue (CheckReport).
  std::vector<ResidualLink> CommitResidualLinks(uint64_t round, const std::vector<net::PublicKey>& members);
  // Round `round` committed with these members: close admission, reveal, sample, open.
  void OnRoundCommitted(uint64_t round, const std::vector<Member>& members, uint64_t now_ms);
  // The owners' aggregates are audited before every commit, whatever the mode: a lying owner's
  // aggregate would otherwise enter θ, and no aggregator bounds it (the owner computes it).
  // Starts the audits of the reported statements not audited yet (OnRoundCommitted starts them
  // too; a retry re-shards, so its owners return new ones) and returns how many; the caller
  // commits once this returns 0 with no aggregate audit of the round open
  // (AggregateAuditsOpen). A conviction bans the owner, which retries its group.
  size_t AuditAggregatesBeforeCommit(uint64_t round, const std::vector<Member>& members, uint64_t now_ms);
  bool AggregateAuditsOpen(uint64_t round) const;
  void OnOpening(const net::PublicKey& from, const v1::Opening& opening, uint64_t now_ms);
  void OnVerifyResult(const net::PublicKey& from, const v1::VerifyResult& result, uint64_t now_ms);
  // Deadlines: an opening not given in time is a default; a silent verifier is replaced when
  // another member can verify.
  void Sweep(uint64_t now_ms);
  // The coordinator could not listen for `ms` (its strand was busy): every open deadline moves
  // by that much, so nobody defaults for time nobody could answer in.
  void ExtendDeadlines(uint64_t ms);
  // `key` (re)joined: the OpenRequests it has not answered go out again, each with a fresh
  // deadline (the ones sent on its lost connection went nowhere; a prover that no longer holds
  // the round still defaults).
  void OnMemberReconnected(const net::PublicKey& key, uint64_t now_ms);

  // Receipts for every ledger record (signed now) and the bans.
  void FillLedgerReply(v1::LedgerReply& reply, uint64_t now_ms) const;
  const verifier::Ledger& ledger() const { return ledger_; }

 private:
  struct RoundState {
    Digest secret{};
    std::string round_start_theta;
    std::unique_ptr<verifier::CommitmentBook> book;
    uint32_t attempt = 0;         // DDP: the attempt `book` admits commitments for
    std::vector<Member> members;  // of the committed round
    std::map<net::PublicKey, std::string> manifests;  // each member's last reported manifest
    // residual_in and residual_out those manifests state (CommitResidualLinks).
    std::map<net::PublicKey, std::pair<Digest, Digest>> residuals;
    // The aggregate statement of each (owner, attempt), as first reported (encoded), and the
    // owner's residual digests that its own statement states (CommitResidualLinks).
    std::map<std::pair<net::PublicKey, uint64_t>, std::string> aggregate_statements;
    std::map<net::PublicKey, std::pair<Digest, Digest>> aggregate_residuals;
    std::set<std::pair<net::PublicKey, uint64_t>> audited_aggregates;  // (owner, attempt)
    std::map<net::PublicKey, std::string> classes;  // each committed member's determinism class
    // The optimiser digests at the start and the end of each reporting member's steps (its
    // chain ends; CommitResidualLinks).
    std::map<net::PublicKey, std::pair<Digest, Digest>> optimizer_ends;
  };
  enum class Stage { kOpening, kVerifying, kRefereeing, kDone };
  struct Pending {
    uint64_t round = 0;
    uint64_t step = 0;
    net::PublicKey prover{};
    uint32_t shard = 0;
    verifier::SignedCommitment commitment;
    std::vector<net::PublicKey> verifiers;
    std::map<net::PublicKey, v1::VerifyResult> results;
    std::optional<v1::Opening> opening;
    std::vector<net::PublicKey> referees;  // asked in turn; the majority of their rulings decides
    std::set<net::PublicKey> asked;  // every peer this challenge went to
    std::string manifest;            // set: a Δ audit of the round's last step, not a replay
    std::string aggregate_statement;  // set: an audit of the prover's aggregate as a shard owner
    Stage stage = Stage::kOpening;
    uint64_t deadline_ms = 0;
    bool state_after = false;         // the opening must carry the state after the step
    // Openings peer to peer: verifiers and referees that could not fetch the detached bulk, and
    // the whole opening the prover sent through us when asked (OpenRequest.inline_bulk).
    std::set<net::PublicKey> awaiting_inline;
    std::optional<v1::Opening> inline_opening;
    uint64_t inline_deadline_ms = 0;  // nonzero: asked for it
    bool bitwise_conviction = false;  // a referee convicted bit for bit (see Convict)
  };

  VerificationService(const v1::JobSpec& spec, std::string job_id, const net::Identity* coordinator,
                      CoordinatorStore* store, SendFn send, BanFn ban);
  uint64_t TimeoutMs() const;
  void Persist();
  void Convict(uint64_t id, Pending& p, const net::PublicKey& accuser, const std::string& why);
  void SendVerify(uint64_t id, Pending& p, const net::PublicKey& to, bool referee, uint64_t now_ms);
  void Settle(uint64_t id, Pending& p, uint64_t now_ms);
  std::optional<net::PublicKey> PickReferee(const Pending& p) const;
  bool BindsContributions() const;
  // verifier::CheckBadPayloadProof with the job's codec and the shard's size from the manifest.
  Status CheckBadPayload(const verifier::BadContributionPayload& proof) const;
  // One Δ audit per committed member with a manifest, by verifiers drawn from the round's seed.
  void StartDeltaAudits(uint64_t round, const Digest& seed, const std::map<net::PublicKey, verifier::SignedCommitment>& by_key,
                        const std::map<net::PublicKey, uint32_t>& shard_of, uint32_t verifiers, uint64_t now_ms);
  void SendOpenRequest(uint64_t id, const Pending& p, bool inline_bulk = false);
  // A verifier could not fetch a detached opening's bulk: ask the prover for the whole opening
  // (once), and send it on to this verifier when it comes.
  void OnBulkUnavailable(uint64_t id, Pending& p, const net::PublicKey& verifier, uint64_t now_ms);
  // The prover's whole opening, asked for after a verifier could not fetch its bulk.
  void OnInlineOpening(uint64_t id, Pending& p, const v1::Opening& o, uint64_t now_ms);
  // The prover no longer holds the round (Opening.not_held: it restarted since). Forgiven, with
  // the round's work left uncredited, while its lost rounds stay within the allowance
  // (kRoundsPerForgivenLoss); past it the loss counts as a withheld opening.
  void OnNotHeld(uint64_t id, Pending& p);
  Status CheckChainEnds(const net::PublicKey& from, const v1::RoundReport& report,
                        const verifier::RoundCommitment& commitment, const std::string& start_theta, RoundState& rs);
  Status CheckAggregateStatements(const net::PublicKey& from, const v1::RoundReport& report, uint32_t world,
                                  const verifier::ContributionManifest& manifest, RoundState& rs);
  // One aggregate audit per committed shard owner with a statement: its opened contributions
  // and residual must reproduce the aggregate it stated (collectives::ReproduceAggregate). The
  // coordinator recomputes it itself: no model is needed, and the result is exact.
  size_t StartAggregateAudits(uint64_t round, const std::map<net::PublicKey, verifier::SignedCommitment>& by_key,
                              uint64_t now_ms);
  void AuditAggregate(uint64_t id, Pending& p, const v1::Opening& opening);
  struct RefereeRuling {
    std::optional<verifier::Ruling> ruling;  // nullopt: this referee could not rule
    std::string reason;
    std::optional<verifier::RefereeVerdict> verdict;  // a step's acquittal, for the ledger
  };
  RefereeRuling RuleOn(const Pending& p, const net::PublicKey& accuser, const net::PublicKey& referee,
                       const v1::VerifyResult& result) const;
  // How `judge` judged (or would judge) the challenged step: bit for bit, within the job's
  // calibrated tolerance, or not at all. A Δ audit is exact arithmetic on any class: kBitwise.
  verifier::JudgeKind JudgeOf(const Pending& p, const net::PublicKey& judge) const;
  // Sends the dispute to one more member (PickReferee); false when none is left.
  bool AskReferee(uint64_t id, Pending& p, uint64_t now_ms);

  v1::JobSpec spec_;
  std::string job_id_;
  const net::Identity* coordinator_;
  CoordinatorStore* store_;
  SendFn send_;
  BanFn ban_;
  BulkSourceFn bulk_source_;
  verifier::Ledger ledger_;
  verifier::CalibrationTable calibrations_;  // the job's (validated with the spec)
  std::map<net::PublicKey, std::string> banned_;
  // Per peer: residual_in and residual_out of its manifest in the last round committed with it.
  std::map<net::PublicKey, std::pair<Digest, Digest>> residual_links_;
  // Per peer: the residual digests of its aggregate statement in the last round committed with it.
  std::map<net::PublicKey, std::pair<Digest, Digest>> aggregate_links_;
  // Per peer: the optimiser digests at the start and end of its steps in the last round
  // committed with it (DiLoCo chain ends).
  std::map<net::PublicKey, std::pair<Digest, Digest>> optimizer_links_;
  std::map<net::PublicKey, std::set<uint64_t>> lost_rounds_;  // forgiven losses (OnNotHeld), in SQLite
  std::map<uint64_t, RoundState> rounds_;
  std::optional<std::pair<uint64_t, uint64_t>> latest_start_;  // the latest (round, attempt) started
  std::map<uint64_t, Pending> pending_;
  uint64_t next_challenge_ = 1;
};

}  // namespace tributary::launcher
