#include "verifier/chain_ends.h"

#include "verifier/training_state.h"

namespace tributary::verifier {

v1::ChainEnds MakeChainEnds(const StepLeaf& first, const MerkleProof& first_proof, const StepLeaf& last,
                            const MerkleProof& last_proof, const StateHalves& start, const StateHalves& end) {
  v1::ChainEnds e;
  e.set_first_leaf(EncodeLeaf(first));
  e.set_first_proof(EncodeProof(first_proof));
  e.set_last_leaf(EncodeLeaf(last));
  e.set_last_proof(EncodeProof(last_proof));
  e.set_start_parameters(DigestToBytes(start.parameters));
  e.set_start_optimizer(DigestToBytes(start.optimizer));
  e.set_end_parameters(DigestToBytes(end.parameters));
  e.set_end_optimizer(DigestToBytes(end.optimizer));
  return e;
}

Result<CheckedChainEnds> CheckChainEnds(const RoundCommitment& commitment, const v1::ChainEnds& e) {
  auto corrupt = [](const std::string& why) { return Corruption("chain ends: " + why); };
  auto first = DecodeLeaf(e.first_leaf());
  auto first_proof = DecodeProof(e.first_proof());
  auto last = DecodeLeaf(e.last_leaf());
  auto last_proof = DecodeProof(e.last_proof());
  if (!first.ok() || !first_proof.ok() || !last.ok() || !last_proof.ok()) return corrupt("the leaves do not decode");
  if (commitment.leaf_count == 0) return corrupt("the commitment has no leaves");
  if (Status st = CheckOpenedLeaf(commitment, 0, *first, *first_proof); !st.ok()) {
    return corrupt("the first leaf is not committed: " + st.message());
  }
  if (Status st = CheckOpenedLeaf(commitment, commitment.leaf_count - 1, *last, *last_proof); !st.ok()) {
    return corrupt("the last leaf is not committed: " + st.message());
  }
  CheckedChainEnds out;
  auto sp = DigestFromBytes(e.start_parameters());
  auto so = DigestFromBytes(e.start_optimizer());
  auto ep = DigestFromBytes(e.end_parameters());
  auto eo = DigestFromBytes(e.end_optimizer());
  if (!sp.ok() || !so.ok() || !ep.ok() || !eo.ok()) return corrupt("a state half is not a 32-byte digest");
  out.start = {*sp, *so};
  out.end = {*ep, *eo};
  if (StepStateDigest(out.start.parameters, out.start.optimizer) != first->state_before) {
    return corrupt("the first leaf's state is not the one its halves give");
  }
  if (StepStateDigest(out.end.parameters, out.end.optimizer) != last->update) {
    return corrupt("the last leaf's state is not the one its halves give");
  }
  return out;
}

Digest FreshOptimizerDigest() {
  static const Digest fresh = OptimizerDigest(TrainingState{});
  return fresh;
}

}  // namespace tributary::verifier
