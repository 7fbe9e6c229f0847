#include "verifier/aggregate_statement.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tributary::verifier {
namespace {

AggregateStatement Body(const net::Identity& owner) {
  AggregateStatement s;
  s.job_id = "job-1";
  s.owner = owner.public_key();
  s.round = 4;
  s.attempt = 1;
  s.world = 3;
  s.shard = 2;
  s.numel = 30;
  for (int i = 0; i < 3; ++i) s.contributions.push_back(Sha256Of("contribution " + std::to_string(i)));
  s.aggregate = Sha256Of("aggregate");
  s.residual_in = Sha256Of("owed before");
  s.residual_out = Sha256Of("owed after");
  return s;
}

ExpectedAggregate Expect(const net::Identity& owner, uint64_t receiver) {
  return {.job_id = "job-1", .owner = owner.public_key(), .round = 4, .attempt = 1, .world = 3, .shard = 2,
          .numel = 30, .receiver = receiver,
          .receiver_contribution = Sha256Of("contribution " + std::to_string(receiver)),
          .payload = Sha256Of("aggregate")};
}

TEST(AggregateStatementTest, AnHonestStatementRoundTripsAndPassesEveryReceiver) {
  const net::Identity owner = net::Identity::Generate();
  auto s = SignAggregate(Body(owner), owner);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_TRUE(VerifyAggregate(*s).ok());
  const std::string bytes = EncodeAggregateStatement(*s);
  auto decoded = DecodeAggregateStatement(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->body, s->body);
  EXPECT_EQ(EncodeAggregateStatement(*decoded), bytes);
  for (uint64_t r = 0; r < 3; ++r) {
    auto checked = CheckAggregateAttestation(Expect(owner, r), bytes);
    ASSERT_TRUE(checked.ok()) << r << ": " << checked.status().ToString();
    EXPECT_EQ(checked->body, s->body);
  }
}

TEST(AggregateStatementTest, EveryFlippedByteAndEveryTruncationIsRefused) {
  const net::Identity owner = net::Identity::Generate();
  const std::string bytes = EncodeAggregateStatement(*SignAggregate(Body(owner), owner));
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] ^= 0x20;
    EXPECT_FALSE(CheckAggregateAttestation(Expect(owner, 0), bad).ok()) << "byte " << i;
  }
  for (size_t len = 0; len < bytes.size(); ++len) {
    EXPECT_FALSE(DecodeAggregateStatement(bytes.substr(0, len)).ok()) << len;
  }
  EXPECT_FALSE(DecodeAggregateStatement(bytes + "x").ok()) << "a trailing byte";
}

TEST(AggregateStatementTest, AReceiverRefusesAnotherContextPayloadOrContribution) {
  const net::Identity owner = net::Identity::Generate(), other = net::Identity::Generate();
  const std::string bytes = EncodeAggregateStatement(*SignAggregate(Body(owner), owner));
  std::vector<std::pair<const char*, ExpectedAggregate>> wrong;
  auto with = [&](const char* what, auto change) {
    ExpectedAggregate e = Expect(owner, 1);
    change(e);
    wrong.emplace_back(what, e);
  };
  with("another owner", [&](ExpectedAggregate& e) { e.owner = other.public_key(); });
  with("another job", [](ExpectedAggregate& e) { e.job_id = "job-2"; });
  with("another round", [](ExpectedAggregate& e) { e.round = 5; });
  with("another attempt", [](ExpectedAggregate& e) { e.attempt = 0; });
  with("another world", [](ExpectedAggregate& e) { e.world = 4; });
  with("another shard", [](ExpectedAggregate& e) { e.shard = 1; });
  with("another size", [](ExpectedAggregate& e) { e.numel = 31; });
  with("another payload", [](ExpectedAggregate& e) { e.payload = Sha256Of("scaled aggregate"); });
  with("not what I sent", [](ExpectedAggregate& e) { e.receiver_contribution = Sha256Of("mine"); });
  with("a rank beyond the world", [](ExpectedAggregate& e) { e.receiver = 3; });
  for (const auto& [what, e] : wrong) {
    EXPECT_FALSE(CheckAggregateAttestation(e, bytes).ok()) << what;
  }
  // Signed by someone else than the owner it names.
  AggregateStatement forged = Body(owner);
  auto by_other = SignAggregate(forged, other);
  EXPECT_FALSE(by_other.ok()) << "SignAggregate refuses another signer";
  SignedAggregate spoofed = *SignAggregate(Body(owner), owner);
  spoofed.body.aggregate = Sha256Of("scaled aggregate");
  EXPECT_FALSE(VerifyAggregate(spoofed).ok());
}

TEST(AggregateStatementTest, MalformedBodiesAreNotSigned) {
  const net::Identity owner = net::Identity::Generate();
  auto bad = [&](auto change) {
    AggregateStatement s = Body(owner);
    change(s);
    return !SignAggregate(s, owner).ok();
  };
  EXPECT_TRUE(bad([](AggregateStatement& s) { s.job_id.clear(); }));
  EXPECT_TRUE(bad([](AggregateStatement& s) { s.world = 0; }));
  EXPECT_TRUE(bad([](AggregateStatement& s) { s.shard = 3; }));
  EXPECT_TRUE(bad([](AggregateStatement& s) { s.contributions.pop_back(); }));
  EXPECT_TRUE(bad([](AggregateStatement& s) { s.numel = 0; }));
}

TEST(AggregateStatementTest, TwoDifferentSignedStatementsForOneShardAreEquivocation) {
  const net::Identity owner = net::Identity::Generate(), other = net::Identity::Generate();
  const SignedAggregate a = *SignAggregate(Body(owner), owner);
  AggregateStatement changed = Body(owner);
  changed.aggregate = Sha256Of("what the others got");
  const SignedAggregate b = *SignAggregate(changed, owner);
  EXPECT_TRUE(CheckAggregateEquivocation(a, b).ok());
  EXPECT_FALSE(CheckAggregateEquivocation(a, a).ok()) << "the same statement twice";
  AggregateStatement next_attempt = changed;
  next_attempt.attempt = 2;
  EXPECT_FALSE(CheckAggregateEquivocation(a, *SignAggregate(next_attempt, owner)).ok()) << "another attempt";
  AggregateStatement someone_else = Body(other);
  EXPECT_FALSE(CheckAggregateEquivocation(a, *SignAggregate(someone_else, other)).ok()) << "another owner";
  SignedAggregate forged = b;
  forged.signature[0] ^= 1;
  EXPECT_FALSE(CheckAggregateEquivocation(a, forged).ok()) << "a forged second statement";
}

}  // namespace
}  // namespace tributary::verifier
