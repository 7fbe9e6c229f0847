// Merkle tree over one round's step leaves (SHA-256), with proofs of inclusion.
//
// Hashing is domain-separated so that no value can play two roles:
//   leaf node   = SHA-256(0x00 ‖ leaf digest)
//   inner node  = SHA-256(0x01 ‖ left ‖ right)
//   root        = SHA-256(0x02 ‖ u64 leaf count ‖ top node)
// A level with an odd number of nodes promotes its last node unchanged to the next level (it is
// never paired with itself, which would let [a, b, c] and [a, b, c, c] share a root, as in
// CVE-2012-2459). The root binds the leaf count, so a proof is only valid for the count it was
// made for, and the path length is fixed by (index, count): a truncated or padded proof fails.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"

namespace tributary::verifier {

struct MerkleProof {
  uint64_t leaf_count = 0;
  std::vector<Digest> siblings;  // bottom-up; levels where the node had no sibling are skipped
};

class MerkleTree {
 public:
  // InvalidArgument for an empty leaf list (a round always has at least one step).
  static Result<MerkleTree> Build(std::vector<Digest> leaves);

  const Digest& root() const { return root_; }
  uint64_t leaf_count() const { return levels_.front().size(); }
  const Digest& leaf(uint64_t index) const { return leaves_[index]; }
  // InvalidArgument if index >= leaf_count().
  Result<MerkleProof> Prove(uint64_t index) const;

 private:
  MerkleTree() = default;
  std::vector<Digest> leaves_;               // the leaf digests as given
  std::vector<std::vector<Digest>> levels_;  // levels_[0] = leaf nodes, back() = {top}
  Digest root_{};
};

// Root of `leaves` without keeping the tree. InvalidArgument if empty.
Result<Digest> MerkleRoot(const std::vector<Digest>& leaves);

// True iff `proof` shows that `leaf` is leaf number `index` of the tree whose root is `root`.
// False (never an error) for any malformed proof: index out of range, wrong path length.
bool VerifyProof(const Digest& root, const Digest& leaf, uint64_t index, const MerkleProof& proof);

// Canonical bytes of a proof (u64 count, u64 path length, siblings) and back; Decode is strict.
std::string EncodeProof(const MerkleProof& proof);
Result<MerkleProof> DecodeProof(std::string_view bytes);

}  // namespace tributary::verifier
