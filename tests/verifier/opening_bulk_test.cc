#include "verifier/opening_bulk.h"

#include <gtest/gtest.h>

namespace tributary::verifier {
namespace {

v1::Opening Whole() {
  v1::Opening o;
  o.set_challenge_id(7);
  o.set_round(2);
  o.set_step(3);
  o.set_leaf("leaf bytes");
  o.set_proof("proof bytes");
  o.set_state(std::string(3000, 'a'));
  o.set_state_after(std::string(2000, 'b'));
  o.set_residual(std::string(100, 'c'));
  return o;
}

TEST(OpeningBulk, DetachAndAttachRoundTripsAndKeepsTheLightFields) {
  const v1::Opening whole = Whole();
  v1::Opening light = whole;
  const std::string bulk = DetachOpeningBulk(light);
  EXPECT_TRUE(HasDetachedBulk(light));
  EXPECT_TRUE(light.state().empty() && light.state_after().empty() && light.residual().empty());
  EXPECT_EQ(light.leaf(), whole.leaf());
  EXPECT_EQ(light.bulk_bytes(), bulk.size());
  EXPECT_EQ(light.bulk_digest(), DigestToBytes(Sha256Of(bulk)));
  EXPECT_EQ(bulk, EncodeOpeningBulk(whole));
  ASSERT_TRUE(AttachOpeningBulk(light, bulk).ok());
  EXPECT_FALSE(HasDetachedBulk(light));
  EXPECT_EQ(light.SerializeAsString(), whole.SerializeAsString());
}

// Fields cannot slide into each other: the encoding is length-prefixed.
TEST(OpeningBulk, TheDigestSeparatesTheFields) {
  v1::Opening a = Whole(), b = Whole();
  b.set_state(a.state() + "b");
  b.set_state_after(a.state_after().substr(1));
  EXPECT_NE(EncodeOpeningBulk(a), EncodeOpeningBulk(b));
}

TEST(OpeningBulk, AnotherBulkOrAMalformedOneIsRefusedAndChangesNothing) {
  v1::Opening light = Whole();
  const std::string bulk = DetachOpeningBulk(light);
  const v1::Opening before = light;
  std::string flipped = bulk;
  flipped[flipped.size() / 2] ^= 1;
  for (const std::string& wrong : {flipped, bulk.substr(0, bulk.size() - 1), bulk + "x", std::string()}) {
    Status st = AttachOpeningBulk(light, wrong);
    EXPECT_EQ(st.code(), StatusCode::kCorruption) << st.ToString();
    EXPECT_EQ(light.SerializeAsString(), before.SerializeAsString());
  }
  // Bytes whose digest the opening names but that are not a bulk encoding (a prover lying to
  // itself): refused by the decoder, not by the digest.
  v1::Opening liar = Whole();
  (void)DetachOpeningBulk(liar);
  const std::string garbage = "not an opening bulk";
  liar.set_bulk_digest(DigestToBytes(Sha256Of(garbage)));
  liar.set_bulk_bytes(garbage.size());
  EXPECT_EQ(AttachOpeningBulk(liar, garbage).code(), StatusCode::kCorruption);
  liar.set_bulk_digest("short");
  EXPECT_EQ(AttachOpeningBulk(liar, bulk).code(), StatusCode::kCorruption);
  EXPECT_FALSE(OpeningBulkDigest(liar).ok());
}

}  // namespace
}  // namespace tributary::verifier
