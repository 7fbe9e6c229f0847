#include "verifier/contribution.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace tributary::verifier {
namespace {

ContributionManifest Body(const net::Identity& id) {
  ContributionManifest m;
  m.job_id = "job-1";
  m.peer = id.public_key();
  m.round = 4;
  m.attempt = 1;
  m.pseudo_gradient = Sha256Of("delta");
  for (int i = 0; i < 3; ++i) m.shard_digests.push_back(Sha256Of("payload " + std::to_string(i)));
  return m;
}

ExpectedContribution Expect(const net::Identity& id, uint64_t shard) {
  return {.job_id = "job-1", .sender = id.public_key(), .round = 4, .attempt = 1, .world = 3, .shard = shard};
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
}

}  // namespace
}  // namespace tributary::verifier
