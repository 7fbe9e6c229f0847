#include "verifier/contribution.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "tests/common/contribution_proofs.h"
#include "verifier/replay.h"

namespace tributary::verifier {
namespace {

ContributionManifest Body(const net::Identity& id) {
  ContributionManifest m;
  m.job_id = "job-1";
  m.peer = id.public_key();
  m.round = 4;
  m.attempt = 1;
  m.numel = 30;
  m.pseudo_gradient = Sha256Of("delta");
  m.residual_in = Sha256Of("owed before");
  m.residual_out = Sha256Of("owed after");
  for (int i = 0; i < 3; ++i) m.shard_digests.push_back(Sha256Of("payload " + std::to_string(i)));
  return m;
}

ExpectedContribution Expect(const net::Identity& id, uint64_t shard) {
  return {.job_id = "job-1", .sender = id.public_key(), .round = 4, .attempt = 1, .world = 3, .shard = shard, .numel = 30};
}

TEST(Contribution, HonestPayloadPassesAndRoundTrips) {
  const net::Identity id = net::Identity::Generate();
  auto m = SignManifest(Body(id), id);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ASSERT_TRUE(VerifyManifest(*m).ok());
  auto decoded = DecodeManifest(EncodeManifest(*m));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->body, m->body);
  for (uint64_t shard = 0; shard < 3; ++shard) {
    const Digest p = Sha256Of("payload " + std::to_string(shard));
    auto checked = CheckAttestation(Expect(id, shard), EncodeAttestation(*m, SignContribution(id, *m, shard, p)), p);
    ASSERT_TRUE(checked.ok()) << checked.status().ToString();
    EXPECT_FALSE(checked->has_value());
  }
}

// The residual digests are signed: changing either one breaks the manifest's signature.
TEST(Contribution, TheResidualDigestsAreSigned) {
  const net::Identity id = net::Identity::Generate();
  auto m = SignManifest(Body(id), id);
  ASSERT_TRUE(m.ok());
  SignedManifest in = *m, out = *m;
  in.body.residual_in[0] ^= 1;
  out.body.residual_out[31] ^= 1;
  EXPECT_FALSE(VerifyManifest(in).ok());
  EXPECT_FALSE(VerifyManifest(out).ok());
  const std::string bytes = EncodeManifest(*m);
  for (size_t n = 0; n < bytes.size(); ++n) EXPECT_FALSE(DecodeManifest(bytes.substr(0, n)).ok()) << n;
}

// All-zero residuals (nothing owed, or no residual at all) are the zero digest and travel as no
// bytes; anything else is FloatsDigest and its floats. Decoding is strict.
TEST(Contribution, ResidualsHaveAZeroFormAndDecodeStrictly) {
  const std::vector<float> zero(5, 0.0f), owed = {0.0f, 0.25f, -1e-3f, 0.0f, 7.0f};
  EXPECT_EQ(ResidualDigest(zero), Digest{});
  EXPECT_EQ(ResidualDigest({}), Digest{});
  EXPECT_EQ(ResidualDigest(owed), FloatsDigest(owed));
  EXPECT_NE(ResidualDigest(std::vector<float>{-0.0f}), Digest{}) << "-0 is not all zero bits";
  EXPECT_EQ(EncodeResidual(zero), "");
  auto back = DecodeResidual(EncodeResidual(owed), owed.size());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, owed);
  auto none = DecodeResidual("", 5);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, zero);
  const std::string bytes = EncodeResidual(owed);
  EXPECT_FALSE(DecodeResidual(bytes, owed.size() + 1).ok());
  EXPECT_FALSE(DecodeResidual(bytes.substr(1), owed.size()).ok());
  EXPECT_FALSE(DecodeResidual(bytes + "x", owed.size()).ok());
  std::vector<float> bad = owed;
  bad[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_FALSE(DecodeResidual(EncodeResidual(bad), bad.size()).ok());
  bad[2] = std::numeric_limits<float>::infinity();
  EXPECT_FALSE(DecodeResidual(EncodeResidual(bad), bad.size()).ok());
}

