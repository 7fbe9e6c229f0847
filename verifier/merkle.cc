#include "verifier/merkle.h"

#include "verifier/detail/encoding.h"

namespace tributary::verifier {
namespace {

constexpr uint8_t kLeafTag = 0x00;
constexpr uint8_t kNodeTag = 0x01;
constexpr uint8_t kRootTag = 0x02;
// A path has at most 64 levels for any u64 count; anything longer is hostile.
constexpr uint64_t kMaxPath = 64;

std::span<const std::byte> Bytes(const Digest& d) {
  return std::as_bytes(std::span<const uint8_t>(d.data(), d.size()));
}

Digest LeafNode(const Digest& leaf) {
  Sha256 h;
  const std::byte tag{kLeafTag};
  h.Update(std::span<const std::byte>(&tag, 1));
  h.Update(Bytes(leaf));
  return h.Finish();
}

Digest InnerNode(const Digest& left, const Digest& right) {
  Sha256 h;
  const std::byte tag{kNodeTag};
  h.Update(std::span<const std::byte>(&tag, 1));
  h.Update(Bytes(left));
  h.Update(Bytes(right));
  return h.Finish();
}

Digest RootOf(uint64_t count, const Digest& top) {
  Sha256 h;
  const std::byte tag{kRootTag};
  h.Update(std::span<const std::byte>(&tag, 1));
  h.UpdateU64(count);
  h.Update(Bytes(top));
  return h.Finish();
}

std::vector<Digest> NextLevel(const std::vector<Digest>& level) {
  std::vector<Digest> next;
  next.reserve((level.size() + 1) / 2);
  for (size_t i = 0; i + 1 < level.size(); i += 2)
    next.push_back(InnerNode(level[i], level[i + 1]));
  if (level.size() % 2 == 1) next.push_back(level.back());  // promoted, not duplicated
  return next;
}

}  // namespace

Result<MerkleTree> MerkleTree::Build(std::vector<Digest> leaves) {
  if (leaves.empty()) return InvalidArgument("a Merkle tree needs at least one leaf");
  MerkleTree tree;
  std::vector<Digest> level;
  level.reserve(leaves.size());
  for (const Digest& leaf : leaves) level.push_back(LeafNode(leaf));
  tree.leaves_ = std::move(leaves);
  tree.levels_.push_back(std::move(level));
  while (tree.levels_.back().size() > 1) tree.levels_.push_back(NextLevel(tree.levels_.back()));
  tree.root_ = RootOf(tree.leaves_.size(), tree.levels_.back().front());
  return tree;
}

Result<MerkleProof> MerkleTree::Prove(uint64_t index) const {
  if (index >= leaf_count()) {
    return InvalidArgument("leaf " + std::to_string(index) + " is not in a tree of " +
                           std::to_string(leaf_count()));
  }
  MerkleProof proof;
  proof.leaf_count = leaf_count();
  for (size_t depth = 0; depth + 1 < levels_.size(); ++depth) {
    const std::vector<Digest>& level = levels_[depth];
    const uint64_t sibling = index ^ 1;
    if (sibling < level.size()) proof.siblings.push_back(level[sibling]);
    index /= 2;
  }
  return proof;
}

Result<Digest> MerkleRoot(const std::vector<Digest>& leaves) {
  TRIB_ASSIGN_OR_RETURN(MerkleTree tree, MerkleTree::Build(leaves));
  return tree.root();
}

bool VerifyProof(const Digest& root, const Digest& leaf, uint64_t index, const MerkleProof& proof) {
  const uint64_t count = proof.leaf_count;
  if (count == 0 || index >= count || proof.siblings.size() > kMaxPath) return false;
  Digest node = LeafNode(leaf);
  size_t used = 0;
  // Walk the same level sizes Build produced: a node has a sibling unless it is the last,
  // unpaired node of an odd-sized level.
  for (uint64_t width = count; width > 1; width = (width + 1) / 2) {
    const uint64_t sibling = index ^ 1;
    if (sibling < width) {
      if (used == proof.siblings.size()) return false;  // truncated
      const Digest& other = proof.siblings[used++];
      node = (index % 2 == 0) ? InnerNode(node, other) : InnerNode(other, node);
    }
    index /= 2;
  }
  if (used != proof.siblings.size()) return false;  // padded
  return RootOf(count, node) == root;
}

std::string EncodeProof(const MerkleProof& proof) {
  detail::Writer w;
  w.Raw("TRIBPROOF1");
  w.U64(proof.leaf_count);
  w.U64(proof.siblings.size());
  for (const Digest& d : proof.siblings) w.Fixed(d);
  return std::move(w).bytes();
}

Result<MerkleProof> DecodeProof(std::string_view bytes) {
  detail::Reader r(bytes, "Merkle proof");
  TRIB_RETURN_IF_ERROR(r.Magic("TRIBPROOF1"));
  MerkleProof proof;
  TRIB_ASSIGN_OR_RETURN(proof.leaf_count, r.U64());
  TRIB_ASSIGN_OR_RETURN(uint64_t n, r.U64());
  if (n > kMaxPath) return Corruption("Merkle proof is longer than any tree allows");
  for (uint64_t i = 0; i < n; ++i) {
    TRIB_ASSIGN_OR_RETURN(Digest d, r.Fixed<32>());
    proof.siblings.push_back(d);
  }
  TRIB_RETURN_IF_ERROR(r.Done());
  return proof;
}

}  // namespace tributary::verifier
