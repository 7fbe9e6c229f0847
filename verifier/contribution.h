// Binding the pseudo-gradient a peer *sends* to what it signed (docs/VERIFIER.md, "Sent Δ").
//
// Before its contributions leave, a peer signs a ContributionManifest for the attempt: H(Δ) (the
// same digest as its RoundCommitment) and the SHA-256 of the exact encoded payload it sends to
// each butterfly shard. Every contribution message carries an attestation: the signed manifest
// and the sender's signature over (H(manifest), shard, H(payload)). The shard owner checks it
// before decoding anything:
//   - malformed, wrong peer/job/round/attempt/world/numel/shard, or a signature that fails: the bytes
//     are refused and the sender blamed, but nothing is provable (it could be the link);
//   - both signatures valid but H(payload) ≠ the manifest's digest for the shard: the sender
//     signed two contradicting statements. That pair (ContributionMismatch) is a transferable
//     proof anyone can check with CheckMismatchProof; the coordinator bans on it.
// A payload that passes this check and then does not decode with the job's codec, or decodes to
// a non-finite value, is the sender's signed garbage: no honest encoder makes one (every codec
// refuses non-finite input). The owner keeps it as a BadContributionPayload, which anyone holding
// the job's codec spec can check with CheckBadPayloadProof. Both proofs start with their own
// magic, so one bytes field carries either (DecodeContributionProof).
// The manifest is per attempt (a retry re-shards), so it is kept apart from the RoundCommitment,
// where a second body would be equivocation. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
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
  // Elements of the whole tensor the shards cut (collectives::ButterflyShardBegin): what fixes
  // each shard's size for a BadContributionPayload check, so the checker needs no model.
  uint64_t numel = 0;
  Digest pseudo_gradient{};           // FloatsDigest(Δ), as in the RoundCommitment
  // Error feedback (a lossy codec): ResidualDigest of what this peer still owed the wire before
  // encoding Δ, and of what it owes after. The payload to shard i is the codec's encoding of
  // (Δ + residual_in) over that shard, so a Δ audit that is given the residual re-encodes it
  // exactly; residual_in must be the residual_out of this peer's previous manifest (or its
  // residual_in, after a rolled-back call, or zero), so the chain leaves it no free choice.
  Digest residual_in{};
  Digest residual_out{};
  std::vector<Digest> shard_digests;  // SHA-256 of the encoded payload to shard i (world entries)

  bool operator==(const ContributionManifest&) const = default;
  // "TRIBMANIF3" ‖ str job ‖ peer ‖ u64 round ‖ u64 attempt ‖ u64 numel ‖ pseudo_gradient ‖
  // residual_in ‖ residual_out ‖ u64 n ‖ digests.
  std::string Canonical() const;
};

// The digest a manifest states for an error-feedback residual: all zero bits (nothing owed, or
// no residual kept: an empty span) is the zero Digest, so a peer's first call, one after a
// restart, and codecs without a residual need no model-sized hash; otherwise FloatsDigest.
Digest ResidualDigest(std::span<const float> residual);
// A residual as a prover opens it for a Δ audit: its floats, little-endian; "" when it is all
// zero (or empty), the state ResidualDigest names by the zero Digest.
std::string EncodeResidual(std::span<const float> residual);
// Strict: exactly `numel` floats, or "" for an all-zero residual (returned as `numel` zeros).
// Corruption otherwise; a non-finite value is Corruption too (no honest residual holds one).
Result<std::vector<float>> DecodeResidual(std::string_view bytes, uint64_t numel);

struct SignedManifest {
  ContributionManifest body;
  net::Signature signature{};
};

// The most shards a manifest may name (bounds a hostile length before allocating).
inline constexpr uint64_t kMaxManifestShards = 4096;
// The largest tensor a manifest may state (the codecs' per-stream limit, 2^32 − 1).
inline constexpr uint64_t kMaxManifestNumel = (uint64_t{1} << 32) - 1;
// The largest payload a BadContributionPayload may carry (bounds a hostile length before
// allocating; a contribution is far below the 16 MiB frame limit it travels in).
inline constexpr uint64_t kMaxProofPayloadBytes = uint64_t{1} << 26;

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

// A transferable proof that `manifest.body.peer` signed, as its contribution to shard `shard`,
// a payload that its manifest states (SHA-256 equal to the manifest's digest for the shard) and
// that does not decode with the job's codec or decodes to a non-finite value.
struct BadContributionPayload {
  SignedManifest manifest;
  uint64_t shard = 0;
  std::string payload;  // the codec payload exactly as received (at most kMaxProofPayloadBytes)
  net::Signature signature{};
};
// "TRIBBADPAYLOAD1" ‖ str manifest ‖ manifest signature ‖ u64 shard ‖ str payload ‖ signature.
std::string EncodeBadPayload(const BadContributionPayload& proof);
Result<BadContributionPayload> DecodeBadPayload(std::string_view bytes);  // strict; does not verify
// The owner's proof of a payload that passed CheckAttestation (`attestation` exactly as received
// with it) and then failed to decode. Corruption if the attestation does not parse.
Result<BadContributionPayload> MakeBadPayloadProof(std::string_view attestation, uint64_t shard,
                                                   std::string payload);
// OK iff both signatures are the peer's, SHA-256(payload) is the manifest's digest for `shard`,
// and decoding the payload with `codec_spec` (collectives/codec) for `shard_numel` elements fails
// or yields a non-finite value: the peer is guilty. Corruption otherwise (a forged or baseless
// accusation); InvalidArgument if `codec_spec` is not a codec (the checker's own mistake).
// `shard_numel` is the checker's: ButterflyShardBegin over the manifest's numel and world.
Status CheckBadPayloadProof(const BadContributionPayload& proof, std::string_view codec_spec,
                            uint64_t shard_numel);

// Either proof, told apart by its magic: what ContributionProof.mismatch carries.
using ContributionProof = std::variant<ContributionMismatch, BadContributionPayload>;
Result<ContributionProof> DecodeContributionProof(std::string_view bytes);  // strict; does not verify

// What the owner of `shard` expects of a contribution from `sender`.
struct ExpectedContribution {
  std::string job_id;
  net::PublicKey sender{};
  uint64_t round = 0;
  uint64_t attempt = 0;
  uint64_t world = 0;
  uint64_t shard = 0;
  uint64_t numel = 0;  // elements of the whole tensor (the manifest must state the same)
};
// The owner's check of one received payload (given by its digest) against its attestation.
// Error: refuse and blame the sender, nothing provable. nullopt: the payload is the one the
// sender signed in its manifest. A mismatch: the provable contradiction (refuse, and report it).
Result<std::optional<ContributionMismatch>> CheckAttestation(const ExpectedContribution& expected,
                                                             std::string_view attestation,
                                                             const Digest& payload);

}  // namespace tributary::verifier