TEST(Contribution, SignedDifferentPayloadIsAProvableMismatch) {
  const net::Identity id = net::Identity::Generate();
  auto m = SignManifest(Body(id), id);
  ASSERT_TRUE(m.ok());
  const Digest sent = Sha256Of("scaled x1000");
  auto checked = CheckAttestation(Expect(id, 2), EncodeAttestation(*m, SignContribution(id, *m, 2, sent)), sent);
  ASSERT_TRUE(checked.ok()) << checked.status().ToString();
  ASSERT_TRUE(checked->has_value());
  const ContributionMismatch proof = **checked;
  EXPECT_TRUE(CheckMismatchProof(proof).ok());
  auto decoded = DecodeMismatch(EncodeMismatch(proof));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_TRUE(CheckMismatchProof(*decoded).ok());
  // Every byte of the proof matters: a flip either fails decoding or the check.
  const std::string bytes = EncodeMismatch(proof);
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x01;
    auto d = DecodeMismatch(bad);
    EXPECT_TRUE(!d.ok() || !CheckMismatchProof(*d).ok()) << "byte " << i;
  }
  EXPECT_FALSE(DecodeMismatch(bytes + "x").ok());
  EXPECT_FALSE(DecodeMismatch(bytes.substr(0, bytes.size() - 1)).ok());
}

TEST(Contribution, NoProofWithoutTheSendersSignature) {
  const net::Identity id = net::Identity::Generate();
  const net::Identity mallory = net::Identity::Generate();
  auto m = SignManifest(Body(id), id);
  ASSERT_TRUE(m.ok());
  const Digest honest = Sha256Of("payload 1");
  const Digest other = Sha256Of("something else");
  // The bytes received are not the ones signed (link corruption, or a receiver making it up).
  EXPECT_FALSE(CheckAttestation(Expect(id, 1), EncodeAttestation(*m, SignContribution(id, *m, 1, honest)), other).ok());
  // A receiver cannot forge the sender's contribution signature to frame it.
  ContributionMismatch framed{*m, 1, other, SignContribution(mallory, *m, 1, other)};
  EXPECT_FALSE(CheckMismatchProof(framed).ok());
  // Nor turn an honest contribution into a proof.
  ContributionMismatch honest_proof{*m, 1, honest, SignContribution(id, *m, 1, honest)};
  EXPECT_FALSE(CheckMismatchProof(honest_proof).ok());
  // Nor claim another shard than the one signed.
  ContributionMismatch moved{*m, 2, honest, SignContribution(id, *m, 1, honest)};
  EXPECT_FALSE(CheckMismatchProof(moved).ok());
  ContributionMismatch beyond{*m, 3, other, SignContribution(id, *m, 3, other)};
  EXPECT_FALSE(CheckMismatchProof(beyond).ok());
}

TEST(Contribution, AttestationForAnotherContextIsRefused) {
  const net::Identity id = net::Identity::Generate();
  const net::Identity other = net::Identity::Generate();
  auto m = SignManifest(Body(id), id);
  ASSERT_TRUE(m.ok());
  const Digest p = Sha256Of("payload 0");
  const std::string good = EncodeAttestation(*m, SignContribution(id, *m, 0, p));
  ExpectedContribution e = Expect(id, 0);
  ASSERT_TRUE(CheckAttestation(e, good, p).ok());
  for (auto mutate : std::vector<std::function<void(ExpectedContribution&)>>{
           [&](ExpectedContribution& x) { x.sender = other.public_key(); },
           [](ExpectedContribution& x) { x.job_id = "job-2"; },
           [](ExpectedContribution& x) { x.round = 5; },
           [](ExpectedContribution& x) { x.attempt = 0; },
           [](ExpectedContribution& x) { x.world = 4; },
           [](ExpectedContribution& x) { x.numel = 31; },
           [](ExpectedContribution& x) { x.shard = 1; }}) {
    ExpectedContribution x = e;
    mutate(x);
    EXPECT_FALSE(CheckAttestation(x, good, p).ok());
  }
  EXPECT_FALSE(CheckAttestation(e, good + "x", p).ok());
  EXPECT_FALSE(CheckAttestation(e, good.substr(0, good.size() - 1), p).ok());
  EXPECT_FALSE(CheckAttestation(e, "", p).ok());
  // A manifest signed by someone else than the peer it names.
  SignedManifest forged = *m;
  forged.signature = other.Sign(std::string("tributary.verifier.manifest.v1") + m->body.Canonical());
  EXPECT_FALSE(CheckAttestation(e, EncodeAttestation(forged, SignContribution(id, forged, 0, p)), p).ok());
  EXPECT_FALSE(SignManifest(Body(id), other).ok());
  ContributionManifest empty = Body(id);
  empty.shard_digests.clear();
  EXPECT_FALSE(SignManifest(empty, id).ok());
  for (uint64_t numel : {uint64_t{0}, kMaxManifestNumel + 1}) {
    ContributionManifest sized = Body(id);
    sized.numel = numel;
    EXPECT_FALSE(SignManifest(sized, id).ok()) << numel;
  }
}

// ---- A signed payload that does not decode, or decodes to NaN/Inf ------------------------------

constexpr uint64_t kShardNumel = 10;  // the helper's 30-element tensor over 3 shards

