#include "verifier/chain_ends.h"

#include <gtest/gtest.h>

#include "verifier/training_state.h"

namespace tributary::verifier {
namespace {

constexpr uint64_t kSteps = 5;

// A committed round whose step 0 starts from `start` and whose last step ends at `end`.
struct Round {
  net::Identity id = net::Identity::Generate();
  StateHalves start{Sha256Of("θ_r"), FreshOptimizerDigest()};
  StateHalves end{Sha256Of("θ end"), Sha256Of("moments end")};
  std::vector<StepLeaf> leaves;
  std::optional<MerkleTree> tree;
  RoundCommitment commitment;

  explicit Round(const std::string& data = "shard 0") {
    Digest state = StepStateDigest(start.parameters, start.optimizer);
    for (uint64_t t = 0; t < kSteps; ++t) {
      StepLeaf leaf;
      leaf.job_id = "job";
      leaf.round = 3;
      leaf.step = t;
      leaf.state_before = state;
      leaf.batch = Sha256Of(data + " batch " + std::to_string(t));
      state = t + 1 == kSteps ? StepStateDigest(end.parameters, end.optimizer) : Sha256Of(DigestToBytes(state));
      leaf.update = state;
      leaf.determinism_class = "cpu-test";
      leaves.push_back(leaf);
    }
    tree = BuildRoundTree(leaves).value();
    commitment = {"job", id.public_key(), 3, tree->root(), kSteps, "cpu-test", {}};
  }
  v1::ChainEnds Ends() const {
    return MakeChainEnds(leaves.front(), *tree->Prove(0), leaves.back(), *tree->Prove(kSteps - 1), start, end);
  }
};

TEST(ChainEnds, TheHonestEndsCheckAndGiveBackTheirHalves) {
  const Round r;
  auto checked = CheckChainEnds(r.commitment, r.Ends());
  ASSERT_TRUE(checked.ok()) << checked.status().ToString();
  EXPECT_EQ(checked->start, r.start);
  EXPECT_EQ(checked->end, r.end);
}

// A prover can name only the halves its committed leaves hash to, and only its committed leaves
// at the two ends.
TEST(ChainEnds, HalvesLeavesAndProofsOtherThanTheCommittedOnesFail) {
  const Round r;
  auto fails = [&](const v1::ChainEnds& e, const std::string& why) {
    auto checked = CheckChainEnds(r.commitment, e);
    EXPECT_FALSE(checked.ok()) << why;
    if (!checked.ok()) EXPECT_EQ(checked.status().code(), StatusCode::kCorruption) << why;
  };
  v1::ChainEnds e = r.Ends();
  e.set_start_optimizer(DigestToBytes(Sha256Of("moments it would rather have")));
  fails(e, "another optimiser half at the start");
  e = r.Ends();
  e.set_start_parameters(DigestToBytes(Sha256Of("another θ")));
  fails(e, "another θ half at the start");
  e = r.Ends();
  e.set_end_optimizer(DigestToBytes(Sha256Of("other end moments")));
  fails(e, "another optimiser half at the end");
  e = r.Ends();
  e.set_start_optimizer("short");
  fails(e, "a half that is not a digest");
  e = r.Ends();
  e.set_first_leaf(EncodeLeaf(r.leaves[1]));
  e.set_first_proof(EncodeProof(*r.tree->Prove(1)));
  fails(e, "step 1 as the first leaf");
  e = r.Ends();
  e.set_last_leaf(EncodeLeaf(r.leaves[kSteps - 2]));
  e.set_last_proof(EncodeProof(*r.tree->Prove(kSteps - 2)));
  fails(e, "the step before the last as the last leaf");
  e = r.Ends();
  e.set_first_leaf("garbage");
  fails(e, "a leaf that does not decode");
  const Round other("shard 1");  // another prover's round: its leaves are not under this root
  fails(other.Ends(), "another commitment's leaves");
}

TEST(ChainEnds, AFreshOptimiserIsOneThatHasTakenNoStep) {
  EXPECT_EQ(FreshOptimizerDigest(), OptimizerDigest(TrainingState{}));
  TrainingState stepped;
  stepped.adam_step = 1;
  stepped.exp_avg = {0.0f};
  stepped.exp_avg_sq = {0.0f};
  EXPECT_NE(FreshOptimizerDigest(), OptimizerDigest(stepped));
}

}  // namespace
}  // namespace tributary::verifier
