// The ledger of verified work: one record per (peer, round) with the work the peer committed,
// the steps that were challenged and how each replay and dispute ended; and receipts, signed by
// the coordinator's Ed25519 key, that anyone holding only the coordinator's public key can verify
// offline (a peer shows them to prove its contribution; tampering with any byte breaks them).
//
// In memory with a canonical encoding; persistence in the coordinator's SQLite store comes later
// (Encode/Decode are the blob it will store). Not thread-safe: one owner (the coordinator strand).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "net/identity.h"
#include "verifier/commitment.h"
#include "verifier/dispute.h"
#include "verifier/replay.h"

namespace tributary::verifier {

enum class RoundVerdict : uint8_t {
  kPending = 0,   // committed, nothing checked yet
  kVerified = 1,  // every challenged step reproduced (or was upheld by a referee)
  kDisputed = 2,  // a replay disagreed and no referee has ruled yet
  kRejected = 3,  // a step was ruled faked, or the peer equivocated
};
const char* RoundVerdictName(RoundVerdict verdict);

// One verifier's report on one challenged step, and how it was settled.
struct StepCheck {
  uint64_t step = 0;
  net::PublicKey verifier{};
  ReplayOutcome outcome = ReplayOutcome::kMatch;
  enum class Resolution : uint8_t {
    kNone = 0,
    kUpheld = 1,
    kConvicted = 2
  } resolution = Resolution::kNone;  // for mismatches: referee sided with the prover / with the
                                     // verifier
};

struct LedgerRecord {
  std::string job_id;
  net::PublicKey peer{};
  uint64_t round = 0;
  Digest root{};
  uint64_t steps_committed = 0;
  std::vector<StepCheck> checks;   // in arrival order
  uint64_t false_accusations = 0;  // times *this peer*, as a verifier, accused falsely
  bool equivocated = false;

  uint64_t steps_challenged() const;  // distinct steps with at least one check
  uint64_t steps_verified() const;    // distinct steps reproduced or upheld, none convicted
  uint64_t steps_failed() const;      // distinct steps a referee convicted
  RoundVerdict verdict() const;
};

struct Receipt {
  std::string job_id;
  net::PublicKey peer{};
  uint64_t round = 0;
  Digest root{};
  uint64_t steps_committed = 0;
  uint64_t steps_challenged = 0;
  uint64_t steps_verified = 0;
  uint64_t steps_failed = 0;
  uint64_t false_accusations = 0;
  RoundVerdict verdict = RoundVerdict::kPending;
  net::PublicKey coordinator{};
  uint64_t issued_at_ms = 0;

  bool operator==(const Receipt&) const = default;
  // "TRIBRCPT1" ‖ every field above in order (strings length-prefixed, integers u64 LE).
  std::string Canonical() const;
};

struct SignedReceipt {
  Receipt body;
  net::Signature signature{};
};

// OK iff body.coordinator == coordinator_key and the signature is that key's over
// "tributary.verifier.receipt.v1" ‖ body.Canonical(); Corruption otherwise.
Status VerifyReceipt(const SignedReceipt& receipt, const net::PublicKey& coordinator_key);
std::string EncodeReceipt(const SignedReceipt& receipt);  // Canonical() ‖ signature
Result<SignedReceipt> DecodeReceipt(std::string_view bytes);

class Ledger {
 public:
  // Verifies the commitment and opens the (peer, round) record. Re-recording the identical
  // commitment is OK; a different one for the same (peer, round) marks the peer as equivocating
  // and returns ProtocolError.
  Status RecordCommitment(const SignedCommitment& commitment);
  // A verifier's replay result for a challenged step. NotFound without a commitment;
  // InvalidArgument for a step outside it or a verifier that is the prover.
  Status RecordReplay(const net::PublicKey& prover, uint64_t round, uint64_t step,
                      const net::PublicKey& verifier, ReplayOutcome outcome);
  // Settles the mismatches the accuser reported on verdict.step: convicted if the prover is
  // guilty, upheld otherwise, and a false accusation counts against the accuser's own record
  // for that round (created if the accuser committed nothing).
  Status RecordRuling(const RefereeVerdict& verdict);
  // Marks an equivocation proven elsewhere (e.g. by the CommitmentBook).
  Status RecordEquivocation(const SignedCommitment& a, const SignedCommitment& b);

  Result<LedgerRecord> Get(const net::PublicKey& peer, uint64_t round) const;
  // All records, ordered by (peer key, round).
  std::vector<LedgerRecord> Records() const;
  // Steps of `peer` verified over all rounds: the work the ledger credits.
  uint64_t VerifiedSteps(const net::PublicKey& peer) const;

  // A signed statement of the record. NotFound without a record; InvalidArgument if the job id
  // is unknown (an accuser-only record with no commitment still has the job from its ruling).
  Result<SignedReceipt> IssueReceipt(const net::PublicKey& peer, uint64_t round,
                                     const net::Identity& coordinator, uint64_t now_ms) const;

  // Canonical bytes of the whole ledger and back (strict).
  std::string Encode() const;
  static Result<Ledger> Decode(std::string_view bytes);

 private:
  using Key = std::pair<net::PublicKey, uint64_t>;
  std::map<Key, LedgerRecord> records_;
  std::map<Key, SignedCommitment> commitments_;  // the first admitted commitment per key
};

}  // namespace tributary::verifier