testing::SignedContributions Signed(const net::Identity& id, std::function<void(uint64_t, std::string&)> tamper = {}) {
  return testing::SignContributions(id, {.tamper = std::move(tamper)});
}

TEST(BadContributionPayload, NaNInfAndGarbageSignedByTheSenderProveItGuilty) {
  const net::Identity id = net::Identity::Generate();
  const std::vector<std::pair<std::string, std::function<void(uint64_t, std::string&)>>> attacks = {
      {"NaN", testing::OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN())},
      {"+Inf", testing::OverwriteFirstValue(std::numeric_limits<float>::infinity())},
      {"-Inf", testing::OverwriteFirstValue(-std::numeric_limits<float>::infinity())},
      {"one byte short", [](uint64_t, std::string& p) { p.pop_back(); }},
      {"one byte long", [](uint64_t, std::string& p) { p.push_back('\0'); }},
      {"not a payload", [](uint64_t, std::string& p) { p = "garbage"; }},
      {"empty", [](uint64_t, std::string& p) { p.clear(); }}};
  for (const auto& [what, tamper] : attacks) {
    const testing::SignedContributions c = Signed(id, tamper);
    // The owner's attestation check passes: the manifest states exactly these bytes.
    const std::string attestation = EncodeAttestation(
        c.manifest, SignContribution(id, c.manifest, 1, Sha256Of(c.payloads[1])));
    auto checked = CheckAttestation(Expect(id, 1), attestation, Sha256Of(c.payloads[1]));
    ASSERT_TRUE(checked.ok()) << what << ": " << checked.status().ToString();
    EXPECT_FALSE(checked->has_value()) << what;
    // What the owner keeps when decoding then fails, and what anyone can check.
    auto proof = MakeBadPayloadProof(attestation, 1, c.payloads[1]);
    ASSERT_TRUE(proof.ok()) << what << ": " << proof.status().ToString();
    EXPECT_TRUE(CheckBadPayloadProof(*proof, "fp32", kShardNumel).ok()) << what;
    auto decoded = DecodeContributionProof(EncodeBadPayload(*proof));
    ASSERT_TRUE(decoded.ok()) << what << ": " << decoded.status().ToString();
    ASSERT_TRUE(std::holds_alternative<BadContributionPayload>(*decoded)) << what;
    EXPECT_TRUE(CheckBadPayloadProof(std::get<BadContributionPayload>(*decoded), "fp32", kShardNumel).ok()) << what;
  }
}

TEST(BadContributionPayload, AnHonestPayloadIsNoProof) {
  const net::Identity id = net::Identity::Generate();
  const testing::SignedContributions c = Signed(id);
  for (uint64_t shard = 0; shard < 3; ++shard) {
    Status st = CheckBadPayloadProof(testing::BadPayloadProofOf(id, c, shard), "fp32", kShardNumel);
    EXPECT_EQ(st.code(), StatusCode::kCorruption) << st.ToString();
  }
  // The checker's codec and shard size, not the reporter's: the same bytes under another codec
  // would not decode, which is why the coordinator passes the job's.
  EXPECT_TRUE(CheckBadPayloadProof(testing::BadPayloadProofOf(id, c, 0), "fp16", kShardNumel).ok());
  EXPECT_EQ(CheckBadPayloadProof(testing::BadPayloadProofOf(id, c, 0), "no-such-codec", kShardNumel).code(),
            StatusCode::kInvalidArgument);
}

TEST(BadContributionPayload, NoProofWithoutTheSendersSignatureOverTheStatedPayload) {
  const net::Identity id = net::Identity::Generate();
  const net::Identity mallory = net::Identity::Generate();
  const testing::SignedContributions c = Signed(id, testing::OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN()));
  const BadContributionPayload good = testing::BadPayloadProofOf(id, c, 1);
  ASSERT_TRUE(CheckBadPayloadProof(good, "fp32", kShardNumel).ok());
  auto refused = [&](const BadContributionPayload& p) {
    return CheckBadPayloadProof(p, "fp32", kShardNumel).code() == StatusCode::kCorruption;
  };
  // A reporter that changes the payload (here: to the honest bytes of another shard, or one
  // flipped byte) no longer holds the sender's signature over it.
  BadContributionPayload tampered = good;
  tampered.payload = c.payloads[0];
  EXPECT_TRUE(refused(tampered));
  tampered = good;
  tampered.payload[20] ^= 0x01;
  EXPECT_TRUE(refused(tampered));
  // Another shard than the one signed, or one beyond the manifest.
  BadContributionPayload moved = good;
  moved.shard = 2;
  EXPECT_TRUE(refused(moved));
  moved.shard = 3;
  moved.signature = SignContribution(id, c.manifest, 3, Sha256Of(good.payload));
  EXPECT_TRUE(refused(moved));
  // A forged contribution signature, or a forged manifest.
  BadContributionPayload forged = good;
  forged.signature = SignContribution(mallory, c.manifest, 1, Sha256Of(good.payload));
  EXPECT_TRUE(refused(forged));
  forged = good;
  forged.manifest.signature = mallory.Sign(std::string("tributary.verifier.manifest.v1") + c.manifest.body.Canonical());
  EXPECT_TRUE(refused(forged));
  // Signed by the sender but not what its manifest states: that is a mismatch, not this proof.
  const testing::SignedContributions honest = Signed(id);
  BadContributionPayload unstated{honest.manifest, 1, c.payloads[1],
                                  SignContribution(id, honest.manifest, 1, Sha256Of(c.payloads[1]))};
  EXPECT_TRUE(refused(unstated));
}

