#include "verifier/contribution.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <memory>

#include "collectives/codec/codec.h"
#include "verifier/detail/encoding.h"
#include "verifier/replay.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kManifestMagic = "TRIBMANIF3";
constexpr std::string_view kManifestLabel = "tributary.verifier.manifest.v1";
constexpr std::string_view kContributionLabel = "tributary.verifier.contribution.v1";
constexpr std::string_view kMismatchMagic = "TRIBMISMATCH1";
constexpr std::string_view kBadPayloadMagic = "TRIBBADPAYLOAD1";
constexpr size_t kMaxJobId = 1024;

std::string ManifestSignedBytes(const ContributionManifest& body) {
  return std::string(kManifestLabel) + body.Canonical();
}

std::string ContributionSignedBytes(const SignedManifest& manifest, uint64_t shard,
                                    const Digest& payload) {
  detail::Writer w;
  w.Raw(kContributionLabel);
  w.Fixed(Sha256Of(manifest.body.Canonical()));
  w.U64(shard);
  w.Fixed(payload);
  return std::move(w).bytes();
}

Status CheckBody(const ContributionManifest& body) {
  if (body.job_id.empty() || body.job_id.size() > kMaxJobId) return InvalidArgument("bad job id");
  if (body.shard_digests.empty() || body.shard_digests.size() > kMaxManifestShards) {
    return InvalidArgument("a manifest names between 1 and " + std::to_string(kMaxManifestShards) +
                           " shards, not " + std::to_string(body.shard_digests.size()));
  }
  if (body.numel == 0 || body.numel > kMaxManifestNumel) {
    return InvalidArgument("a manifest states a tensor of 1 to " + std::to_string(kMaxManifestNumel) +
                           " elements, not " + std::to_string(body.numel));
  }
  return Status::Ok();
}

void WriteManifest(detail::Writer& w, const SignedManifest& m) {
  w.Str(m.body.Canonical());
  w.Fixed(m.signature);
}

Result<SignedManifest> ReadManifest(detail::Reader& r) {
  TRIB_ASSIGN_OR_RETURN(std::string body, r.Str(64 + kMaxJobId + 32 * (kMaxManifestShards + 4)));
  TRIB_ASSIGN_OR_RETURN(net::Signature sig, r.Fixed<64>());
  TRIB_ASSIGN_OR_RETURN(SignedManifest m, DecodeManifest(body + net::SignatureToBytes(sig)));
  return m;
}

// What travels with a contribution (EncodeAttestation): the manifest and the signature over
// one payload.
struct Attestation {
  SignedManifest manifest;
  net::Signature signature{};
};

Result<Attestation> ParseAttestation(std::string_view bytes) {
  detail::Reader r(bytes, "contribution attestation");
  Attestation a;
  TRIB_ASSIGN_OR_RETURN(a.manifest, ReadManifest(r));
  TRIB_ASSIGN_OR_RETURN(a.signature, r.Fixed<64>());
  TRIB_RETURN_IF_ERROR(r.Done());
  return a;
}

// The checks both proofs share: the manifest is the peer's, `shard` is one it names, and the
// peer signed `payload` as its contribution to that shard.
Status CheckSignedContribution(const SignedManifest& manifest, uint64_t shard, const Digest& payload,
                               const net::Signature& signature) {
  TRIB_RETURN_IF_ERROR(VerifyManifest(manifest));
  if (shard >= manifest.body.shard_digests.size()) {
    return Corruption("the proof names shard " + std::to_string(shard) + " beyond the manifest");
  }
  if (!net::VerifySignature(manifest.body.peer, ContributionSignedBytes(manifest, shard, payload), signature)) {
    return Corruption("the contribution signature of peer " + net::ShortKey(manifest.body.peer) +
                      " does not verify: not a proof");
  }
  return Status::Ok();
}


// Every bit zero (nothing owed). Branch-free over 32-bit words, so it vectorises.
bool AllZeroBits(std::span<const float> v) {
  uint32_t any = 0;
  for (float f : v) any |= std::bit_cast<uint32_t>(f);
  return any == 0;
}
}  // namespace

Digest ResidualDigest(std::span<const float> residual) {
  if (AllZeroBits(residual)) return Digest{};
  return FloatsDigest(residual);
}

