#include "verifier/merkle.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tributary::verifier {
namespace {

std::vector<Digest> Leaves(uint64_t n) {
  std::vector<Digest> out;
  for (uint64_t i = 0; i < n; ++i) out.push_back(Sha256Of("leaf " + std::to_string(i)));
  return out;
}

class MerkleSizes : public ::testing::TestWithParam<uint64_t> {};

TEST_P(MerkleSizes, EveryProofVerifiesOnlyForItsLeafAndIndex) {
  const uint64_t n = GetParam();
  const auto leaves = Leaves(n);
  auto tree = MerkleTree::Build(leaves);
  ASSERT_TRUE(tree.ok());
  EXPECT_EQ(tree->leaf_count(), n);
  for (uint64_t i = 0; i < n; ++i) {
    auto proof = tree->Prove(i);
    ASSERT_TRUE(proof.ok());
    EXPECT_TRUE(VerifyProof(tree->root(), leaves[i], i, *proof)) << "leaf " << i << " of " << n;
    // Wrong leaf.
    EXPECT_FALSE(VerifyProof(tree->root(), Sha256Of("forged"), i, *proof));
    // Wrong index: the same proof at every other position.
    for (uint64_t j = 0; j < n; ++j) {
      if (j != i) {
        EXPECT_FALSE(VerifyProof(tree->root(), leaves[i], j, *proof)) << i << " at " << j;
      }
    }
    EXPECT_FALSE(VerifyProof(tree->root(), leaves[i], n, *proof)) << "index past the end";
    // Wrong sibling: flip one bit of each sibling in turn.
    for (size_t s = 0; s < proof->siblings.size(); ++s) {
      MerkleProof bad = *proof;
      bad.siblings[s][s % 32] ^= 0x01;
      EXPECT_FALSE(VerifyProof(tree->root(), leaves[i], i, bad));
    }
    // Truncated and padded paths.
    if (!proof->siblings.empty()) {
      MerkleProof truncated = *proof;
      truncated.siblings.pop_back();
      EXPECT_FALSE(VerifyProof(tree->root(), leaves[i], i, truncated));
    }
    MerkleProof padded = *proof;
    padded.siblings.push_back(leaves[0]);
    EXPECT_FALSE(VerifyProof(tree->root(), leaves[i], i, padded));
    // A proof claiming another leaf count.
    MerkleProof recount = *proof;
    recount.leaf_count = n + 1;
    EXPECT_FALSE(VerifyProof(tree->root(), leaves[i], i, recount));
    // Wrong root.
    Digest other_root = tree->root();
    other_root[0] ^= 0x80;
    EXPECT_FALSE(VerifyProof(other_root, leaves[i], i, *proof));
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, MerkleSizes,
                         ::testing::Values(1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33, 64, 100));

TEST(Merkle, EmptyTreeIsRefused) {
  EXPECT_EQ(MerkleTree::Build({}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(MerkleRoot({}).ok());
}

TEST(Merkle, ProveRefusesIndexOutOfRange) {
  auto tree = MerkleTree::Build(Leaves(5));
  ASSERT_TRUE(tree.ok());
  EXPECT_EQ(tree->Prove(5).status().code(), StatusCode::kInvalidArgument);
}

TEST(Merkle, RootDependsOnEveryLeafOrderAndCount) {
  const auto leaves = Leaves(7);
  const Digest root = *MerkleRoot(leaves);
  for (size_t i = 0; i < leaves.size(); ++i) {
    auto changed = leaves;
    changed[i][31] ^= 1;
    EXPECT_NE(*MerkleRoot(changed), root) << i;
  }
  auto swapped = leaves;
  std::swap(swapped[2], swapped[3]);
  EXPECT_NE(*MerkleRoot(swapped), root);
  // The odd last node is promoted, never duplicated: [a..g] and [a..g, g] differ.
  auto duplicated = leaves;
  duplicated.push_back(leaves.back());
  EXPECT_NE(*MerkleRoot(duplicated), root);
}

TEST(Merkle, InnerNodeCannotPoseAsLeaf) {
  // A two-leaf tree's only inner node, presented as a one-leaf tree's leaf, must not collide.
  const auto leaves = Leaves(2);
  auto two = MerkleTree::Build(leaves);
  auto proof = two->Prove(0);
  ASSERT_TRUE(proof.ok());
  ASSERT_EQ(proof->siblings.size(), 1u);
  MerkleProof empty{1, {}};
  EXPECT_FALSE(VerifyProof(two->root(), leaves[0], 0, empty));
}

TEST(Merkle, ProofEncodingRoundTripsAndIsStrict) {
  auto tree = MerkleTree::Build(Leaves(13));
  auto proof = tree->Prove(6);
  const std::string bytes = EncodeProof(*proof);
  auto back = DecodeProof(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->leaf_count, proof->leaf_count);
  EXPECT_EQ(back->siblings, proof->siblings);
  EXPECT_EQ(DecodeProof(bytes.substr(0, bytes.size() - 1)).status().code(),
            StatusCode::kCorruption);
  EXPECT_EQ(DecodeProof(bytes + "x").status().code(), StatusCode::kCorruption);
  EXPECT_EQ(DecodeProof("garbage").status().code(), StatusCode::kCorruption);
}

}  // namespace
}  // namespace tributary::verifier
