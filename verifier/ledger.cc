#include "verifier/ledger.h"

#include <set>

#include "verifier/detail/encoding.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kReceiptLabel = "tributary.verifier.receipt.v1";
constexpr std::string_view kReceiptMagic = "TRIBRCPT1";
constexpr std::string_view kLedgerMagic = "TRIBLEDGER1";
constexpr size_t kMaxJobId = 256;
// Bounds for hostile ledger bytes (a round never has more checks than this).
constexpr uint64_t kMaxChecks = 1 << 20;

Result<RoundVerdict> VerdictFrom(uint64_t v) {
  if (v > static_cast<uint64_t>(RoundVerdict::kRejected)) return Corruption("unknown verdict");
  return static_cast<RoundVerdict>(v);
}

std::string ReceiptSignedBytes(const Receipt& body) {
  return std::string(kReceiptLabel) + body.Canonical();
}

std::string Describe(const net::PublicKey& peer, uint64_t round) {
  return "peer " + net::ShortKey(peer) + " round " + std::to_string(round);
}

}  // namespace

const char* RoundVerdictName(RoundVerdict verdict) {
  switch (verdict) {
    case RoundVerdict::kPending:
      return "pending";
    case RoundVerdict::kVerified:
      return "verified";
    case RoundVerdict::kDisputed:
      return "disputed";
    case RoundVerdict::kRejected:
      return "rejected";
  }
  return "?";
}

// ---- LedgerRecord -------------------------------------------------------------------------------

uint64_t LedgerRecord::steps_challenged() const {
  std::set<uint64_t> steps;
  for (const StepCheck& c : checks) steps.insert(c.step);
  return steps.size();
}

uint64_t LedgerRecord::steps_failed() const {
  std::set<uint64_t> steps;
  for (const StepCheck& c : checks) {
    if (c.resolution == StepCheck::Resolution::kConvicted) steps.insert(c.step);
  }
  return steps.size();
}

uint64_t LedgerRecord::steps_verified() const {
  std::set<uint64_t> good, bad;
  for (const StepCheck& c : checks) {
    const bool convicted = c.resolution == StepCheck::Resolution::kConvicted;
    const bool pending =
        c.outcome == ReplayOutcome::kMismatch && c.resolution == StepCheck::Resolution::kNone;
    if (convicted || pending) {
      bad.insert(c.step);
    } else {
      good.insert(c.step);
    }
  }
  uint64_t n = 0;
  for (uint64_t s : good) n += bad.count(s) ? 0 : 1;
  return n;
}

RoundVerdict LedgerRecord::verdict() const {
  if (equivocated || steps_failed() > 0) return RoundVerdict::kRejected;
  for (const StepCheck& c : checks) {
    if (c.outcome == ReplayOutcome::kMismatch && c.resolution == StepCheck::Resolution::kNone) {
      return RoundVerdict::kDisputed;
    }
  }
  return checks.empty() ? RoundVerdict::kPending : RoundVerdict::kVerified;
}

// ---- receipts -----------------------------------------------------------------------------------

std::string Receipt::Canonical() const {
  detail::Writer w;
  w.Raw(kReceiptMagic);
  w.Str(job_id);
  w.Fixed(peer);
  w.U64(round);
  w.Fixed(root);
  w.U64(steps_committed);
  w.U64(steps_challenged);
  w.U64(steps_verified);
  w.U64(steps_failed);
  w.U64(false_accusations);
  w.U64(static_cast<uint64_t>(verdict));
  w.Fixed(coordinator);
  w.U64(issued_at_ms);
  return std::move(w).bytes();
}

Status VerifyReceipt(const SignedReceipt& r, const net::PublicKey& coordinator_key) {
  if (r.body.coordinator != coordinator_key) {
    return Corruption("receipt names coordinator " + net::ShortKey(r.body.coordinator) +
                      ", expected " + net::ShortKey(coordinator_key));
  }
  if (!net::VerifySignature(coordinator_key, ReceiptSignedBytes(r.body), r.signature)) {
    return Corruption("receipt signature for " + Describe(r.body.peer, r.body.round) +
                      " does not verify");
  }
  return Status::Ok();
}