TEST(BadContributionPayload, DecodingIsStrict) {
  const net::Identity id = net::Identity::Generate();
  const testing::SignedContributions c = Signed(id, testing::OverwriteFirstValue(std::numeric_limits<float>::infinity()));
  const std::string bytes = EncodeBadPayload(testing::BadPayloadProofOf(id, c, 1));
  ASSERT_TRUE(DecodeBadPayload(bytes).ok());
  for (size_t n = 0; n < bytes.size(); ++n) EXPECT_FALSE(DecodeContributionProof(bytes.substr(0, n)).ok()) << n;
  EXPECT_FALSE(DecodeContributionProof(bytes + "x").ok());
  // Every byte matters: a flip fails decoding or the check.
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x01;
    auto d = DecodeBadPayload(bad);
    EXPECT_TRUE(!d.ok() || !CheckBadPayloadProof(*d, "fp32", kShardNumel).ok()) << "byte " << i;
  }
  // Oversized lengths are refused before anything is allocated: the payload's (it follows the
  // magic, the manifest's length-prefixed body, its signature and the shard) and the manifest's.
  const std::string magic = "TRIBBADPAYLOAD1";
  const std::string manifest = EncodeManifest(c.manifest);
  const size_t payload_length_at = magic.size() + 8 + (manifest.size() - 64) + 64 + 8;
  std::string huge = bytes;
  for (int i = 0; i < 8; ++i) huge[payload_length_at + i] = static_cast<char>(0xff);
  auto oversized = DecodeBadPayload(huge);
  ASSERT_FALSE(oversized.ok());
  EXPECT_NE(oversized.status().message().find("oversized"), std::string::npos) << oversized.status().ToString();
  huge = bytes;
  for (int i = 0; i < 8; ++i) huge[magic.size() + i] = static_cast<char>(0xff);
  EXPECT_FALSE(DecodeBadPayload(huge).ok());
  // A payload over the bound cannot be made into a proof at all.
  const std::string attestation = EncodeAttestation(c.manifest, SignContribution(id, c.manifest, 1, Sha256Of(c.payloads[1])));
  EXPECT_FALSE(MakeBadPayloadProof(attestation, 1, std::string(kMaxProofPayloadBytes + 1, 'x')).ok());
  EXPECT_FALSE(MakeBadPayloadProof("not an attestation", 1, c.payloads[1]).ok());
}

TEST(ContributionProof, OneDecoderTellsTheKindsApartByTheirMagic) {
  const net::Identity id = net::Identity::Generate();
  auto m = SignManifest(Body(id), id);
  ASSERT_TRUE(m.ok());
  const Digest sent = Sha256Of("scaled x1000");
  auto mismatch = DecodeContributionProof(EncodeMismatch({*m, 2, sent, SignContribution(id, *m, 2, sent)}));
  ASSERT_TRUE(mismatch.ok()) << mismatch.status().ToString();
  ASSERT_TRUE(std::holds_alternative<ContributionMismatch>(*mismatch));
  EXPECT_TRUE(CheckMismatchProof(std::get<ContributionMismatch>(*mismatch)).ok());
  const testing::SignedContributions c = Signed(id, testing::OverwriteFirstValue(std::numeric_limits<float>::quiet_NaN()));
  auto bad = DecodeContributionProof(EncodeBadPayload(testing::BadPayloadProofOf(id, c, 0)));
  ASSERT_TRUE(bad.ok()) << bad.status().ToString();
  EXPECT_TRUE(std::holds_alternative<BadContributionPayload>(*bad));
  EXPECT_FALSE(DecodeContributionProof("").ok());
  EXPECT_FALSE(DecodeContributionProof("TRIBSOMETHINGELSE").ok());
  EXPECT_FALSE(DecodeContributionProof(EncodeManifest(*m)).ok());
}

}  // namespace
}  // namespace tributary::verifier
