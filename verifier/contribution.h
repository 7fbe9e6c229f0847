// Binding the pseudo-gradient a peer *sends* to what it signed (docs/VERIFIER.md, "Sent Δ").
//
// Before its contributions leave, a peer signs a ContributionManifest for the attempt: H(Δ) (the
// same digest as its RoundCommitment) and the SHA-256 of the exact encoded payload it sends to
// each butterfly shard. Every contribution message carries an attestation: the signed manifest
// and the sender's signature over (H(manifest), shard, H(payload)). The shard owner checks it
// before decoding anything:
//   - malformed, wrong peer/job/round/attempt/world/shard, or a signature that fails: the bytes
//     are refused and the sender blamed, but nothing is provable (it could be the link);
//   - both signatures valid but H(payload) ≠ the manifest's digest for the shard: the sender
//     signed two contradicting statements. That pair (ContributionMismatch) is a transferable
//     proof anyone can check with CheckMismatchProof; the coordinator bans on it.
// The manifest is per attempt (a retry re-shards), so it is kept apart from the RoundCommitment,
// where a second body would be equivocation. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "net/identity.h"

namespace tributary::verifier {

struct ContributionManifest {
  std::string job_id;
  net::PublicKey peer{};
  uint64_t round = 0;
  uint64_t attempt = 0;
  Digest pseudo_gradient{};           // FloatsDigest(Δ), as in the RoundCommitment
  std::vector<Digest> shard_digests;  // SHA-256 of the encoded payload to shard i (world entries)

  bool operator==(const ContributionManifest&) const = default;
  // "TRIBMANIF1" ‖ str job ‖ peer ‖ u64 round ‖ u64 attempt ‖ pseudo_gradient ‖ u64 n ‖ digests.
  std::string Canonical() const;
};

struct SignedManifest {
  ContributionManifest body;
  net::Signature signature{};
};

// The most shards a manifest may name (bounds a hostile length before allocating).
inline constexpr uint64_t kMaxManifestShards = 4096;

Result<SignedManifest> SignManifest(const ContributionManifest& body, const net::Identity& identity);
Status VerifyManifest(const SignedManifest& manifest);  // Corruption if forged or malformed
std::string EncodeManifest(const SignedManifest& manifest);
Result<SignedManifest> DecodeManifest(std::string_view bytes);  // strict; does not verify

// The sender's signature over one sent payload: "tributary.verifier.contribution.v1" ‖
// H(manifest canonical) ‖ u64 shard ‖ H(payload).
net::Signature SignContribution(const net::Identity& identity, const SignedManifest& manifest,
                                uint64_t shard, const Digest& payload);
// What travels with a contribution: u64 len ‖ EncodeManifest ‖ 64-byte contribution signature.
std::string EncodeAttestation(const SignedManifest& manifest, const net::Signature& contribution);

// A transferable proof that `manifest.body.peer` sent shard `shard` a payload whose digest
// `payload` differs from the one its manifest states, with its signature over that payload.
struct ContributionMismatch {
  SignedManifest manifest;
  uint64_t shard = 0;
  Digest payload{};
  net::Signature signature{};
};
std::string EncodeMismatch(const ContributionMismatch& proof);
Result<ContributionMismatch> DecodeMismatch(std::string_view bytes);  // strict; does not verify
// OK iff both signatures are the peer's and the digests differ (the peer is guilty); Corruption
// otherwise (a forged or baseless accusation).
Status CheckMismatchProof(const ContributionMismatch& proof);

// What the owner of `shard` expects of a contribution from `sender`.
struct ExpectedContribution {
  std::string job_id;
  net::PublicKey sender{};
  uint64_t round = 0;
  uint64_t attempt = 0;
  uint64_t world = 0;
  uint64_t shard = 0;
};
// The owner's check of one received payload (given by its digest) against its attestation.
// Error: refuse and blame the sender, nothing provable. nullopt: the payload is the one the
// sender signed in its manifest. A mismatch: the provable contradiction (refuse, and report it).
Result<std::optional<ContributionMismatch>> CheckAttestation(const ExpectedContribution& expected,
                                                             std::string_view attestation,
                                                             const Digest& payload);

}  // namespace tributary::verifier
