#include "verifier/commitment.h"

#include <bit>
#include <cstring>

#include "verifier/detail/encoding.h"

namespace tributary::verifier {
namespace {

constexpr std::string_view kLeafLabel = "tributary.verifier.leaf.v1";
constexpr std::string_view kStateLabel = "tributary.verifier.state.v1";
constexpr std::string_view kCommitLabel = "tributary.verifier.commitment.v1";
constexpr std::string_view kCommitMagic = "TRIBCOMMIT1";
constexpr std::string_view kLeafMagic = "TRIBLEAF1";
constexpr size_t kMaxJobId = 256;
constexpr size_t kMaxClass = 4096;

void PutLeafFields(detail::Writer& w, const StepLeaf& leaf) {
  w.Str(leaf.job_id);
  w.U64(leaf.round);
  w.U64(leaf.step);
  w.Fixed(leaf.state_before);
  w.Fixed(leaf.batch);
  w.Fixed(leaf.update);
  w.U64(leaf.loss_bits);
  w.Str(leaf.determinism_class);
}

std::string SignedBytes(const RoundCommitment& body) {
  return std::string(kCommitLabel) + body.Canonical();
}

Status CheckBody(const RoundCommitment& body) {
  if (body.job_id.empty() || body.job_id.size() > kMaxJobId) {
    return InvalidArgument("commitment needs a job id of 1.." + std::to_string(kMaxJobId) +
                           " bytes");
  }
  if (body.leaf_count == 0) return InvalidArgument("commitment covers no steps");
  if (body.determinism_class.size() > kMaxClass)
    return InvalidArgument("determinism class too long");
  return Status::Ok();
}

}  // namespace

uint64_t LossBits(double loss) { return std::bit_cast<uint64_t>(loss); }
double LossFromBits(uint64_t bits) { return std::bit_cast<double>(bits); }

std::string EncodeLeaf(const StepLeaf& leaf) {
  detail::Writer w;
  w.Raw(kLeafMagic);
  PutLeafFields(w, leaf);
  return std::move(w).bytes();
}

Result<StepLeaf> DecodeLeaf(std::string_view bytes) {
  detail::Reader r(bytes, "step leaf");
  TRIB_RETURN_IF_ERROR(r.Magic(kLeafMagic));
  StepLeaf leaf;
  TRIB_ASSIGN_OR_RETURN(leaf.job_id, r.Str(kMaxJobId));
  TRIB_ASSIGN_OR_RETURN(leaf.round, r.U64());
  TRIB_ASSIGN_OR_RETURN(leaf.step, r.U64());
  TRIB_ASSIGN_OR_RETURN(leaf.state_before, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(leaf.batch, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(leaf.update, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(leaf.loss_bits, r.U64());
  TRIB_ASSIGN_OR_RETURN(leaf.determinism_class, r.Str(kMaxClass));
  TRIB_RETURN_IF_ERROR(r.Done());
  return leaf;
}

Digest LeafHash(const StepLeaf& leaf) {
  detail::Writer w;
  w.Raw(kLeafLabel);
  PutLeafFields(w, leaf);
  return Sha256Of(w.bytes());
}

Digest StepStateDigest(const Digest& parameters, const Digest& optimizer) {
  detail::Writer w;
  w.Raw(kStateLabel);
  w.Fixed(parameters);
  w.Fixed(optimizer);
  return Sha256Of(w.bytes());
}

Result<MerkleTree> BuildRoundTree(const std::vector<StepLeaf>& leaves) {
  if (leaves.empty()) return InvalidArgument("a round needs at least one step leaf");
  std::vector<Digest> digests;
  digests.reserve(leaves.size());
  for (size_t i = 0; i < leaves.size(); ++i) {
    const StepLeaf& leaf = leaves[i];
    if (leaf.step != i || leaf.job_id != leaves[0].job_id || leaf.round != leaves[0].round ||
        leaf.determinism_class != leaves[0].determinism_class) {
      return InvalidArgument("leaf " + std::to_string(i) +
                             " is out of order or belongs to another job, round or class");
    }
    digests.push_back(LeafHash(leaf));
  }
  return MerkleTree::Build(std::move(digests));
}

std::string RoundCommitment::Canonical() const {
  detail::Writer w;
  w.Raw(kCommitMagic);
  w.Str(job_id);
  w.Fixed(peer);
  w.U64(round);
  w.Fixed(root);
  w.U64(leaf_count);
  w.Str(determinism_class);
  w.Fixed(pseudo_gradient);
  return std::move(w).bytes();
}

Result<SignedCommitment> SignCommitment(const RoundCommitment& body,
                                        const net::Identity& identity) {
  TRIB_RETURN_IF_ERROR(CheckBody(body));
  if (identity.public_key() != body.peer) {
    return InvalidArgument("commitment names peer " + net::ShortKey(body.peer) +
                           " but would be signed by " + net::ShortKey(identity.public_key()));
  }
  return SignedCommitment{body, identity.Sign(SignedBytes(body))};
}

Status VerifyCommitment(const SignedCommitment& c) {
  Status body = CheckBody(c.body);
  if (!body.ok()) return Corruption("malformed commitment: " + body.message());
  if (!net::VerifySignature(c.body.peer, SignedBytes(c.body), c.signature)) {
    return Corruption("commitment signature of peer " + net::ShortKey(c.body.peer) + " for round " +
                      std::to_string(c.body.round) + " does not verify");
  }
  return Status::Ok();
}

std::string EncodeCommitment(const SignedCommitment& c) {
  std::string out = c.body.Canonical();
  out += net::SignatureToBytes(c.signature);
  return out;
}

Result<SignedCommitment> DecodeCommitment(std::string_view bytes) {
  detail::Reader r(bytes, "round commitment");
  TRIB_RETURN_IF_ERROR(r.Magic(kCommitMagic));
  SignedCommitment c;
  TRIB_ASSIGN_OR_RETURN(c.body.job_id, r.Str(kMaxJobId));
  TRIB_ASSIGN_OR_RETURN(c.body.peer, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(c.body.round, r.U64());
  TRIB_ASSIGN_OR_RETURN(c.body.root, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(c.body.leaf_count, r.U64());
  TRIB_ASSIGN_OR_RETURN(c.body.determinism_class, r.Str(kMaxClass));
  TRIB_ASSIGN_OR_RETURN(c.body.pseudo_gradient, r.Fixed<32>());
  TRIB_ASSIGN_OR_RETURN(c.signature, r.Fixed<64>());
  TRIB_RETURN_IF_ERROR(r.Done());
  return c;
}

bool IsEquivocation(const SignedCommitment& a, const SignedCommitment& b) {
  return a.body.peer == b.body.peer && a.body.job_id == b.body.job_id &&
         a.body.round == b.body.round && !(a.body == b.body) && VerifyCommitment(a).ok() &&
         VerifyCommitment(b).ok();
}

Status CheckOpenedLeaf(const RoundCommitment& c, uint64_t index, const StepLeaf& leaf,
                       const MerkleProof& proof) {
  const std::string where = "opened leaf " + std::to_string(index) + " of peer " +
                            net::ShortKey(c.peer) + " round " + std::to_string(c.round);
  if (index >= c.leaf_count) return Corruption(where + ": step beyond the committed count");
  if (leaf.step != index)
    return Corruption(where + ": leaf names step " + std::to_string(leaf.step));
  if (leaf.job_id != c.job_id || leaf.round != c.round) {
    return Corruption(where + ": leaf belongs to another job or round");
  }
  if (leaf.determinism_class != c.determinism_class) {
    return Corruption(where + ": leaf names another determinism class");
  }
  if (proof.leaf_count != c.leaf_count || !VerifyProof(c.root, LeafHash(leaf), index, proof)) {
    return Corruption(where + ": Merkle proof does not verify against the committed root");
  }
  return Status::Ok();
}

}  // namespace tributary::verifier
