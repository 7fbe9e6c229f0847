#include "verifier/commitment.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "verifier/determinism.h"

namespace tributary::verifier {
namespace {

const std::string kClass = LocalDeterminismClass(1).Canonical();

StepLeaf Leaf(uint64_t step) {
  StepLeaf leaf;
  leaf.job_id = "job-1";
  leaf.round = 3;
  leaf.step = step;
  leaf.state_before = Sha256Of("state " + std::to_string(step));
  leaf.batch = Sha256Of("batch " + std::to_string(step));
  leaf.update = Sha256Of("state " + std::to_string(step + 1));
  leaf.loss_bits = LossBits(4.25 - 0.01 * step);
  leaf.determinism_class = kClass;
  return leaf;
}

RoundCommitment Body(const net::Identity& id) {
  RoundCommitment c;
  c.job_id = "job-1";
  c.peer = id.public_key();
  c.round = 3;
  c.root = Sha256Of("root");
  c.leaf_count = 50;
  c.determinism_class = kClass;
  c.pseudo_gradient = Sha256Of("delta");
  return c;
}

TEST(StepLeaf, HashCoversEveryField) {
  const StepLeaf base = Leaf(4);
  const Digest h = LeafHash(base);
  const std::vector<std::function<void(StepLeaf&)>> edits = {
      [](StepLeaf& l) { l.job_id += "x"; },
      [](StepLeaf& l) { l.round++; },
      [](StepLeaf& l) { l.step++; },
      [](StepLeaf& l) { l.state_before[0] ^= 1; },
      [](StepLeaf& l) { l.batch[5] ^= 1; },
      [](StepLeaf& l) { l.update[31] ^= 1; },
      [](StepLeaf& l) { l.loss_bits ^= 1; },  // one ulp of the loss
      [](StepLeaf& l) { l.determinism_class += "x"; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    StepLeaf changed = base;
    edits[i](changed);
    EXPECT_NE(LeafHash(changed), h) << "edit " << i;
  }
  EXPECT_EQ(LeafHash(Leaf(4)), h);
}

TEST(StepLeaf, LengthPrefixesPreventFieldShifting) {
  StepLeaf a = Leaf(0), b = Leaf(0);
  a.job_id = "ab";
  a.determinism_class = "c";
  b.job_id = "a";
  b.determinism_class = "bc";
  EXPECT_NE(LeafHash(a), LeafHash(b));
}

TEST(StepLeaf, EncodingRoundTripsAndIsStrict) {
  const StepLeaf leaf = Leaf(9);
  const std::string bytes = EncodeLeaf(leaf);
  auto back = DecodeLeaf(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, leaf);
  EXPECT_FALSE(DecodeLeaf(bytes.substr(0, bytes.size() - 3)).ok());
  EXPECT_FALSE(DecodeLeaf(bytes + '\0').ok());
}

TEST(StepLeaf, LossBitsRoundTripExactly) {
  for (double v : {0.0, -0.0, 1.0 / 3.0, 4.1743, 1e-300}) {
    EXPECT_EQ(LossBits(LossFromBits(LossBits(v))), LossBits(v));
  }
  EXPECT_NE(LossBits(0.0), LossBits(-0.0));
}

TEST(RoundTree, BuildsFromOrderedLeavesAndProvesThem) {
  std::vector<StepLeaf> leaves;
  for (uint64_t i = 0; i < 11; ++i) leaves.push_back(Leaf(i));
  auto tree = BuildRoundTree(leaves);
  ASSERT_TRUE(tree.ok());
  RoundCommitment c;
  c.job_id = "job-1";
  c.round = 3;
  c.root = tree->root();
  c.leaf_count = leaves.size();
  c.determinism_class = kClass;
  for (uint64_t i = 0; i < leaves.size(); ++i) {
    EXPECT_TRUE(CheckOpenedLeaf(c, i, leaves[i], *tree->Prove(i)).ok());
  }
  StepLeaf altered = leaves[4];
  altered.loss_bits ^= 1;
  EXPECT_EQ(CheckOpenedLeaf(c, 4, altered, *tree->Prove(4)).code(), StatusCode::kCorruption);
  EXPECT_FALSE(CheckOpenedLeaf(c, 5, leaves[4], *tree->Prove(4)).ok());
  EXPECT_FALSE(CheckOpenedLeaf(c, 11, leaves[4], *tree->Prove(4)).ok());

  auto shuffled = leaves;
  std::swap(shuffled[1], shuffled[2]);
  EXPECT_FALSE(BuildRoundTree(shuffled).ok());
  auto mixed = leaves;
  mixed[3].round = 4;
  EXPECT_FALSE(BuildRoundTree(mixed).ok());
}

TEST(RoundCommitment, SignsAndVerifies) {
  const net::Identity id = net::Identity::Generate();
  auto signed_c = SignCommitment(Body(id), id);
  ASSERT_TRUE(signed_c.ok()) << signed_c.status().ToString();
  EXPECT_TRUE(VerifyCommitment(*signed_c).ok());
}

TEST(RoundCommitment, RejectsForgedSignatureAndEveryAlteredField) {
  const net::Identity id = net::Identity::Generate();
  const SignedCommitment good = *SignCommitment(Body(id), id);

  SignedCommitment forged = good;
  forged.signature[10] ^= 0x04;
  EXPECT_EQ(VerifyCommitment(forged).code(), StatusCode::kCorruption);

  // Someone else signs a body naming `id`: the signature must be checked against body.peer.
  const net::Identity mallory = net::Identity::Generate();
  SignedCommitment impostor{
      good.body,
      mallory.Sign(std::string("tributary.verifier.commitment.v1") + good.body.Canonical())};
  EXPECT_FALSE(VerifyCommitment(impostor).ok());

  const std::vector<std::function<void(RoundCommitment&)>> edits = {
      [](RoundCommitment& c) { c.job_id = "job-2"; },
      [&](RoundCommitment& c) { c.peer = mallory.public_key(); },
      [](RoundCommitment& c) { c.round++; },
      [](RoundCommitment& c) { c.root[7] ^= 1; },
      [](RoundCommitment& c) { c.leaf_count++; },
      [](RoundCommitment& c) { c.determinism_class = "tributary.dclass.v1;device=cuda:x"; },
      [](RoundCommitment& c) { c.pseudo_gradient[0] ^= 1; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    SignedCommitment changed = good;
    edits[i](changed.body);
    EXPECT_FALSE(VerifyCommitment(changed).ok()) << "edit " << i;
  }
}

TEST(RoundCommitment, RefusesToSignForAnotherPeerOrMalformedBody) {
  const net::Identity id = net::Identity::Generate();
  const net::Identity other = net::Identity::Generate();
  EXPECT_EQ(SignCommitment(Body(id), other).status().code(), StatusCode::kInvalidArgument);
  RoundCommitment empty = Body(id);
  empty.leaf_count = 0;
  EXPECT_FALSE(SignCommitment(empty, id).ok());
  RoundCommitment nojob = Body(id);
  nojob.job_id.clear();
  EXPECT_FALSE(SignCommitment(nojob, id).ok());
}

TEST(RoundCommitment, EncodingRoundTripsAndTamperingIsCaught) {
  const net::Identity id = net::Identity::Generate();
  const SignedCommitment good = *SignCommitment(Body(id), id);
  const std::string bytes = EncodeCommitment(good);
  auto back = DecodeCommitment(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->body, good.body);
  EXPECT_EQ(back->signature, good.signature);
  EXPECT_TRUE(VerifyCommitment(*back).ok());
  EXPECT_EQ(EncodeCommitment(*back), bytes) << "canonical: decode then encode is the identity";
  // Every single-byte change either fails to decode or fails to verify.
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    auto decoded = DecodeCommitment(bad);
    EXPECT_TRUE(!decoded.ok() || !VerifyCommitment(*decoded).ok()) << "byte " << i;
  }
  EXPECT_FALSE(DecodeCommitment(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(DecodeCommitment(bytes + "x").ok());
}

TEST(RoundCommitment, TwoSignedStoriesAreEquivocation) {
  const net::Identity id = net::Identity::Generate();
  const SignedCommitment a = *SignCommitment(Body(id), id);
  RoundCommitment other = Body(id);
  other.root = Sha256Of("another root");
  const SignedCommitment b = *SignCommitment(other, id);
  EXPECT_TRUE(IsEquivocation(a, b));
  EXPECT_FALSE(IsEquivocation(a, a));
  RoundCommitment next_round = Body(id);
  next_round.round++;
  EXPECT_FALSE(IsEquivocation(a, *SignCommitment(next_round, id)));
  SignedCommitment unsigned_b = b;
  unsigned_b.signature[0] ^= 1;
  EXPECT_FALSE(IsEquivocation(a, unsigned_b)) << "a forged second story proves nothing";
}

TEST(DeterminismClass, CanonicalFormRoundTrips) {
  const DeterminismClass local = LocalDeterminismClass(2);
  EXPECT_TRUE(local.bitwise());
  EXPECT_EQ(local.threads, 2);
  EXPECT_FALSE(local.torch.empty());
  EXPECT_FALSE(local.isa.empty());
  auto parsed = DeterminismClass::Parse(local.Canonical());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->Canonical(), local.Canonical());
  EXPECT_NE(LocalDeterminismClass(1).Canonical(), local.Canonical())
      << "threads are part of the class";
  DeterminismClass gpu = local;
  gpu.device = "cuda:H100:550.54:12.4";
  EXPECT_FALSE(gpu.bitwise());
  EXPECT_FALSE(DeterminismClass::Parse("tributary.dclass.v1;device=cpu").ok());
  EXPECT_FALSE(DeterminismClass::Parse(local.Canonical() + ";extra=1").ok());
  std::string zero_threads = local.Canonical();
  zero_threads.replace(zero_threads.find("threads=2"), 9, "threads=0");
  EXPECT_FALSE(DeterminismClass::Parse(zero_threads).ok());
}

}  // namespace
}  // namespace tributary::verifier