std::string EncodeResidual(std::span<const float> residual) {
  static_assert(std::endian::native == std::endian::little, "canonical bytes are little-endian");
  if (AllZeroBits(residual)) return "";
  const auto bytes = std::as_bytes(residual);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

Result<std::vector<float>> DecodeResidual(std::string_view bytes, uint64_t numel) {
  if (numel > kMaxManifestNumel) return Corruption("a residual of " + std::to_string(numel) + " elements");
  std::vector<float> residual(numel, 0.0f);
  if (bytes.empty()) return residual;
  if (bytes.size() != numel * sizeof(float)) {
    return Corruption("a residual of " + std::to_string(bytes.size()) + " bytes for " + std::to_string(numel) +
                      " elements");
  }
  std::memcpy(residual.data(), bytes.data(), bytes.size());
  for (uint64_t i = 0; i < numel; ++i) {
    if (!std::isfinite(residual[i])) return Corruption("residual element " + std::to_string(i) + " is not finite");
  }
  return residual;
}

std::string ContributionManifest::Canonical() const {
  detail::Writer w;
  w.Raw(kManifestMagic);
  w.Str(job_id);
  w.Fixed(peer);
  w.U64(round);
  w.U64(attempt);
  w.U64(numel);
  w.Fixed(pseudo_gradient);
  w.Fixed(residual_in);
  w.Fixed(residual_out);
  w.U64(shard_digests.size());
  for (const Digest& d : shard_digests) w.Fixed(d);
  return std::move(w).bytes();
}

Result<SignedManifest> SignManifest(const ContributionManifest& body, const net::Identity& identity) {
  TRIB_RETURN_IF_ERROR(CheckBody(body));
  if (identity.public_key() != body.peer) {
    return InvalidArgument("manifest names peer " + net::ShortKey(body.peer) +
                           " but would be signed by " + net::ShortKey(identity.public_key()));
  }
  return SignedManifest{body, identity.Sign(ManifestSignedBytes(body))};
}

Status VerifyManifest(const SignedManifest& m) {
  Status body = CheckBody(m.body);
  if (!body.ok()) return Corruption("malformed manifest: " + body.message());
  if (!net::VerifySignature(m.body.peer, ManifestSignedBytes(m.body), m.signature)) {
    return Corruption("manifest signature of peer " + net::ShortKey(m.body.peer) + " does not verify");
  }
  return Status::Ok();
}

std::string EncodeManifest(const SignedManifest& m) {
  return m.body.Canonical() + net::SignatureToBytes(m.signature);
}

Result<SignedManifest> DecodeManifest(std::string_view bytes) {
  detail::Reader r(bytes, "contribution manifest");
  TRIB_RETURN_IF_ERROR(r.Magic(kManifestMagic));
  SignedManifest m;
  TRIB_ASSIGN_OR_RETURN(m.body.job_id, r.Str(kMaxJobId));
  TRIB_ASSIGN_OR_RETURN(m.body.peer, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(m.body.round, r.U64());
  TRIB_ASSIGN_OR_RETURN(m.body.attempt, r.U64());
  TRIB_ASSIGN_OR_RETURN(m.body.numel, r.U64());
  TRIB_ASSIGN_OR_RETURN(m.body.pseudo_gradient, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(m.body.residual_in, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(m.body.residual_out, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(const uint64_t n, r.U64());
  if (n == 0 || n > kMaxManifestShards) return Corruption("manifest names " + std::to_string(n) + " shards");
  m.body.shard_digests.resize(n);
  for (Digest& d : m.body.shard_digests) {
    TRIB_ASSIGN_OR_RETURN(d, r.Fixed<32>());
  }
  TRIB_ASSIGN_OR_RETURN(m.signature, r.Fixed<64>());
  TRIB_RETURN_IF_ERROR(r.Done());
  return m;
}

net::Signature SignContribution(const net::Identity& identity, const SignedManifest& manifest,
                                uint64_t shard, const Digest& payload) {
  return identity.Sign(ContributionSignedBytes(manifest, shard, payload));
}

std::string EncodeAttestation(const SignedManifest& manifest, const net::Signature& contribution) {
  detail::Writer w;
  WriteManifest(w, manifest);
  w.Fixed(contribution);
  return std::move(w).bytes();
}

std::string EncodeMismatch(const ContributionMismatch& p) {
  detail::Writer w;
  w.Raw(kMismatchMagic);
  WriteManifest(w, p.manifest);
  w.U64(p.shard);
  w.Fixed(p.payload);
  w.Fixed(p.signature);
  return std::move(w).bytes();
}

Result<ContributionMismatch> DecodeMismatch(std::string_view bytes) {
  detail::Reader r(bytes, "contribution mismatch");
  TRIB_RETURN_IF_ERROR(r.Magic(kMismatchMagic));
  ContributionMismatch p;
  TRIB_ASSIGN_OR_RETURN(p.manifest, ReadManifest(r));
  TRIB_ASSIGN_OR_RETURN(p.shard, r.U64());
  TRIB_ASSIGN_OR_RETURN(p.payload, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(p.signature, r.Fixed<64>());
  TRIB_RETURN_IF_ERROR(r.Done());
  return p;
}

Status CheckMismatchProof(const ContributionMismatch& p) {
  TRIB_RETURN_IF_ERROR(CheckSignedContribution(p.manifest, p.shard, p.payload, p.signature));
  if (p.manifest.body.shard_digests[p.shard] == p.payload) {
    return Corruption("the payload is the one the manifest states: no mismatch");
  }
  return Status::Ok();
}

std::string EncodeBadPayload(const BadContributionPayload& p) {
  detail::Writer w;
  w.Raw(kBadPayloadMagic);
  WriteManifest(w, p.manifest);
  w.U64(p.shard);
  w.Str(p.payload);
  w.Fixed(p.signature);
  return std::move(w).bytes();
}

Result<BadContributionPayload> DecodeBadPayload(std::string_view bytes) {
  detail::Reader r(bytes, "bad contribution payload proof");
  TRIB_RETURN_IF_ERROR(r.Magic(kBadPayloadMagic));
  BadContributionPayload p;
  TRIB_ASSIGN_OR_RETURN(p.manifest, ReadManifest(r));
  TRIB_ASSIGN_OR_RETURN(p.shard, r.U64());
  TRIB_ASSIGN_OR_RETURN(p.payload, r.Str(kMaxProofPayloadBytes));
  TRIB_ASSIGN_OR_RETURN(p.signature, r.Fixed<64>());
  TRIB_RETURN_IF_ERROR(r.Done());
  return p;
}

Result<BadContributionPayload> MakeBadPayloadProof(std::string_view attestation, uint64_t shard,
                                                   std::string payload) {
  if (payload.size() > kMaxProofPayloadBytes) return Corruption("the payload is too large for a proof");
  TRIB_ASSIGN_OR_RETURN(Attestation a, ParseAttestation(attestation));
  return BadContributionPayload{std::move(a.manifest), shard, std::move(payload), a.signature};
}

Status CheckBadPayloadProof(const BadContributionPayload& p, std::string_view codec_spec, uint64_t shard_numel) {
  auto codec = collectives::codec::MakeCodec(codec_spec);
  if (!codec.ok()) return InvalidArgument("cannot check a payload proof: " + codec.status().message());
  if (p.payload.size() > kMaxProofPayloadBytes) return Corruption("the payload is too large for a proof");
  const Digest digest = Sha256Of(p.payload);
  TRIB_RETURN_IF_ERROR(CheckSignedContribution(p.manifest, p.shard, digest, p.signature));
  if (p.manifest.body.shard_digests[p.shard] != digest) {
    return Corruption("the payload is not the one the manifest states (that would be a mismatch proof)");
  }
  // What the owner refused (collectives/butterfly.cc) is exactly what DecodeChecked refuses.
  if (!collectives::codec::DecodeChecked(**codec, p.payload, shard_numel).ok()) return Status::Ok();
  return Corruption("the payload decodes to " + std::to_string(shard_numel) + " finite values: nothing wrong with it");
}

Result<ContributionProof> DecodeContributionProof(std::string_view bytes) {
  if (bytes.starts_with(kMismatchMagic)) {
    TRIB_ASSIGN_OR_RETURN(ContributionMismatch m, DecodeMismatch(bytes));
    return ContributionProof(std::move(m));
  }
  if (bytes.starts_with(kBadPayloadMagic)) {
    TRIB_ASSIGN_OR_RETURN(BadContributionPayload b, DecodeBadPayload(bytes));
    return ContributionProof(std::move(b));
  }
  return Corruption("not a contribution proof (unknown magic)");
}

Result<std::optional<ContributionMismatch>> CheckAttestation(const ExpectedContribution& e,
                                                             std::string_view attestation,
                                                             const Digest& payload) {
  TRIB_ASSIGN_OR_RETURN(Attestation a, ParseAttestation(attestation));
  SignedManifest& m = a.manifest;
  const net::Signature& sig = a.signature;
  TRIB_RETURN_IF_ERROR(VerifyManifest(m));
  const ContributionManifest& b = m.body;
  if (b.peer != e.sender) return Corruption("the manifest is not the sender's (" + net::ShortKey(b.peer) + ")");
  if (b.job_id != e.job_id || b.round != e.round || b.attempt != e.attempt) {
    return Corruption("the manifest is for another job, round or attempt");
  }
  if (b.shard_digests.size() != e.world) {
    return Corruption("the manifest names " + std::to_string(b.shard_digests.size()) + " shards, the mesh has " +
                      std::to_string(e.world));
  }
  // An owner forwards a bad payload only under a manifest stating its own tensor's size, so a
  // proof's shard size (from the manifest) is the one the owner decoded with.
  if (b.numel != e.numel) {
    return Corruption("the manifest states a tensor of " + std::to_string(b.numel) + " elements, ours has " +
                      std::to_string(e.numel));
  }
  if (!net::VerifySignature(b.peer, ContributionSignedBytes(m, e.shard, payload), sig)) {
    return Corruption("the contribution signature does not verify for the bytes received");
  }
  if (b.shard_digests[e.shard] == payload) return std::optional<ContributionMismatch>();
  return std::optional<ContributionMismatch>(ContributionMismatch{std::move(m), e.shard, payload, sig});
}

}  // namespace tributary::verifier
