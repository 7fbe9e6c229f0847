#include "launcher/verification_service.h"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <tuple>
#include <utility>
#include <variant>

#include "collectives/butterfly.h"
#include "core/digest.h"
#include "core/sodium_init.h"
#include "launcher/store.h"
#include "runtime/job_spec.h"
#include "net/frame.h"
#include "collectives/robust/aggregator.h"
#include "verifier/aggregate_statement.h"
#include "verifier/chain_ends.h"
#include "verifier/contribution.h"
#include "verifier/opening_bulk.h"
#include "verifier/dispute.h"
#include "verifier/replay.h"

namespace tributary::launcher {
namespace {

constexpr size_t kRoundsKept = 4;
// The largest shard a bad-payload proof is decoded for (256 MiB of floats): bounds what a
// colluding sender and reporter can make the coordinator allocate.
constexpr uint64_t kMaxCheckedShardNumel = uint64_t{1} << 26;
// The largest opening bulk a prover may announce (its verifiers bound it by their own model).
constexpr uint64_t kMaxBulkBytes = uint64_t{64} << 30;
// Residual links of a peer's aggregate statements are stored beside its manifests' links, under
// its key with this suffix.
constexpr std::string_view kAggregateLinkSuffix = "/aggregate";
// And the optimiser digests of its chain ends (start, end) under this one.
constexpr std::string_view kOptimizerLinkSuffix = "/optimizer";
// A prover may lose the openings of one round (a restart: a new process holds none of its
// predecessor's rounds), and one more for every this many rounds it committed. More losses than
// restarts now and then explain count as withheld openings: otherwise a cheater could poison a
// round and then "restart" out of its challenges at will.
constexpr uint64_t kRoundsPerForgivenLoss = 10;

// A value a peer carries from round to round (an error-feedback residual, its optimiser state)
// continues its chain when it is `fresh` (nothing carried: a first round, a restarted peer; a
// zero digest for residuals), or the out or in value of what the peer stated in the last round
// committed with it (a peer that never heard of that commit rolled it back).
bool ContinuesChain(const std::map<net::PublicKey, std::pair<Digest, Digest>>& links, const net::PublicKey& peer,
                    const Digest& value, const Digest& fresh = Digest{}) {
  if (value == fresh) return true;
  auto link = links.find(peer);
  return link != links.end() && (value == link->second.second || value == link->second.first);
}

Result<Digest> DigestField(const std::string& raw) { return DigestFromBytes(raw); }

// The leaf fields a VerifyResult reports, as the verifier recomputed them.
Result<verifier::ReplayedStep> ReplayedOf(const v1::VerifyResult& r) {
  verifier::ReplayedStep s;
  TRIB_ASSIGN_OR_RETURN(s.state_before, DigestField(r.state_before()));
  TRIB_ASSIGN_OR_RETURN(s.batch, DigestField(r.batch()));
  TRIB_ASSIGN_OR_RETURN(s.update, DigestField(r.update()));
  s.loss_bits = r.loss_bits();
  return s;
}

// Checks an opening against the prover's signed commitment: the leaf and (step > 0) the leaf
// before it are in the tree, and the step starts where the previous one ended.
Result<verifier::BisectionResult> CheckOpening(const verifier::SignedCommitment& c, uint64_t step,
                                               const v1::Opening& o) {
  if (o.step() != step || o.round() != c.body.round) return Corruption("opening names another step");
  verifier::BisectionResult b;
  b.outcome = verifier::BisectionOutcome::kDivergence;
  b.step = step;
  verifier::OpenedLeaf opened;
  TRIB_ASSIGN_OR_RETURN(opened.leaf, verifier::DecodeLeaf(o.leaf()));
  TRIB_ASSIGN_OR_RETURN(opened.proof, verifier::DecodeProof(o.proof()));
  TRIB_RETURN_IF_ERROR(verifier::CheckOpenedLeaf(c.body, step, opened.leaf, opened.proof));
  if (step > 0) {
    verifier::OpenedLeaf prev;
    TRIB_ASSIGN_OR_RETURN(prev.leaf, verifier::DecodeLeaf(o.previous_leaf()));
    TRIB_ASSIGN_OR_RETURN(prev.proof, verifier::DecodeProof(o.previous_proof()));
    TRIB_RETURN_IF_ERROR(verifier::CheckOpenedLeaf(c.body, step - 1, prev.leaf, prev.proof));
    b.agreed = prev;
  }
  if (verifier::HasDetachedBulk(o)) {
    // Its bulk travels peer to peer: its verifiers check it against the digest it signed here.
    TRIB_RETURN_IF_ERROR(verifier::OpeningBulkDigest(o).status());
  } else if (o.state().empty()) {
    return Corruption("opening without the pre-step state");
  }
  b.prover = opened;
  return b;
}

}  // namespace

VerificationService::VerificationService(const v1::JobSpec& spec, std::string job_id,
                                         const net::Identity* coordinator, CoordinatorStore* store,
                                         SendFn send, BanFn ban)
    : spec_(spec),
      job_id_(std::move(job_id)),
      coordinator_(coordinator),
      store_(store),
      send_(std::move(send)),
      ban_(std::move(ban)) {}

Result<std::unique_ptr<VerificationService>> VerificationService::Create(
    const v1::JobSpec& spec, std::string job_id, const net::Identity* coordinator, CoordinatorStore* store,
    SendFn send, BanFn ban) {
  std::unique_ptr<VerificationService> s(
      new VerificationService(spec, std::move(job_id), coordinator, store, std::move(send), std::move(ban)));
  TRIB_ASSIGN_OR_RETURN(s->calibrations_, verifier::CalibrationTable::Decode({spec.tolerance_calibrations().begin(),
                                                                               spec.tolerance_calibrations().end()}));
  TRIB_ASSIGN_OR_RETURN(std::string bytes, store->LoadLedger(s->job_id_));
  if (!bytes.empty()) {
    TRIB_ASSIGN_OR_RETURN(s->ledger_, verifier::Ledger::Decode(bytes));
  }
  TRIB_ASSIGN_OR_RETURN(std::vector<ResidualLink> links, store->ResidualLinks(s->job_id_));
  for (const ResidualLink& link : links) {
    std::string_view hex = link.key;
    auto* chain = &s->residual_links_;
    if (hex.ends_with(kAggregateLinkSuffix)) {
      hex.remove_suffix(kAggregateLinkSuffix.size());
      chain = &s->aggregate_links_;
    } else if (hex.ends_with(kOptimizerLinkSuffix)) {
      hex.remove_suffix(kOptimizerLinkSuffix.size());
      chain = &s->optimizer_links_;
    }
    auto key = net::KeyFromHex(hex);
    auto in = DigestFromBytes(link.residual_in);
    auto out = DigestFromBytes(link.residual_out);
    if (key.ok() && in.ok() && out.ok()) (*chain)[*key] = {*in, *out};
  }
  TRIB_ASSIGN_OR_RETURN(auto lost, store->LostRounds(s->job_id_));
  for (const auto& [hex, round] : lost) {
    auto key = net::KeyFromHex(hex);
    if (key.ok()) s->lost_rounds_[*key].insert(round);
  }
  TRIB_ASSIGN_OR_RETURN(auto bans, store->BannedPeers(s->job_id_));
  for (const auto& [hex, reason] : bans) {
    auto key = net::KeyFromHex(hex);
    if (key.ok()) s->banned_[*key] = reason;
  }
  return s;
}

uint64_t VerificationService::TimeoutMs() const {
  return spec_.verify_timeout_ms() ? spec_.verify_timeout_ms() : spec_.round_timeout_ms();
}

void VerificationService::Persist() {
  Status st = store_->SaveLedger(job_id_, ledger_.Encode());
  if (!st.ok()) spdlog::error("job {}: cannot store the verifier ledger: {}", job_id_, st.ToString());
}

void VerificationService::Ban(const net::PublicKey& who, const std::string& why) {
  if (who == coordinator_->public_key()) return;
  if (!banned_.emplace(who, why).second) return;
  spdlog::error("job {}: peer {} banned: {}", job_id_, net::ShortKey(who), why);
  (void)store_->BanPeer(job_id_, net::KeyToHex(who), why);
  ban_(who, why);
}

std::string VerificationService::OnRoundStart(uint64_t round, const std::string& round_start_theta,
                                              uint32_t attempt) {
  auto fresh_book = [&](const RoundState& rs) {
    verifier::RoundSchedule schedule;
    schedule.job_id = job_id_;
    schedule.round = round;
    schedule.commit_deadline_ms = UINT64_MAX;  // closed when every member has reported
    schedule.secret_commitment = verifier::SecretCommitment(rs.secret);
    return std::make_unique<verifier::CommitmentBook>(schedule);
  };
  const std::pair<uint64_t, uint64_t> started{round, attempt};
  if (!latest_start_ || started > *latest_start_) latest_start_ = started;
  auto it = rounds_.find(round);
  if (it == rounds_.end()) {
    RoundState rs;
    EnsureSodiumInitialised();
    randombytes_buf(rs.secret.data(), rs.secret.size());
    rs.round_start_theta = round_start_theta;
    rs.book = fresh_book(rs);
    rs.attempt = attempt;
    it = rounds_.emplace(round, std::move(rs)).first;
    while (rounds_.size() > kRoundsKept) rounds_.erase(rounds_.begin());
  } else if (spec_.mode() == v1::MODE_DDP && it->second.attempt != attempt) {
    it->second.book = fresh_book(it->second);
    it->second.attempt = attempt;
  }
  return DigestToBytes(*it->second.book->schedule().secret_commitment);
}

Status VerificationService::OnCommitment(const net::PublicKey& from, const v1::StepCommitment& m,
                                         uint64_t now_ms) {
  TRIB_ASSIGN_OR_RETURN(verifier::SignedCommitment c, verifier::DecodeCommitment(m.commitment()));
  if (c.body.peer != from) {
    Ban(from, "sent a commitment signed for another peer");
    return ProtocolError("commitment for another peer's key");
  }
  auto it = rounds_.find(m.round());
  if (it == rounds_.end() || c.body.round != m.round()) {
    Ban(from, "commitment for round " + std::to_string(m.round()) + ", which is not open");
    return DeadlineExceeded("commitment for a round that is not open");
  }
  // In DDP each attempt re-runs the steps into a book of its own (OnRoundStart). A member that
  // finished an attempt just as it was retried sends that attempt's commitment after the new
  // book opened: stale, not a second root for the retry.
  if (spec_.mode() == v1::MODE_DDP && m.attempt() < it->second.attempt) return Status::Ok();
  if (c.body.leaf_count != spec_.inner_steps()) {
    Ban(from, "committed " + std::to_string(c.body.leaf_count) + " steps, the job has " +
                  std::to_string(spec_.inner_steps()));
    return ProtocolError("wrong number of committed steps");
  }
  if (it->second.book->sealed()) {  // a retry of a round challenged before its commit resends
    for (const auto& admitted : it->second.book->admitted()) {
      if (admitted.body == c.body) return Status::Ok();
    }
  }
  Status st = it->second.book->Submit(c, now_ms);
  if (st.ok()) return st;
  if (st.code() == StatusCode::kProtocolError && !it->second.book->equivocations().empty()) {
    const auto& proof = it->second.book->equivocations().back();
    (void)ledger_.RecordCommitment(proof.first);
    (void)ledger_.RecordEquivocation(proof.first, proof.second);
    Persist();
    Ban(from, "equivocated: two signed roots for round " + std::to_string(m.round()));
  } else if (st.code() == StatusCode::kDeadlineExceeded) {
    Ban(from, "committed to round " + std::to_string(m.round()) + " after its challenges were drawn");
  } else {
    Ban(from, "sent an invalid commitment: " + st.message());
  }
  return st;
}

bool VerificationService::BindsContributions() const { return enabled() && spec_.mode() == v1::MODE_DILOCO; }

Status VerificationService::CheckReport(const net::PublicKey& from, const v1::RoundReport& report, uint32_t world,
                                        const std::string& start_theta) {
  auto it = rounds_.find(report.round());
  const verifier::SignedCommitment* commitment = nullptr;
  if (it != rounds_.end()) {
    for (const auto& c : it->second.book->admitted()) {
      if (c.body.peer == from) commitment = &c;
    }
  }
  if (!commitment) return FailedPrecondition("round report without a step commitment (the job verifies)");
  if (spec_.mode() == v1::MODE_DILOCO) {
    TRIB_RETURN_IF_ERROR(CheckChainEnds(from, report, commitment->body, start_theta, it->second));
  }
  if (!BindsContributions()) return Status::Ok();
  if (report.contribution_manifest().empty()) {
    return FailedPrecondition("round report without the manifest of its sent Δ (the job verifies)");
  }
  auto manifest = verifier::DecodeManifest(report.contribution_manifest());
  if (!manifest.ok()) return manifest.status().WithContext("round report with a malformed contribution manifest");
  TRIB_RETURN_IF_ERROR(verifier::VerifyManifest(*manifest).WithContext("round report's contribution manifest"));
  const verifier::ContributionManifest& m = manifest->body;
  if (m.peer != from || m.job_id != job_id_ || m.round != report.round() || m.attempt != report.attempt() ||
      m.shard_digests.size() != world) {
    return FailedPrecondition("the contribution manifest is not this peer's for this job, round and attempt");
  }
  if (m.pseudo_gradient != commitment->body.pseudo_gradient) {
    return FailedPrecondition("its signed contribution manifest and its signed step commitment state different Δ");
  }
  if (!ContinuesChain(residual_links_, from, m.residual_in)) {
    return FailedPrecondition(
        "its error-feedback residual is not the one its last committed contribution left (its manifest states " +
        ShortHex(m.residual_in) + ")");
  }
  TRIB_RETURN_IF_ERROR(CheckAggregateStatements(from, report, world, m, it->second));
  it->second.manifests[from] = report.contribution_manifest();
  it->second.residuals[from] = {m.residual_in, m.residual_out};
  return Status::Ok();
}

Status VerificationService::CheckChainEnds(const net::PublicKey& from, const v1::RoundReport& report,
                                           const verifier::RoundCommitment& commitment,
                                           const std::string& start_theta, RoundState& rs) {
  if (!report.has_chain_ends()) {
    return FailedPrecondition("round report without the ends of its committed steps (the job verifies)");
  }
  auto ends = verifier::CheckChainEnds(commitment, report.chain_ends());
  if (!ends.ok()) return FailedPrecondition("round report's " + ends.status().message());
  if (!start_theta.empty() && DigestToBytes(ends->start.parameters) != start_theta) {
    return FailedPrecondition("its steps do not start from the θ its round starts from (its first leaf names θ " +
                              ShortHex(ends->start.parameters) + ")");
  }
  // AdamW moments are part of the state a replay starts from: moments chosen at a round's start
  // would make any first step replay correctly. Only fresh ones or those the peer's own
  // committed steps left are accepted.
  if (!ContinuesChain(optimizer_links_, from, ends->start.optimizer, verifier::FreshOptimizerDigest())) {
    return FailedPrecondition("its optimiser state at step 0 is neither fresh nor the one its last committed round "
                              "ended with (moments chosen at a round's start make any first step replay)");
  }
  rs.optimizer_ends[from] = {ends->start.optimizer, ends->end.optimizer};
  return Status::Ok();
}

Status VerificationService::CheckAggregateStatements(const net::PublicKey& from, const v1::RoundReport& report,
                                                     uint32_t world, const verifier::ContributionManifest& m,
                                                     RoundState& rs) {
  if (report.rank() >= world) return FailedPrecondition("round report from rank " + std::to_string(report.rank()));
  // Every non-empty shard has an owner and a statement; a shard is empty only when the tensor
  // has fewer elements than the group has members.
  const uint64_t shards = std::min<uint64_t>(world, m.numel);
  if (static_cast<uint64_t>(report.aggregate_statements_size()) != shards) {
    return FailedPrecondition("round report with " + std::to_string(report.aggregate_statements_size()) +
                              " aggregate statements for " + std::to_string(shards) + " shards");
  }
  std::vector<std::pair<verifier::SignedAggregate, const std::string*>> statements;  // with its bytes
  std::set<uint64_t> seen;
  std::optional<std::pair<Digest, Digest>> own_residuals;
  for (const std::string& bytes : report.aggregate_statements()) {
    auto s = verifier::DecodeAggregateStatement(bytes);
    if (!s.ok()) return s.status().WithContext("round report with a malformed aggregate statement");
    TRIB_RETURN_IF_ERROR(verifier::VerifyAggregate(*s).WithContext("round report's aggregate statement"));
    const verifier::AggregateStatement& b = s->body;
    if (b.job_id != job_id_ || b.round != report.round() || b.attempt != report.attempt() || b.world != world ||
        b.numel != m.numel || !seen.insert(b.shard).second) {
      return FailedPrecondition("an aggregate statement in the round report is not for this job, round, attempt "
                                "and group, or names a shard twice");
    }
    // The member checked this before decoding the aggregate (CheckAggregateAttestation): an
    // honest one never reports a statement that misnames what it signed.
    if (b.contributions[report.rank()] != m.shard_digests[b.shard]) {
      return FailedPrecondition("it reports the aggregate statement of shard " + std::to_string(b.shard) +
                                ", which does not name the contribution its own manifest states");
    }
    if ((b.shard == report.rank()) != (b.owner == from)) {
      return FailedPrecondition("the statement of its own shard " + std::to_string(report.rank()) +
                                " is not its own, or it states another shard's aggregate");
    }
    if (b.owner == from) own_residuals = std::make_pair(b.residual_in, b.residual_out);
    statements.emplace_back(std::move(s).value(), &bytes);
  }
  if (report.rank() < shards && !own_residuals) {
    return FailedPrecondition("round report without the statement of its own shard's aggregate");
  }
  if (own_residuals && !ContinuesChain(aggregate_links_, from, own_residuals->first)) {
    return FailedPrecondition("its residual as shard owner is not the one its last committed aggregate left "
                              "(its statement states " + ShortHex(own_residuals->first) + ")");
  }
  if (own_residuals) rs.aggregate_residuals[from] = *own_residuals;
  for (const auto& [s, bytes] : statements) {
    auto [first, inserted] = rs.aggregate_statements.emplace(std::make_pair(s.body.owner, s.body.attempt), *bytes);
    if (inserted || first->second == *bytes) continue;
    auto earlier = verifier::DecodeAggregateStatement(first->second);
    if (earlier.ok() && verifier::CheckAggregateEquivocation(*earlier, s).ok() && !banned_.count(s.body.owner)) {
      Ban(s.body.owner, "round " + std::to_string(s.body.round) + " attempt " + std::to_string(s.body.attempt) +
                            ": signed two different aggregates of shard " + std::to_string(s.body.shard) +
                            " (equivocation, shown by " + net::ShortKey(from) + "'s report)");
    }
  }
  return Status::Ok();
}

Status VerificationService::CheckBadPayload(const verifier::BadContributionPayload& proof) const {
  // Verified before the size limit below (CheckBadPayloadProof verifies it again): a forged
  // manifest must ban the reporter, not pass as "too large to judge".
  TRIB_RETURN_IF_ERROR(verifier::VerifyManifest(proof.manifest));
  const verifier::ContributionManifest& m = proof.manifest.body;
  const uint64_t world = m.shard_digests.size();
  if (proof.shard >= world) return Corruption("the proof names shard " + std::to_string(proof.shard) + " beyond the manifest");
  // The sender's own signed tensor size and world fix the shard's size; an owner forwards a
  // payload only under a manifest stating its own tensor's size (verifier::CheckAttestation).
  const auto w = static_cast<uint32_t>(world), s = static_cast<uint32_t>(proof.shard);
  const uint64_t size = collectives::ButterflyShardBegin(m.numel, w, s + 1) - collectives::ButterflyShardBegin(m.numel, w, s);
  if (size > kMaxCheckedShardNumel) {
    return FailedPrecondition("a shard of " + std::to_string(size) + " elements is too large to decode here");
  }
  return verifier::CheckBadPayloadProof(proof, runtime::JobCodec(spec_), size);
}

void VerificationService::OnContributionProof(const net::PublicKey& from, const v1::ContributionProof& message) {
  auto proof = verifier::DecodeContributionProof(message.mismatch());
  if (!proof.ok()) {
    Ban(from, "sent a baseless contribution proof: " + proof.status().message());
    return;
  }
  const auto* bad = std::get_if<verifier::BadContributionPayload>(&*proof);
  const verifier::ContributionManifest& m =
      bad ? bad->manifest.body : std::get<verifier::ContributionMismatch>(*proof).manifest.body;
  const uint64_t shard = bad ? bad->shard : std::get<verifier::ContributionMismatch>(*proof).shard;
  const std::string where = "round " + std::to_string(m.round) + " attempt " + std::to_string(m.attempt);
  Status valid;
  if (m.job_id != job_id_) {
    valid = Corruption("a proof about another job");
  } else if (m.round != message.round() || m.attempt != message.attempt()) {
    valid = Corruption("the proof is about " + where + ", its message names round " + std::to_string(message.round()) +
                       " attempt " + std::to_string(message.attempt()));
  } else if (!latest_start_ || std::make_pair(m.round, m.attempt) > *latest_start_) {
    // No member can have received it; the coordinator may also have restarted since. Nobody is
    // banned on it.
    spdlog::warn("job {}: peer {} sent a contribution proof about {}, which this coordinator has not started; ignored",
                 job_id_, net::ShortKey(from), where);
    return;
  } else {
    valid = bad ? CheckBadPayload(*bad) : verifier::CheckMismatchProof(std::get<verifier::ContributionMismatch>(*proof));
  }
  if (!valid.ok() && valid.code() != StatusCode::kCorruption) {  // this coordinator cannot judge it
    spdlog::error("job {}: cannot check the contribution proof from {}: {}", job_id_, net::ShortKey(from), valid.ToString());
    return;
  }
  if (!valid.ok()) {
    Ban(from, "sent a baseless contribution proof: " + valid.message());
    return;
  }
  const std::string what = bad ? "a non-finite/undecodable contribution, proven by its signed payload"
                               : "a contribution that contradicts its signed manifest";
  Ban(m.peer, where + ": sent shard " + std::to_string(shard) + " " + what + " (proof from " + net::ShortKey(from) + ")");
}

std::vector<ResidualLink> VerificationService::CommitResidualLinks(uint64_t round,
                                                                  const std::vector<net::PublicKey>& members) {
  std::vector<ResidualLink> links;
  auto it = rounds_.find(round);
  if (it == rounds_.end()) return links;
  using Links = std::map<net::PublicKey, std::pair<Digest, Digest>>;
  auto commit = [&](const Links& reported, Links& chain, std::string_view suffix) {
    for (const net::PublicKey& key : members) {
      auto r = reported.find(key);
      if (r == reported.end()) continue;
      chain[key] = r->second;
      links.push_back({net::KeyToHex(key) + std::string(suffix), DigestToBytes(r->second.first),
                       DigestToBytes(r->second.second)});
    }
  };
  commit(it->second.residuals, residual_links_, "");
  commit(it->second.aggregate_residuals, aggregate_links_, kAggregateLinkSuffix);
  commit(it->second.optimizer_ends, optimizer_links_, kOptimizerLinkSuffix);
  return links;
}

void VerificationService::OnRoundCommitted(uint64_t round, const std::vector<Member>& members, uint64_t now_ms) {
  auto it = rounds_.find(round);
  if (it == rounds_.end()) return;
  RoundState& rs = it->second;
  rs.members = members;
  rs.book->CloseAt(now_ms);
  auto seed = rs.book->Seal(rs.secret, now_ms);
  if (!seed.ok()) {
    spdlog::error("job {} round {}: cannot derive challenges: {}", job_id_, round, seed.status().ToString());
    return;
  }
  std::map<net::PublicKey, verifier::SignedCommitment> by_key;
  for (const auto& c : rs.book->admitted()) by_key[c.body.peer] = c;
  std::vector<verifier::Participant> participants;
  std::map<net::PublicKey, uint32_t> shard_of;
  for (const Member& m : members) {
    auto c = by_key.find(m.key);
    if (c == by_key.end()) continue;
    (void)ledger_.RecordCommitment(c->second);
    participants.push_back({m.key, c->second.body.leaf_count, c->second.body.determinism_class});
    rs.classes[m.key] = c->second.body.determinism_class;
    shard_of[m.key] = m.shard;
  }
  Persist();
  verifier::ChallengeParams params;
  params.samples_per_peer = spec_.verify_samples();
  params.calibrations = &calibrations_;
  params.verifiers_per_step = std::max<uint32_t>(1, spec_.verifiers_per_step());
  params.verifiers_per_step = std::min<uint32_t>(params.verifiers_per_step,
                                                 participants.empty() ? 1 : participants.size() - 1);
  if (participants.size() < 2) {
    spdlog::warn("job {} round {}: fewer than two committed members, nothing to verify", job_id_, round);
    return;
  }
  auto challenges = verifier::SampleChallenges(*seed, participants, params);
  if (!challenges.ok()) {
    spdlog::error("job {} round {}: {}", job_id_, round, challenges.status().ToString());
    return;
  }
  for (const verifier::Challenge& ch : *challenges) {
    const uint64_t id = next_challenge_++;
    Pending p;
    p.round = round;
    p.step = ch.step;
    p.prover = ch.prover;
    p.shard = shard_of[ch.prover];
    p.commitment = by_key.at(ch.prover);
    p.verifiers = ch.verifiers;
    // A verifier of a calibrated pair judges the prover's post-step state, so it is opened too.
    p.state_after = calibrations_.CoversProver(p.commitment.body.determinism_class);
    p.deadline_ms = now_ms + TimeoutMs();
    SendOpenRequest(id, pending_.emplace(id, std::move(p)).first->second);
  }
  spdlog::info("job {} round {}: {} challenges drawn (q = {} per peer, {} verifier(s) each)", job_id_, round,
               challenges->size(), params.samples_per_peer, params.verifiers_per_step);
  if (BindsContributions()) {
    StartDeltaAudits(round, *seed, by_key, shard_of, params.verifiers_per_step, now_ms);
    StartAggregateAudits(round, by_key, now_ms);
  }
}

size_t VerificationService::AuditAggregatesBeforeCommit(uint64_t round, const std::vector<Member>& members,
                                                        uint64_t now_ms) {
  auto it = rounds_.find(round);
  if (it == rounds_.end() || !BindsContributions()) return 0;
  it->second.members = members;
  std::map<net::PublicKey, verifier::SignedCommitment> by_key;
  for (const auto& c : it->second.book->admitted()) by_key[c.body.peer] = c;
  return StartAggregateAudits(round, by_key, now_ms);
}

bool VerificationService::AggregateAuditsOpen(uint64_t round) const {
  for (const auto& [id, p] : pending_) {
    if (p.round == round && !p.aggregate_statement.empty() && p.stage != Stage::kDone) return true;
  }
  return false;
}

size_t VerificationService::StartAggregateAudits(uint64_t round,
                                                 const std::map<net::PublicKey, verifier::SignedCommitment>& by_key,
                                                 uint64_t now_ms) {
  RoundState& rs = rounds_.at(round);
  if (runtime::JobCodec(spec_).starts_with("powersgd")) {
    spdlog::info("job {} round {}: PowerSGD's warm start is not committed, so owners' aggregates are not audited",
                 job_id_, round);
    return 0;
  }
  size_t audits = 0;
  for (const Member& m : rs.members) {
    auto manifest = rs.manifests.find(m.key);
    auto c = by_key.find(m.key);
    if (manifest == rs.manifests.end() || c == by_key.end() || banned_.count(m.key)) continue;
    auto decoded = verifier::DecodeManifest(manifest->second);
    if (!decoded.ok()) continue;
    auto statement = rs.aggregate_statements.find({m.key, decoded->body.attempt});
    if (statement == rs.aggregate_statements.end()) continue;  // an empty shard
    if (!rs.audited_aggregates.insert(statement->first).second) continue;
    Pending p;
    p.round = round;
    p.step = c->second.body.leaf_count - 1;
    p.prover = m.key;
    p.shard = m.shard;
    p.commitment = c->second;
    p.aggregate_statement = statement->second;
    p.deadline_ms = now_ms + TimeoutMs();
    const uint64_t id = next_challenge_++;
    SendOpenRequest(id, pending_.emplace(id, std::move(p)).first->second);
    ++audits;
  }
  if (audits > 0) spdlog::info("job {} round {}: {} aggregate audits", job_id_, round, audits);
  return audits;
}

void VerificationService::AuditAggregate(uint64_t id, Pending& p, const v1::Opening& o) {
  const net::PublicKey self = coordinator_->public_key();
  auto statement = verifier::DecodeAggregateStatement(p.aggregate_statement);
  if (!statement.ok()) {  // admitted by CheckReport, so this cannot happen
    spdlog::error("job {}: cannot decode an admitted aggregate statement: {}", job_id_, statement.status().ToString());
    p.stage = Stage::kDone;
    return;
  }
  const verifier::AggregateStatement& b = statement->body;
  if (!o.aggregate()) return Convict(id, p, self, "opened something else than its aggregate");
  if (static_cast<uint64_t>(o.contributions_size()) != b.world) {
    return Convict(id, p, self, "opened " + std::to_string(o.contributions_size()) + " contributions to its shard, not " +
                                    std::to_string(b.world));
  }
  std::vector<std::string> contributions(o.contributions().begin(), o.contributions().end());
  for (uint64_t r = 0; r < b.world; ++r) {
    if (Sha256Of(contributions[r]) != b.contributions[r]) {
      return Convict(id, p, self, "opened a contribution from rank " + std::to_string(r) +
                                      " that its aggregate statement does not name");
    }
  }
  const auto world = static_cast<uint32_t>(b.world), shard = static_cast<uint32_t>(b.shard);
  const uint64_t size = collectives::ButterflyShardBegin(b.numel, world, shard + 1) -
                        collectives::ButterflyShardBegin(b.numel, world, shard);
  if (size > kMaxCheckedShardNumel) {
    spdlog::warn("job {} round {}: shard {} of {} elements is too large to audit here", job_id_, p.round, shard, size);
    p.stage = Stage::kDone;
    return;
  }
  auto residual = verifier::DecodeResidual(o.aggregate_residual(), size);  // the shard's elements
  if (!residual.ok()) return Convict(id, p, self, "opened a malformed residual: " + residual.status().message());
  if (verifier::ResidualDigest(*residual) != b.residual_in) {
    return Convict(id, p, self, "opened another residual than the one its aggregate statement states");
  }
  auto aggregator = runtime::JobAggregator(spec_);
  if (!aggregator.ok()) {
    spdlog::error("job {}: cannot audit aggregates: {}", job_id_, aggregator.status().ToString());
    p.stage = Stage::kDone;
    return;
  }
  const bool owes = b.residual_in != Digest{};
  auto reproduced = collectives::ReproduceAggregate(runtime::JobCodec(spec_), world, shard,
                                                    b.numel, contributions,
                                                    owes ? std::span<const float>(*residual) : std::span<const float>(),
                                                    *aggregator, /*average=*/true);
  if (!reproduced.ok()) {
    // Each contribution is one its sender signed and the owner accepted; an honest owner's call
    // fails on one that does not decode (and proves it), so it never states one.
    return Convict(id, p, self, "its stated contributions do not aggregate: " + reproduced.status().message());
  }
  if (reproduced->payload != b.aggregate) {
    return Convict(id, p, self, "its aggregate of shard " + std::to_string(shard) +
                                    " is not what the contributions it received and its residual give");
  }
  if (verifier::ResidualDigest(reproduced->residual_left) != b.residual_out) {
    return Convict(id, p, self, "the residual its aggregate leaves is not the one its statement states");
  }
  p.stage = Stage::kDone;
  spdlog::info("job {} round {}: {}'s aggregate of shard {} reproduces from its {} contributions", job_id_, p.round,
               net::ShortKey(p.prover), shard, b.world);
}

void VerificationService::SendOpenRequest(uint64_t id, const Pending& p, bool inline_bulk) {
  v1::Envelope e = net::MakeEnvelope(job_id_);
  e.mutable_open_request()->set_inline_bulk(inline_bulk);
  e.mutable_open_request()->set_challenge_id(id);
  e.mutable_open_request()->set_round(p.round);
  e.mutable_open_request()->set_step(p.step);
  e.mutable_open_request()->set_end_state(!p.manifest.empty());
  e.mutable_open_request()->set_aggregate(!p.aggregate_statement.empty());
  e.mutable_open_request()->set_state_after(p.state_after);
  if (!send_(p.prover, std::move(e))) {
    spdlog::warn("job {} round {}: prover {} is gone before its opening", job_id_, p.round, net::ShortKey(p.prover));
  }
}

// The Δ a member sent is bound to its manifest on the wire (the shard owners check it) and to
// its commitment by H(Δ); the audit closes the loop: θ_start − θ_end of the committed steps must
// be that Δ. Every member is audited every round: it costs one end-state opening and no replay.
void VerificationService::StartDeltaAudits(uint64_t round, const Digest& seed,
                                           const std::map<net::PublicKey, verifier::SignedCommitment>& by_key,
                                           const std::map<net::PublicKey, uint32_t>& shard_of, uint32_t verifiers,
                                           uint64_t now_ms) {
  RoundState& rs = rounds_.at(round);
  // The audit subtracts the verifier's own θ_start, so verifiers must have started the round
  // from the prover's θ (in grouped jobs, members of one round start from different states).
  std::map<net::PublicKey, std::string> start_of;
  for (const Member& m : rs.members) start_of[m.key] = m.round_start_theta;
  size_t audits = 0, unauditable = 0;
  for (const auto& [prover, manifest] : rs.manifests) {
    auto c = by_key.find(prover);
    auto shard = shard_of.find(prover);
    if (c == by_key.end() || shard == shard_of.end() || banned_.count(prover)) continue;
    // Verifiers: the other committed members from the same θ, in an order drawn from the seed.
    std::vector<std::pair<Digest, net::PublicKey>> order;
    for (const auto& [key, other] : by_key) {
      if (key == prover || !shard_of.count(key) || banned_.count(key) || start_of[key] != start_of[prover]) continue;
      order.emplace_back(Sha256Of(DigestToBytes(seed) + "delta-audit" + net::KeyToBytes(prover) + net::KeyToBytes(key)),
                         key);
    }
    if (order.empty()) {
      ++unauditable;
      continue;
    }
    std::sort(order.begin(), order.end());
    Pending p;
    p.round = round;
    p.step = c->second.body.leaf_count - 1;
    p.prover = prover;
    p.shard = shard->second;
    p.commitment = c->second;
    p.manifest = manifest;
    for (size_t i = 0; i < order.size() && i < verifiers; ++i) p.verifiers.push_back(order[i].second);
    p.deadline_ms = now_ms + TimeoutMs();
    const uint64_t id = next_challenge_++;
    SendOpenRequest(id, pending_.emplace(id, std::move(p)).first->second);
    ++audits;
  }
  spdlog::info("job {} round {}: {} Δ audits{}", job_id_, round, audits,
               unauditable ? ", " + std::to_string(unauditable) + " member(s) with no other member from the same θ" : "");
}

void VerificationService::Convict(uint64_t id, Pending& p, const net::PublicKey& accuser, const std::string& why) {
  verifier::RefereeVerdict v;
  v.ruling = verifier::Ruling::kProverGuilty;
  v.prover = p.prover;
  v.accuser = accuser;
  v.guilty = p.prover;
  v.round = p.round;
  v.step = p.step;
  v.reason = why;
  Status st = ledger_.RecordRuling(v);
  if (!st.ok()) spdlog::error("ledger: {}", st.ToString());
  Persist();
  p.stage = Stage::kDone;
  spdlog::error("job {} round {} step {}: prover {} convicted (challenge {}): {}", job_id_, p.round, p.step,
                net::ShortKey(p.prover), id, why);
  Ban(p.prover, "round " + std::to_string(p.round) + " step " + std::to_string(p.step) + ": " + why);
  // On a bitwise class an honest replay of a faked step cannot match: a verifier that vouched
  // for it colludes with the prover (or is broken) and is banned too. That holds only when a
  // referee convicted bit for bit and the voucher judged bit for bit as well: a lie can sit
  // inside one pair's calibrated tolerance and outside another's.
  for (const auto& [verifier, result] : p.results) {
    const bool referee = std::find(p.referees.begin(), p.referees.end(), verifier) != p.referees.end();
    if (result.outcome() == v1::VERIFY_MATCH && p.bitwise_conviction && !referee &&
        JudgeOf(p, verifier) == verifier::JudgeKind::kBitwise) {
      Ban(verifier, "vouched for round " + std::to_string(p.round) + " step " + std::to_string(p.step) +
                        " of " + net::ShortKey(p.prover) + ", which the referee convicted");
    }
  }
}

void VerificationService::SendVerify(uint64_t id, Pending& p, const net::PublicKey& to, bool referee,
                                     uint64_t now_ms) {
  v1::Envelope e = net::MakeEnvelope(job_id_);
  v1::VerifyRequest* q = e.mutable_verify_request();
  q->set_challenge_id(id);
  q->set_round(p.round);
  q->set_prover_key(net::KeyToBytes(p.prover));
  q->set_prover_shard(p.shard);
  q->set_commitment(verifier::EncodeCommitment(p.commitment));
  *q->mutable_opening() = p.inline_opening ? *p.inline_opening : *p.opening;
  if (verifier::HasDetachedBulk(q->opening()) && bulk_source_) {
    if (auto source = bulk_source_(p.prover)) *q->mutable_bulk_source() = *source;
  }
  auto rs = rounds_.find(p.round);
  if (rs != rounds_.end()) {
    q->set_round_start_theta(rs->second.round_start_theta);
    for (const Member& m : rs->second.members) {
      if (m.key == p.prover && !m.round_start_theta.empty()) q->set_round_start_theta(m.round_start_theta);
    }
  }
  q->set_referee(referee);
  if (!p.manifest.empty()) {
    q->set_delta_audit(true);
    q->set_manifest(p.manifest);
  }
  p.asked.insert(to);
  p.deadline_ms = now_ms + TimeoutMs();
  if (!send_(to, std::move(e))) spdlog::warn("job {}: verifier {} is gone", job_id_, net::ShortKey(to));
}

void VerificationService::OnOpening(const net::PublicKey& from, const v1::Opening& o, uint64_t now_ms) {
  auto it = pending_.find(o.challenge_id());
  if (o.not_held() && it != pending_.end() && it->second.prover == from && it->second.round == o.round() &&
      it->second.stage != Stage::kDone) {
    return OnNotHeld(it->first, it->second);
  }
  if (it != pending_.end() && it->second.prover == from && it->second.inline_deadline_ms &&
      !it->second.inline_opening && it->second.stage != Stage::kDone) {
    return OnInlineOpening(it->first, it->second, o, now_ms);
  }
  if (it == pending_.end() || it->second.prover != from || it->second.stage != Stage::kOpening) {
    spdlog::warn("job {}: unsolicited opening from {}", job_id_, net::ShortKey(from));
    return;
  }
  Pending& p = it->second;
  if (!p.aggregate_statement.empty()) return AuditAggregate(it->first, p, o);
  if (o.end_state() != !p.manifest.empty()) {
    return Convict(it->first, p, coordinator_->public_key(), "opened another state than the one asked for");
  }
  auto checked = CheckOpening(p.commitment, p.step, o);
  if (!checked.ok()) {
    return Convict(it->first, p, coordinator_->public_key(), "bad opening: " + checked.status().message());
  }
  // DiLoCo steps chain; a DDP step starts from the group's averaged state (its verifier checks).
  if (spec_.mode() != v1::MODE_DDP && checked->agreed &&
      checked->agreed->leaf.update != checked->prover->leaf.state_before) {
    return Convict(it->first, p, coordinator_->public_key(),
                   "chain break: step " + std::to_string(p.step) + " does not start where its predecessor ended");
  }
  if (verifier::HasDetachedBulk(o) && o.bulk_bytes() > kMaxBulkBytes) {
    return Convict(it->first, p, coordinator_->public_key(),
                   "announced an opening of " + std::to_string(o.bulk_bytes()) + " bytes");
  }
  if (p.state_after && o.state_after().empty() && !verifier::HasDetachedBulk(o)) {
    return Convict(it->first, p, coordinator_->public_key(), "withheld the state after a challenged step");
  }
  p.opening = o;
  p.stage = Stage::kVerifying;
  for (const net::PublicKey& v : p.verifiers) SendVerify(it->first, p, v, false, now_ms);
}

void VerificationService::OnNotHeld(uint64_t id, Pending& p) {
  std::set<uint64_t>& lost = lost_rounds_[p.prover];
  if (!lost.count(p.round)) {
    uint64_t rounds = 0;
    for (const auto& rec : ledger_.Records()) rounds += rec.peer == p.prover;
    const uint64_t allowed = 1 + rounds / kRoundsPerForgivenLoss;
    if (lost.size() + 1 > allowed) {
      return Convict(id, p, coordinator_->public_key(),
                     "withheld the opening of a challenged step: it lost the openings of " +
                         std::to_string(lost.size() + 1) + " rounds of the " + std::to_string(rounds) +
                         " it committed, more than restarts explain");
    }
    lost.insert(p.round);
    Status st = store_->RecordLostRound(job_id_, net::KeyToHex(p.prover), p.round);
    if (!st.ok()) spdlog::error("job {}: cannot record a lost round: {}", job_id_, st.ToString());
    spdlog::warn("job {} round {}: {} no longer holds the round (it restarted); its work there is not credited "
                 "({} of {} forgiven losses)",
                 job_id_, p.round, net::ShortKey(p.prover), lost.size(), allowed);
  }
  p.stage = Stage::kDone;
}

void VerificationService::OnBulkUnavailable(uint64_t id, Pending& p, const net::PublicKey& verifier,
                                            uint64_t now_ms) {
  if (p.inline_opening) return SendVerify(id, p, verifier, p.stage == Stage::kRefereeing, now_ms);
  p.awaiting_inline.insert(verifier);
  // The verifiers wait for the opening too: their deadline starts when it comes.
  p.deadline_ms = std::max(p.deadline_ms, now_ms + 2 * TimeoutMs());
  if (p.inline_deadline_ms) return;
  spdlog::info("job {} round {} step {}: {} cannot fetch {}'s opening from it; asking for it through the coordinator",
               job_id_, p.round, p.step, net::ShortKey(verifier), net::ShortKey(p.prover));
  p.inline_deadline_ms = now_ms + TimeoutMs();
  SendOpenRequest(id, p, /*inline_bulk=*/true);
}

void VerificationService::OnInlineOpening(uint64_t id, Pending& p, const v1::Opening& o, uint64_t now_ms) {
  const net::PublicKey self = coordinator_->public_key();
  const v1::Opening& announced = *p.opening;
  // The same opening, whole: every field it signed before, and a bulk with the digest it named.
  if (verifier::HasDetachedBulk(o) || o.round() != announced.round() || o.step() != announced.step() ||
      o.leaf() != announced.leaf() || o.proof() != announced.proof() ||
      o.previous_leaf() != announced.previous_leaf() || o.previous_proof() != announced.previous_proof() ||
      o.end_state() != announced.end_state()) {
    return Convict(id, p, self, "sent another opening through the coordinator than the one it announced");
  }
  if (DigestToBytes(Sha256Of(verifier::EncodeOpeningBulk(o))) != announced.bulk_digest()) {
    return Convict(id, p, self, "the opening it sent through the coordinator is not the bulk it announced");
  }
  p.inline_opening = o;
  const bool referee = p.stage == Stage::kRefereeing;
  for (const net::PublicKey& v : std::exchange(p.awaiting_inline, {})) SendVerify(id, p, v, referee, now_ms);
}

std::optional<net::PublicKey> VerificationService::PickReferee(const Pending& p) const {
  auto rs = rounds_.find(p.round);
  if (rs == rounds_.end()) return std::nullopt;
  // Deterministic in the challenge: the first member (by key hash with the step) not involved.
  // A Δ audit's referee, like its verifiers, must have started the round from the prover's θ.
  std::string prover_start;
  for (const Member& m : rs->second.members) {
    if (m.key == p.prover) prover_start = m.round_start_theta;
  }
  std::vector<std::tuple<int, Digest, net::PublicKey>> order;
  for (const Member& m : rs->second.members) {
    if (m.key == p.prover || p.asked.count(m.key) || banned_.count(m.key)) continue;
    if (!p.manifest.empty() && m.round_start_theta != prover_start) continue;
    // Bitwise judges first (their ruling is exact), then calibrated ones; one that cannot judge
    // the prover's class at all only as a last resort.
    const verifier::JudgeKind kind = JudgeOf(p, m.key);
    const int tier = kind == verifier::JudgeKind::kBitwise ? 0 : kind == verifier::JudgeKind::kTolerance ? 1 : 2;
    order.emplace_back(tier, Sha256Of(net::KeyToBytes(m.key) + std::to_string(p.step)), m.key);
  }
  if (order.empty()) return std::nullopt;
  std::sort(order.begin(), order.end());
  return std::get<2>(order.front());
}

void VerificationService::OnVerifyResult(const net::PublicKey& from, const v1::VerifyResult& r, uint64_t now_ms) {
  auto it = pending_.find(r.challenge_id());
  if (it == pending_.end() || !it->second.asked.count(from) || it->second.results.count(from)) {
    spdlog::warn("job {}: unsolicited verify result from {}", job_id_, net::ShortKey(from));
    return;
  }
  Pending& p = it->second;
  if (r.opening_unavailable() && p.opening && verifier::HasDetachedBulk(*p.opening)) {
    return OnBulkUnavailable(it->first, p, from, now_ms);
  }
  p.results[from] = r;
  if (p.stage == Stage::kRefereeing) {
    for (const net::PublicKey& referee : p.referees) {
      if (!p.results.count(referee)) return;  // wait for the other referees
    }
    return Settle(it->first, p, now_ms);
  }
  if (p.stage != Stage::kVerifying) return;
  if (!p.manifest.empty()) {
    if (r.outcome() == v1::VERIFY_CANNOT_REPLAY) {
      spdlog::warn("job {} round {}: {} cannot audit {}'s Δ: {}", job_id_, p.round, net::ShortKey(from),
                   net::ShortKey(p.prover), r.reason());
    }
  } else if (r.outcome() == v1::VERIFY_MATCH || r.outcome() == v1::VERIFY_MISMATCH) {
    (void)ledger_.RecordReplay(p.prover, p.round, p.step, from,
                               r.outcome() == v1::VERIFY_MATCH ? verifier::ReplayOutcome::kMatch
                                                               : verifier::ReplayOutcome::kMismatch);
    Persist();
  } else {
    spdlog::warn("job {} round {} step {}: {} cannot replay: {}", job_id_, p.round, p.step, net::ShortKey(from),
                 r.reason());
  }
  for (const net::PublicKey& v : p.verifiers) {
    if (!p.results.count(v)) return;  // wait for the others
  }
  Settle(it->first, p, now_ms);
}

// Every verifier answered (or every referee did): decide.
void VerificationService::Settle(uint64_t id, Pending& p, uint64_t now_ms) {
  std::vector<net::PublicKey> accusers;
  for (const net::PublicKey& v : p.verifiers) {
    auto r = p.results.find(v);
    if (r != p.results.end() && r->second.outcome() == v1::VERIFY_MISMATCH) accusers.push_back(v);
  }
  if (accusers.empty()) {
    p.stage = Stage::kDone;
    return;
  }
  if (p.stage == Stage::kVerifying) {
    p.stage = Stage::kRefereeing;
    spdlog::warn("job {} round {} step {}: {} reports a mismatch ({})", job_id_, p.round, p.step,
                 net::ShortKey(accusers.front()), p.results.at(accusers.front()).reason());
    // Two referees, so that one colluder cannot decide alone; a third breaks a tie.
    const bool asked = AskReferee(id, p, now_ms);
    if (asked) AskReferee(id, p, now_ms);
    if (!asked) {
      spdlog::error("job {} round {} step {}: disputed, and no member is left to referee", job_id_, p.round, p.step);
      p.stage = Stage::kDone;
    }
    return;
  }
  // Every referee asked so far answered (or timed out): each one's ruling, then the majority.
  std::vector<std::pair<net::PublicKey, RefereeRuling>> guilty, innocent;
  for (const net::PublicKey& r : p.referees) {
    RefereeRuling ruling = RuleOn(p, accusers.front(), r, p.results[r]);
    if (ruling.ruling == verifier::Ruling::kProverGuilty) {
      guilty.emplace_back(r, std::move(ruling));
    } else if (ruling.ruling == verifier::Ruling::kAccuserGuilty) {
      innocent.emplace_back(r, std::move(ruling));
    } else {
      spdlog::warn("job {} round {} step {}: referee {} could not rule: {}", job_id_, p.round, p.step,
                   net::ShortKey(r), ruling.reason);
    }
  }
  if (guilty.size() == innocent.size()) {  // a tie, or nobody could rule
    if (AskReferee(id, p, now_ms)) return;
    spdlog::error("job {} round {} step {}: the referees are split {}–{} and no member is left; it stays disputed",
                  job_id_, p.round, p.step, guilty.size(), innocent.size());
    p.stage = Stage::kDone;
    return;
  }
  p.stage = Stage::kDone;
  const bool convict = guilty.size() > innocent.size();
  auto bitwise = [&](const net::PublicKey& judge) { return JudgeOf(p, judge) == verifier::JudgeKind::kBitwise; };
  auto any_bitwise = [&](const auto& rulings) {
    return std::any_of(rulings.begin(), rulings.end(), [&](const auto& r) { return bitwise(r.first); });
  };
  auto all_bitwise = [&](const auto& rulings) {
    return std::all_of(rulings.begin(), rulings.end(), [&](const auto& r) { return bitwise(r.first); });
  };
  // On a bitwise class a referee's recomputation is a pure function of the evidence: one that
  // contradicts the majority lied (or is broken), like a verifier that vouched for a fake. Where
  // a referee judged within a calibrated tolerance, an honest minority is possible (a small lie
  // inside one pair's limits and outside another's), so nobody is banned for it.
  if (all_bitwise(guilty) && all_bitwise(innocent)) {
    for (const auto& [referee, ruling] : convict ? innocent : guilty) {
      Ban(referee, "as referee of round " + std::to_string(p.round) + " step " + std::to_string(p.step) + " of " +
                       net::ShortKey(p.prover) + ", ruled against the majority of referees");
    }
  }
  if (convict) {
    p.bitwise_conviction = any_bitwise(guilty);
    return Convict(id, p, accusers.front(), guilty.front().second.reason);
  }
  // An accuser is false when a referee reproduced the prover's leaf bit for bit, or when its own
  // tolerance judgement was overruled. A bitwise accuser acquitted only by tolerance referees
  // may have seen a real lie that hides inside their limits: that dispute stays unresolved, and
  // the ledger charges nobody with it.
  const bool exact_acquittal = any_bitwise(innocent);
  if (innocent.front().second.verdict && (exact_acquittal || !bitwise(accusers.front()))) {
    Status st = ledger_.RecordRuling(*innocent.front().second.verdict);
    if (!st.ok()) spdlog::error("ledger: {}", st.ToString());
    Persist();
  }
  for (const net::PublicKey& a : accusers) {
    if (!exact_acquittal && bitwise(a)) {
      spdlog::warn("job {} round {} step {}: {}'s bitwise accusation against {} lies inside the referees' calibrated "
                   "tolerance; neither is penalised",
                   job_id_, p.round, p.step, net::ShortKey(a), net::ShortKey(p.prover));
      continue;
    }
    Ban(a, "false accusation against " + net::ShortKey(p.prover) + " in round " + std::to_string(p.round) +
               (p.manifest.empty() ? " step " + std::to_string(p.step) : std::string(" (its Δ)")));
  }
}

verifier::JudgeKind VerificationService::JudgeOf(const Pending& p, const net::PublicKey& judge) const {
  if (!p.manifest.empty() || !p.aggregate_statement.empty()) return verifier::JudgeKind::kBitwise;
  auto rs = rounds_.find(p.round);
  if (rs == rounds_.end()) return verifier::JudgeKind::kNone;
  auto c = rs->second.classes.find(judge);
  if (c == rs->second.classes.end()) return verifier::JudgeKind::kNone;
  return calibrations_.Judge(p.commitment.body.determinism_class, c->second);
}

bool VerificationService::AskReferee(uint64_t id, Pending& p, uint64_t now_ms) {
  auto referee = PickReferee(p);
  if (!referee) return false;
  p.referees.push_back(*referee);
  spdlog::warn("job {} round {} step {}: referee {}", job_id_, p.round, p.step, net::ShortKey(*referee));
  SendVerify(id, p, *referee, true, now_ms);
  return true;
}

// One referee's ruling on the evidence. A step replay: verifier::Referee on the prover's opened
// leaf (and its predecessor, against the signed root) and the referee's recomputed leaf fields.
// A Δ audit is a pure function of signed data and the public θ_start: the referee's outcome is
// its ruling.
VerificationService::RefereeRuling VerificationService::RuleOn(const Pending& p, const net::PublicKey& accuser,
                                                               const net::PublicKey& referee,
                                                               const v1::VerifyResult& rr) const {
  RefereeRuling out;
  if (!p.manifest.empty()) {
    out.reason = rr.reason();
    if (rr.outcome() == v1::VERIFY_MISMATCH) {
      out.ruling = verifier::Ruling::kProverGuilty;
    } else if (rr.outcome() == v1::VERIFY_MATCH) {
      out.ruling = verifier::Ruling::kAccuserGuilty;  // no ledger verdict: its rulings are about steps
    }
    return out;
  }
  auto checked = CheckOpening(p.commitment, p.step, *p.opening);
  if (!checked.ok()) {
    out.ruling = verifier::Ruling::kProverGuilty;
    out.reason = checked.status().message();
    return out;
  }
  // The accuser's story: the leaf it recomputed, or (when it refused the opening before any
  // replay) "not this leaf", which the referee's replay settles either way.
  verifier::StepLeaf challenger = checked->prover->leaf;
  auto accuser_fields = ReplayedOf(p.results.at(accuser));
  if (accuser_fields.ok()) {
    challenger.state_before = accuser_fields->state_before;
    challenger.batch = accuser_fields->batch;
    challenger.update = accuser_fields->update;
    challenger.loss_bits = accuser_fields->loss_bits;
  } else {
    challenger.update = Digest{};
  }
  checked->challenger = challenger;
  verifier::StepReplayFn replay = [&](const verifier::StepLeaf&) -> Result<verifier::ReplayedStep> {
    if (rr.outcome() != v1::VERIFY_MATCH && rr.outcome() != v1::VERIFY_MISMATCH) {
      return Unavailable("the referee could not replay: " + rr.reason());
    }
    if (rr.state_before().empty()) {
      // The referee refused the opened state itself (it is not the committed one, or does not
      // train): the prover did not supply a usable pre-state.
      return NotFound("the prover's opened state is unusable: " + rr.reason());
    }
    return ReplayedOf(rr);
  };
  verifier::RefereeOptions options;
  options.chained_states = spec_.mode() != v1::MODE_DDP;
  // A referee of a calibrated pair recomputes different bits even for an honest step; the
  // coordinator (torch-free, without the post-step states) takes its judgement of the prover's
  // leaf within the calibrated limits. Anything else still compares bit for bit.
  if (JudgeOf(p, referee) == verifier::JudgeKind::kTolerance) {
    const verifier::StepLeaf prover_leaf = checked->prover->leaf;
    options.compare = [&rr, prover_leaf](const verifier::StepLeaf& claimed, const verifier::ReplayedStep& replayed) {
      verifier::ReplayDecision exact = verifier::CompareBitwise(claimed, replayed);
      if (exact.match() || verifier::EncodeLeaf(claimed) != verifier::EncodeLeaf(prover_leaf)) return exact;
      if (rr.outcome() == v1::VERIFY_MATCH) return verifier::ReplayDecision{verifier::ReplayOutcome::kMatch, ""};
      return verifier::ReplayDecision{verifier::ReplayOutcome::kMismatch, "outside the calibrated tolerance: " + rr.reason()};
    };
  }
  auto verdict = verifier::Referee(p.commitment, accuser, *checked, replay, options);
  if (!verdict.ok()) {
    out.reason = verdict.status().ToString();
    return out;
  }
  out.ruling = verdict->ruling;
  out.reason = verdict->reason;
  if (verdict->ruling == verifier::Ruling::kAccuserGuilty) out.verdict = *verdict;
  return out;
}

void VerificationService::Sweep(uint64_t now_ms) {
  for (auto& [id, p] : pending_) {
    if (p.stage != Stage::kDone && p.inline_deadline_ms && !p.inline_opening && now_ms >= p.inline_deadline_ms) {
      Convict(id, p, coordinator_->public_key(),
              "withheld the opening of a challenged step (served to its verifier neither directly nor through the "
              "coordinator)");
      continue;
    }
    if (p.stage == Stage::kDone || now_ms < p.deadline_ms) continue;
    if (p.stage == Stage::kOpening) {
      Convict(id, p, coordinator_->public_key(), "withheld the opening of a challenged step");
    } else if (p.stage == Stage::kVerifying) {
      spdlog::warn("job {} round {} step {}: a verifier did not answer in time", job_id_, p.round, p.step);
      for (const net::PublicKey& v : p.verifiers) {
        if (!p.results.count(v)) p.results[v].set_outcome(v1::VERIFY_CANNOT_REPLAY);
      }
      Settle(id, p, now_ms);
    } else if (p.stage == Stage::kRefereeing) {
      spdlog::warn("job {} round {} step {}: a referee did not answer in time", job_id_, p.round, p.step);
      for (const net::PublicKey& r : p.referees) {
        if (!p.results.count(r)) p.results[r].set_outcome(v1::VERIFY_CANNOT_REPLAY);
      }
      Settle(id, p, now_ms);
    }
  }
  std::erase_if(pending_, [](const auto& kv) { return kv.second.stage == Stage::kDone; });
}

void VerificationService::ExtendDeadlines(uint64_t ms) {
  for (auto& [id, p] : pending_) {
    if (p.stage != Stage::kDone) p.deadline_ms += ms;
    if (p.stage != Stage::kDone && p.inline_deadline_ms) p.inline_deadline_ms += ms;
  }
}

void VerificationService::OnMemberReconnected(const net::PublicKey& key, uint64_t now_ms) {
  for (auto& [id, p] : pending_) {
    if (p.prover != key || p.stage == Stage::kDone) continue;
    const bool whole = p.inline_deadline_ms && !p.inline_opening;
    if (p.stage != Stage::kOpening && !whole) continue;
    spdlog::info("job {} round {}: asking {} again for an opening it has not given", job_id_, p.round,
                 net::ShortKey(key));
    (whole ? p.inline_deadline_ms : p.deadline_ms) = now_ms + TimeoutMs();
    SendOpenRequest(id, p, whole);
  }
}

bool VerificationService::busy() const {
  for (const auto& [id, p] : pending_) {
    if (p.stage != Stage::kDone) return true;
  }
  return false;
}

void VerificationService::FillLedgerReply(v1::LedgerReply& reply, uint64_t now_ms) const {
  reply.set_coordinator_key(net::KeyToBytes(coordinator_->public_key()));
  for (const verifier::LedgerRecord& rec : ledger_.Records()) {
    auto receipt = ledger_.IssueReceipt(rec.peer, rec.round, *coordinator_, now_ms);
    if (receipt.ok()) reply.add_receipts(verifier::EncodeReceipt(*receipt));
  }
  for (const auto& [key, why] : banned_) {
    reply.add_banned(job_id_ + " " + net::KeyToHex(key) + " " + why);
  }
}

}  // namespace tributary::launcher
