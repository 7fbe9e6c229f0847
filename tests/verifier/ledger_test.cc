#include "verifier/ledger.h"

#include <gtest/gtest.h>

#include <string>

namespace tributary::verifier {
namespace {

const std::string kClass =
    "tributary.dclass.v1;device=cpu;torch=t;threads=1;blas=b;core=c;isa=i;env=";

SignedCommitment Commit(const net::Identity& id, uint64_t round, uint64_t leaves = 50,
                        const std::string& tag = "root") {
  RoundCommitment c{"job",  id.public_key(),  round, Sha256Of(tag), leaves,
                    kClass, Sha256Of("delta")};
  return *SignCommitment(c, id);
}

RefereeVerdict Ruled(Ruling ruling, const net::Identity& prover, const net::Identity& accuser,
                     uint64_t round, uint64_t step) {
  RefereeVerdict v;
  v.ruling = ruling;
  v.prover = prover.public_key();
  v.accuser = accuser.public_key();
  v.guilty = ruling == Ruling::kProverGuilty ? v.prover : v.accuser;
  v.round = round;
  v.step = step;
  return v;
}

class LedgerTest : public ::testing::Test {
 protected:
  net::Identity coordinator = net::Identity::Generate();
  net::Identity alice = net::Identity::Generate();
  net::Identity bob = net::Identity::Generate();
  net::Identity carol = net::Identity::Generate();
  Ledger ledger;
};

TEST_F(LedgerTest, RecordsWorkCommittedAndVerified) {
  ASSERT_TRUE(ledger.RecordCommitment(Commit(alice, 1)).ok());
  EXPECT_EQ(ledger.Get(alice.public_key(), 1)->verdict(), RoundVerdict::kPending);
  ASSERT_TRUE(
      ledger.RecordReplay(alice.public_key(), 1, 4, bob.public_key(), ReplayOutcome::kMatch).ok());
  ASSERT_TRUE(
      ledger.RecordReplay(alice.public_key(), 1, 9, carol.public_key(), ReplayOutcome::kMatch)
          .ok());
  auto rec = *ledger.Get(alice.public_key(), 1);
  EXPECT_EQ(rec.steps_committed, 50u);
  EXPECT_EQ(rec.steps_challenged(), 2u);
  EXPECT_EQ(rec.steps_verified(), 2u);
  EXPECT_EQ(rec.verdict(), RoundVerdict::kVerified);
  EXPECT_EQ(ledger.VerifiedSteps(alice.public_key()), 2u);

  EXPECT_EQ(ledger.RecordReplay(alice.public_key(), 1, 50, bob.public_key(), ReplayOutcome::kMatch)
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ledger.RecordReplay(alice.public_key(), 1, 3, alice.public_key(), ReplayOutcome::kMatch)
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ledger.RecordReplay(alice.public_key(), 2, 3, bob.public_key(), ReplayOutcome::kMatch).code(),
      StatusCode::kNotFound);
}

TEST_F(LedgerTest, DisputesSettleEitherWayAndFalseAccusationsCost) {
  ASSERT_TRUE(ledger.RecordCommitment(Commit(alice, 1)).ok());
  ASSERT_TRUE(ledger.RecordCommitment(Commit(bob, 1, 50, "bob")).ok());
  ASSERT_TRUE(
      ledger.RecordReplay(alice.public_key(), 1, 7, bob.public_key(), ReplayOutcome::kMismatch)
          .ok());
  EXPECT_EQ(ledger.Get(alice.public_key(), 1)->verdict(), RoundVerdict::kDisputed);

  // The referee reproduces alice's step: bob accused falsely.
  ASSERT_TRUE(ledger.RecordRuling(Ruled(Ruling::kAccuserGuilty, alice, bob, 1, 7)).ok());
  EXPECT_EQ(ledger.Get(alice.public_key(), 1)->verdict(), RoundVerdict::kVerified);
  EXPECT_EQ(ledger.Get(alice.public_key(), 1)->steps_verified(), 1u);
  EXPECT_EQ(ledger.Get(bob.public_key(), 1)->false_accusations, 1u);

  // Carol accuses bob rightly.
  ASSERT_TRUE(
      ledger.RecordReplay(bob.public_key(), 1, 2, carol.public_key(), ReplayOutcome::kMismatch)
          .ok());
  ASSERT_TRUE(
      ledger.RecordReplay(bob.public_key(), 1, 3, alice.public_key(), ReplayOutcome::kMatch).ok());
  ASSERT_TRUE(ledger.RecordRuling(Ruled(Ruling::kProverGuilty, bob, carol, 1, 2)).ok());
  auto rec = *ledger.Get(bob.public_key(), 1);
  EXPECT_EQ(rec.steps_failed(), 1u);
  EXPECT_EQ(rec.verdict(), RoundVerdict::kRejected);
  EXPECT_EQ(ledger.VerifiedSteps(bob.public_key()), 0u) << "a rejected round earns nothing";
  // Carol committed nothing but has a record only if she accused falsely: she did not.
  EXPECT_EQ(ledger.Get(carol.public_key(), 1).status().code(), StatusCode::kNotFound);
}

TEST_F(LedgerTest, EquivocationRejectsTheRound) {
  ASSERT_TRUE(ledger.RecordCommitment(Commit(alice, 3)).ok());
  EXPECT_TRUE(ledger.RecordCommitment(Commit(alice, 3)).ok()) << "idempotent";
  EXPECT_EQ(ledger.RecordCommitment(Commit(alice, 3, 50, "other")).code(),
            StatusCode::kProtocolError);
  EXPECT_EQ(ledger.Get(alice.public_key(), 3)->verdict(), RoundVerdict::kRejected);
  SignedCommitment forged = Commit(bob, 3);
  forged.signature[1] ^= 1;
  EXPECT_EQ(ledger.RecordCommitment(forged).code(), StatusCode::kCorruption);
}

TEST_F(LedgerTest, ReceiptsVerifyOfflineAndRejectTampering) {
  ASSERT_TRUE(ledger.RecordCommitment(Commit(alice, 1)).ok());
  ASSERT_TRUE(
      ledger.RecordReplay(alice.public_key(), 1, 4, bob.public_key(), ReplayOutcome::kMatch).ok());
  auto receipt = ledger.IssueReceipt(alice.public_key(), 1, coordinator, 123456);
  ASSERT_TRUE(receipt.ok()) << receipt.status().ToString();
  EXPECT_EQ(receipt->body.steps_verified, 1u);
  EXPECT_EQ(receipt->body.verdict, RoundVerdict::kVerified);

  // A third party holds only the bytes and the coordinator's public key.
  const std::string bytes = EncodeReceipt(*receipt);
  const net::PublicKey key = coordinator.public_key();
  auto decoded = DecodeReceipt(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_TRUE(VerifyReceipt(*decoded, key).ok());
  EXPECT_EQ(decoded->body, receipt->body);
  EXPECT_EQ(EncodeReceipt(*decoded), bytes);

  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);
    auto d = DecodeReceipt(bad);
    EXPECT_TRUE(!d.ok() || !VerifyReceipt(*d, key).ok()) << "byte " << i;
  }
  EXPECT_EQ(VerifyReceipt(*decoded, alice.public_key()).code(), StatusCode::kCorruption)
      << "only the coordinator's key vouches for a receipt";
  // A receipt re-signed by a peer claiming to be the coordinator fails against the real key.
  SignedReceipt self_issued = *decoded;
  self_issued.body.steps_verified = 50;
  self_issued.signature =
      alice.Sign(std::string("tributary.verifier.receipt.v1") + self_issued.body.Canonical());
  EXPECT_FALSE(VerifyReceipt(self_issued, key).ok());
  EXPECT_FALSE(DecodeReceipt(bytes + "x").ok());
  EXPECT_FALSE(DecodeReceipt(bytes.substr(0, 40)).ok());
  EXPECT_EQ(ledger.IssueReceipt(bob.public_key(), 1, coordinator, 1).status().code(),
            StatusCode::kNotFound);
}

TEST_F(LedgerTest, EncodesAndDecodesCanonically) {
  ASSERT_TRUE(ledger.RecordCommitment(Commit(alice, 1)).ok());
  ASSERT_TRUE(ledger.RecordCommitment(Commit(bob, 1, 20, "bob")).ok());
  ASSERT_TRUE(
      ledger.RecordReplay(alice.public_key(), 1, 4, bob.public_key(), ReplayOutcome::kMismatch)
          .ok());
  ASSERT_TRUE(ledger.RecordRuling(Ruled(Ruling::kAccuserGuilty, alice, bob, 1, 4)).ok());
  ASSERT_TRUE(
      ledger.RecordReplay(bob.public_key(), 1, 5, carol.public_key(), ReplayOutcome::kMatch).ok());
  const std::string bytes = ledger.Encode();
  auto back = Ledger::Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->Encode(), bytes);
  EXPECT_EQ(back->Get(bob.public_key(), 1)->false_accusations, 1u);
  EXPECT_EQ(back->Get(alice.public_key(), 1)->verdict(), RoundVerdict::kVerified);
  EXPECT_FALSE(Ledger::Decode(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(Ledger::Decode(bytes + "x").ok());
  // Inflating a record's committed work breaks its link to the signed commitment.
  Ledger empty;
  EXPECT_TRUE(Ledger::Decode(empty.Encode()).ok());
}

}  // namespace
}  // namespace tributary::verifier