std::string EncodeReceipt(const SignedReceipt& r) {
  return r.body.Canonical() + net::SignatureToBytes(r.signature);
}

Result<SignedReceipt> DecodeReceipt(std::string_view bytes) {
  detail::Reader r(bytes, "receipt");
  TRIB_RETURN_IF_ERROR(r.Magic(kReceiptMagic));
  SignedReceipt s;
  Receipt& b = s.body;
  TRIB_ASSIGN_OR_RETURN(b.job_id, r.Str(kMaxJobId));
  TRIB_ASSIGN_OR_RETURN(b.peer, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(b.round, r.U64());
  TRIB_ASSIGN_OR_RETURN(b.root, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(b.steps_committed, r.U64());
  TRIB_ASSIGN_OR_RETURN(b.steps_challenged, r.U64());
  TRIB_ASSIGN_OR_RETURN(b.steps_verified, r.U64());
  TRIB_ASSIGN_OR_RETURN(b.steps_failed, r.U64());
  TRIB_ASSIGN_OR_RETURN(b.false_accusations, r.U64());
  TRIB_ASSIGN_OR_RETURN(uint64_t verdict, r.U64());
  TRIB_ASSIGN_OR_RETURN(b.verdict, VerdictFrom(verdict));
  TRIB_ASSIGN_OR_RETURN(b.coordinator, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(b.issued_at_ms, r.U64());
  TRIB_ASSIGN_OR_RETURN(s.signature, r.Fixed<64>());
  TRIB_RETURN_IF_ERROR(r.Done());
  return s;
}

// ---- Ledger -------------------------------------------------------------------------------------

Status Ledger::RecordCommitment(const SignedCommitment& c) {
  TRIB_RETURN_IF_ERROR(VerifyCommitment(c));
  const Key key{c.body.peer, c.body.round};
  auto known = commitments_.find(key);
  if (known != commitments_.end()) {
    if (known->second.body == c.body) return Status::Ok();
    TRIB_RETURN_IF_ERROR(RecordEquivocation(known->second, c));
    return ProtocolError(Describe(c.body.peer, c.body.round) +
                         " signed two different commitments (equivocation)");
  }
  commitments_.emplace(key, c);
  LedgerRecord& rec = records_[key];  // may exist already as an accuser-only record
  rec.job_id = c.body.job_id;
  rec.peer = c.body.peer;
  rec.round = c.body.round;
  rec.root = c.body.root;
  rec.steps_committed = c.body.leaf_count;
  return Status::Ok();
}

Status Ledger::RecordReplay(const net::PublicKey& prover, uint64_t round, uint64_t step,
                            const net::PublicKey& verifier, ReplayOutcome outcome) {
  auto it = records_.find({prover, round});
  if (it == records_.end() || it->second.steps_committed == 0) {
    return NotFound("no commitment from " + Describe(prover, round));
  }
  if (step >= it->second.steps_committed) {
    return InvalidArgument("step " + std::to_string(step) + " was not committed by " +
                           Describe(prover, round));
  }
  if (verifier == prover) return InvalidArgument("a prover cannot verify its own step");
  it->second.checks.push_back(StepCheck{step, verifier, outcome, StepCheck::Resolution::kNone});
  return Status::Ok();
}

Status Ledger::RecordRuling(const RefereeVerdict& v) {
  auto it = records_.find({v.prover, v.round});
  if (it == records_.end() || it->second.steps_committed == 0) {
    return NotFound("no commitment from " + Describe(v.prover, v.round));
  }
  LedgerRecord& rec = it->second;
  const bool guilty = v.ruling == Ruling::kProverGuilty;
  const auto resolution =
      guilty ? StepCheck::Resolution::kConvicted : StepCheck::Resolution::kUpheld;
  // The ruling settles the step, so it settles every mismatch reported on it; each reporter of a
  // step the referee reproduced accused falsely.
  std::set<net::PublicKey> accusers{v.accuser};
  bool found = false;
  for (StepCheck& c : rec.checks) {
    if (c.step != v.step || c.outcome != ReplayOutcome::kMismatch) continue;
    c.resolution = resolution;
    accusers.insert(c.verifier);
    found = found || c.verifier == v.accuser;
  }
  if (!found) {
    // A dispute opened without a recorded replay (e.g. a referee's own audit): record it.
    rec.checks.push_back(StepCheck{v.step, v.accuser, ReplayOutcome::kMismatch, resolution});
  }
  if (!guilty) {
    const std::string job = rec.job_id;
    for (const net::PublicKey& key : accusers) {
      LedgerRecord& accuser = records_[{key, v.round}];
      if (accuser.job_id.empty()) {
        accuser.job_id = job;
        accuser.peer = key;
        accuser.round = v.round;
      }
      ++accuser.false_accusations;
    }
  }
  return Status::Ok();
}

Status Ledger::RecordEquivocation(const SignedCommitment& a, const SignedCommitment& b) {
  if (!IsEquivocation(a, b)) {
    return InvalidArgument("the two commitments do not prove an equivocation");
  }
  LedgerRecord& rec = records_[{a.body.peer, a.body.round}];
  if (rec.job_id.empty()) {
    rec.job_id = a.body.job_id;
    rec.peer = a.body.peer;
    rec.round = a.body.round;
  }
  rec.equivocated = true;
  return Status::Ok();
}

Result<LedgerRecord> Ledger::Get(const net::PublicKey& peer, uint64_t round) const {
  auto it = records_.find({peer, round});
  if (it == records_.end()) return NotFound("no ledger record for " + Describe(peer, round));
  return it->second;
}

std::vector<LedgerRecord> Ledger::Records() const {
  std::vector<LedgerRecord> out;
  for (const auto& [key, rec] : records_) out.push_back(rec);
  return out;
}

uint64_t Ledger::VerifiedSteps(const net::PublicKey& peer) const {
  uint64_t n = 0;
  for (const auto& [key, rec] : records_) {
    if (key.first == peer && rec.verdict() != RoundVerdict::kRejected) n += rec.steps_verified();
  }
  return n;
}

Result<SignedReceipt> Ledger::IssueReceipt(const net::PublicKey& peer, uint64_t round,
                                           const net::Identity& coordinator,
                                           uint64_t now_ms) const {
  TRIB_ASSIGN_OR_RETURN(LedgerRecord rec, Get(peer, round));
  if (rec.job_id.empty()) return InvalidArgument("ledger record has no job id");
  Receipt b;
  b.job_id = rec.job_id;
  b.peer = rec.peer;
  b.round = rec.round;
  b.root = rec.root;
  b.steps_committed = rec.steps_committed;
  b.steps_challenged = rec.steps_challenged();
  b.steps_verified = rec.steps_verified();
  b.steps_failed = rec.steps_failed();
  b.false_accusations = rec.false_accusations;
  b.verdict = rec.verdict();
  b.coordinator = coordinator.public_key();
  b.issued_at_ms = now_ms;
  return SignedReceipt{b, coordinator.Sign(ReceiptSignedBytes(b))};
}

std::string Ledger::Encode() const {
  detail::Writer w;
  w.Raw(kLedgerMagic);
  w.U64(commitments_.size());
  for (const auto& [key, c] : commitments_) w.Str(EncodeCommitment(c));
  w.U64(records_.size());
  for (const auto& [key, rec] : records_) {
    w.Str(rec.job_id);
    w.Fixed(rec.peer);
    w.U64(rec.round);
    w.Fixed(rec.root);
    w.U64(rec.steps_committed);
    w.U64(rec.false_accusations);
    w.U8(rec.equivocated ? 1 : 0);
    w.U64(rec.checks.size());
    for (const StepCheck& c : rec.checks) {
      w.U64(c.step);
      w.Fixed(c.verifier);
      w.U8(c.outcome == ReplayOutcome::kMatch ? 0 : 1);
      w.U8(static_cast<uint8_t>(c.resolution));
    }
  }
  return std::move(w).bytes();
}

Result<Ledger> Ledger::Decode(std::string_view bytes) {
  detail::Reader r(bytes, "ledger");
  TRIB_RETURN_IF_ERROR(r.Magic(kLedgerMagic));
  Ledger ledger;
  TRIB_ASSIGN_OR_RETURN(uint64_t commitments, r.U64());
  for (uint64_t i = 0; i < commitments; ++i) {
    TRIB_ASSIGN_OR_RETURN(std::string raw, r.Str(1 << 16));
    TRIB_ASSIGN_OR_RETURN(SignedCommitment c, DecodeCommitment(raw));
    TRIB_RETURN_IF_ERROR(VerifyCommitment(c).WithContext("ledger"));
    if (!ledger.commitments_.emplace(Key{c.body.peer, c.body.round}, c).second) {
      return Corruption("ledger holds two commitments for one peer and round");
    }
  }
  TRIB_ASSIGN_OR_RETURN(uint64_t records, r.U64());
  for (uint64_t i = 0; i < records; ++i) {
    LedgerRecord rec;
    TRIB_ASSIGN_OR_RETURN(rec.job_id, r.Str(kMaxJobId));
    TRIB_ASSIGN_OR_RETURN(rec.peer, r.Fixed<32>());
    TRIB_ASSIGN_OR_RETURN(rec.round, r.U64());
    TRIB_ASSIGN_OR_RETURN(rec.root, r.Fixed<32>());
    TRIB_ASSIGN_OR_RETURN(rec.steps_committed, r.U64());
    TRIB_ASSIGN_OR_RETURN(rec.false_accusations, r.U64());
    TRIB_ASSIGN_OR_RETURN(uint8_t equivocated, r.U8());
    if (equivocated > 1) return Corruption("ledger has a bad flag");
    rec.equivocated = equivocated == 1;
    TRIB_ASSIGN_OR_RETURN(uint64_t checks, r.U64());
    if (checks > kMaxChecks) return Corruption("ledger record has too many checks");
    for (uint64_t j = 0; j < checks; ++j) {
      StepCheck c;
      TRIB_ASSIGN_OR_RETURN(c.step, r.U64());
      TRIB_ASSIGN_OR_RETURN(c.verifier, r.Fixed<32>());
      TRIB_ASSIGN_OR_RETURN(uint8_t outcome, r.U8());
      TRIB_ASSIGN_OR_RETURN(uint8_t resolution, r.U8());
      if (outcome > 1 || resolution > 2) return Corruption("ledger check has a bad code");
      c.outcome = outcome == 0 ? ReplayOutcome::kMatch : ReplayOutcome::kMismatch;
      c.resolution = static_cast<StepCheck::Resolution>(resolution);
      rec.checks.push_back(c);
    }
    // A record's commitment fields must be the ones its signed commitment states.
    auto c = ledger.commitments_.find(Key{rec.peer, rec.round});
    if (c != ledger.commitments_.end() &&
        (c->second.body.root != rec.root || c->second.body.leaf_count != rec.steps_committed ||
         c->second.body.job_id != rec.job_id)) {
      return Corruption("ledger record disagrees with its signed commitment");
    }
    if (c == ledger.commitments_.end() && rec.steps_committed != 0) {
      return Corruption("ledger record claims work without a signed commitment");
    }
    if (!ledger.records_.emplace(Key{rec.peer, rec.round}, std::move(rec)).second) {
      return Corruption("ledger holds two records for one peer and round");
    }
  }
  TRIB_RETURN_IF_ERROR(r.Done());
  return ledger;
}

}  // namespace tributary::verifier
