// Binding what a shard owner *returns* to what it received (docs/VERIFIER.md, "The owner's
// aggregate"). In a bound butterfly every contribution is signed by its sender ("Sent Δ",
// contribution.h); this is the other half. Before its aggregate leaves, the owner of shard s
// signs an AggregateStatement: the digest of every contribution it aggregated (by rank, its own
// included), the digest of the aggregate payload it sends, and its own error-feedback residual
// before and after encoding. The statement travels with the aggregate, and each receiver checks
// it before decoding: the owner's signature, the context, the payload's digest, and that the
// entry at the receiver's own rank is the payload the receiver really sent. Members report the
// statements they received; the coordinator then
//   - bans an owner that signed two different statements for one shard of one attempt
//     (equivocation: it sent members different aggregates);
//   - bans an owner whose statement names, for some rank, another payload than that rank's signed
//     manifest states (an honest owner accepts only payloads their sender signed);
//   - audits the aggregate: the owner opens the contributions and its residual, and the result
//     must be exactly what collectives::ReproduceAggregate computes from them.
// Torch-free and codec-free: the recomputation lives in collectives/butterfly.h.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "net/identity.h"

namespace tributary::verifier {

struct AggregateStatement {
  std::string job_id;
  net::PublicKey owner{};
  uint64_t round = 0;
  uint64_t attempt = 0;
  uint64_t world = 0;  // members of the attempt = shards
  uint64_t shard = 0;  // the owner's rank
  uint64_t numel = 0;  // elements of the whole tensor (fixes the shard's range)
  std::vector<Digest> contributions;  // SHA-256 of the payload rank i contributed (world entries)
  Digest aggregate{};                 // SHA-256 of the payload every rank decodes as this shard
  // ResidualDigest (contribution.h) of what the owner owed its shard's stream, over the shard's
  // elements, before and after encoding this aggregate.
  Digest residual_in{};
  Digest residual_out{};

  bool operator==(const AggregateStatement&) const = default;
  // "TRIBAGGR1" ‖ str job ‖ owner ‖ u64 round ‖ u64 attempt ‖ u64 world ‖ u64 shard ‖ u64 numel ‖
  // u64 n ‖ contribution digests ‖ aggregate ‖ residual_in ‖ residual_out.
  std::string Canonical() const;
};

struct SignedAggregate {
  AggregateStatement body;
  net::Signature signature{};
};

// InvalidArgument for a malformed body (world 0 or over kMaxManifestShards, shard ≥ world,
// contributions ≠ world entries, numel 0 or over kMaxManifestNumel) or another signer.
Result<SignedAggregate> SignAggregate(const AggregateStatement& body, const net::Identity& identity);
Status VerifyAggregate(const SignedAggregate& statement);  // Corruption if forged or malformed
std::string EncodeAggregateStatement(const SignedAggregate& statement);
Result<SignedAggregate> DecodeAggregateStatement(std::string_view bytes);  // strict; does not verify

// What a receiver of shard `shard`'s aggregate knows.
struct ExpectedAggregate {
  std::string job_id;
  net::PublicKey owner{};
  uint64_t round = 0;
  uint64_t attempt = 0;
  uint64_t world = 0;
  uint64_t shard = 0;
  uint64_t numel = 0;
  uint64_t receiver = 0;           // our rank
  Digest receiver_contribution{};  // SHA-256 of the payload we sent to this shard
  Digest payload{};                // SHA-256 of the aggregate payload as received
};
// The receiver's check, before decoding: error (refuse, blame the owner) unless the statement
// parses, is signed by `owner`, names exactly this context, states `payload` as the aggregate
// and our own contribution at our rank. On success the statement, for the round's report.
Result<SignedAggregate> CheckAggregateAttestation(const ExpectedAggregate& expected, std::string_view bytes);

// OK iff both statements are signed by the same owner for the same job, round, attempt and
// shard and their bodies differ: the owner is guilty of equivocation. Corruption otherwise.
Status CheckAggregateEquivocation(const SignedAggregate& a, const SignedAggregate& b);

}  // namespace tributary::verifier
