#include "verifier/dispute.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace tributary::verifier {
namespace {

// A toy deterministic "training": the state is a digest, a step hashes (state, batch). It has the
// shape that matters to disputes (chained states, per-step batches, a loss) at no cost.
const std::string kClass =
    "tributary.dclass.v1;device=cpu;torch=t;threads=1;blas=b;core=c;isa=i;env=";

Digest Batch(uint64_t t) { return Sha256Of("batch " + std::to_string(t)); }
Digest Start() { return Sha256Of("round start"); }

Digest Step(const Digest& state, const Digest& batch) {
  Sha256 h;
  h.Update(std::as_bytes(std::span<const uint8_t>(state)));
  h.Update(std::as_bytes(std::span<const uint8_t>(batch)));
  return h.Finish();
}

StepLeaf MakeLeaf(uint64_t t, const Digest& before, const Digest& after) {
  StepLeaf leaf;
  leaf.job_id = "job";
  leaf.round = 2;
  leaf.step = t;
  leaf.state_before = before;
  leaf.batch = Batch(t);
  leaf.update = after;
  leaf.loss_bits = LossBits(static_cast<double>(after[0]) / 64.0);
  leaf.determinism_class = kClass;
  return leaf;
}

// Honest trajectory, or one that goes wrong at `fake_from` and continues honestly from the wrong
// state (a persistent divergence, as when a step is skipped or its update scaled).
std::vector<StepLeaf> Trajectory(uint64_t steps, int64_t fake_from = -1) {
  std::vector<StepLeaf> leaves;
  Digest state = Start();
  for (uint64_t t = 0; t < steps; ++t) {
    Digest next = static_cast<int64_t>(t) == fake_from ? Sha256Of("skipped " + std::to_string(t))
                                                       : Step(state, Batch(t));
    leaves.push_back(MakeLeaf(t, state, next));
    state = next;
  }
  return leaves;
}

// The referee's replay: recompute step t from the state the prover's leaf names.
Result<ReplayedStep> ToyReplay(const StepLeaf& leaf) {
  const Digest after = Step(leaf.state_before, Batch(leaf.step));
  const StepLeaf honest = MakeLeaf(leaf.step, leaf.state_before, after);
  return ReplayedStep{honest.state_before, honest.batch, honest.update, honest.loss_bits};
}

struct Prover {
  net::Identity id = net::Identity::Generate();
  std::vector<StepLeaf> leaves;
  MerkleTree tree = *MerkleTree::Build({Digest{}});
  SignedCommitment commit;

  explicit Prover(std::vector<StepLeaf> l) : leaves(std::move(l)) {
    tree = *BuildRoundTree(leaves);
    RoundCommitment body{"job",  id.public_key(), 2, tree.root(), leaves.size(),
                         kClass, Sha256Of("d")};
    commit = *SignCommitment(body, id);
  }
  LeafOpener Opener() const {
    return [this](uint64_t t) -> Result<OpenedLeaf> {
      TRIB_ASSIGN_OR_RETURN(MerkleProof proof, tree.Prove(t));
      return OpenedLeaf{leaves.at(t), proof};
    };
  }
};

LeafRecomputer Recomputer(const std::vector<StepLeaf>& mine, uint64_t* calls) {
  return [&mine, calls](uint64_t t) -> Result<StepLeaf> {
    ++*calls;
    return mine.at(t);
  };
}

uint64_t CeilLog2(uint64_t n) {
  return n <= 1 ? 0 : static_cast<uint64_t>(std::ceil(std::log2(n)));
}

class BisectAllPositions : public ::testing::TestWithParam<uint64_t> {};

TEST_P(BisectAllPositions, FindsFirstDivergentStepWithinLogReplays) {
  const uint64_t T = GetParam();
  const auto honest = Trajectory(T);
  for (uint64_t d = 0; d < T; ++d) {
    const Prover prover(Trajectory(T, static_cast<int64_t>(d)));
    uint64_t calls = 0;
    auto result = Bisect(prover.commit.body, prover.Opener(), Recomputer(honest, &calls));
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->outcome, BisectionOutcome::kDivergence) << "T=" << T << " d=" << d;
    EXPECT_EQ(result->step, d) << "T=" << T;
    EXPECT_LE(result->recomputations, CeilLog2(T) + 1) << "T=" << T << " d=" << d;
    EXPECT_EQ(result->recomputations, calls);
    ASSERT_TRUE(result->prover.has_value());
    EXPECT_EQ(result->prover->leaf, prover.leaves[d]);
    EXPECT_EQ(*result->challenger, honest[d]);
    EXPECT_EQ(result->agreed.has_value(), d > 0);
    if (d > 0) {
      EXPECT_EQ(result->agreed->leaf, honest[d - 1]);
    }

    // From a sampled step known to mismatch (any step at or after d), the same answer.
    const uint64_t sampled = d + (T - 1 - d) / 2;
    calls = 0;
    auto from_sample =
        Bisect(prover.commit.body, prover.Opener(), Recomputer(honest, &calls), sampled);
    ASSERT_TRUE(from_sample.ok());
    EXPECT_EQ(from_sample->step, d);
    EXPECT_LE(from_sample->recomputations, CeilLog2(sampled + 1) + 1);

    // The referee replays just that step and convicts the prover.
    auto verdict = Referee(prover.commit, net::Identity::Generate().public_key(), *result,
                           ToyReplay, {.chained_states = true, .round_start_state = Start()});
    ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
    EXPECT_EQ(verdict->ruling, Ruling::kProverGuilty) << verdict->reason;
    EXPECT_EQ(verdict->guilty, prover.id.public_key());
    EXPECT_EQ(verdict->replays, 1u);
    EXPECT_FALSE(verdict->accuser_also_wrong);
  }
}

INSTANTIATE_TEST_SUITE_P(T, BisectAllPositions, ::testing::Values(1, 2, 7, 64, 100));

TEST(Bisect, HonestProverNoDivergenceAndFalseAccusation) {
  const auto honest = Trajectory(64);
  const Prover prover(honest);
  uint64_t calls = 0;
  auto none = Bisect(prover.commit.body, prover.Opener(), Recomputer(honest, &calls));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->outcome, BisectionOutcome::kNoDivergence);
  EXPECT_EQ(calls, 1u);
  const net::PublicKey accuser = net::Identity::Generate().public_key();
  auto verdict = Referee(prover.commit, accuser, *none, ToyReplay);
  ASSERT_TRUE(verdict.ok());
  EXPECT_EQ(verdict->ruling, Ruling::kAccuserGuilty);
  EXPECT_EQ(verdict->guilty, accuser);
  EXPECT_EQ(verdict->replays, 0u);

  // A malicious accuser whose "recomputation" goes wrong at step 20: bisection finds 20, and the
  // referee's replay reproduces the *prover's* leaf, so the accuser pays.
  const auto lies = Trajectory(64, 20);
  auto found = Bisect(prover.commit.body, prover.Opener(), Recomputer(lies, &calls), 40);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->step, 20u);
  auto ruled = Referee(prover.commit, accuser, *found, ToyReplay, {.round_start_state = Start()});
  ASSERT_TRUE(ruled.ok());
  EXPECT_EQ(ruled->ruling, Ruling::kAccuserGuilty) << ruled->reason;
  EXPECT_EQ(ruled->guilty, accuser);
  EXPECT_EQ(ruled->replays, 1u);
}

TEST(Bisect, NonPersistentFakeIsFoundFromTheSampledStep) {
  // Only step 33's loss is faked; later leaves are honest again. From the sampled step the
  // bisection still lands on a step whose predecessor agrees.
  auto leaves = Trajectory(64);
  leaves[33].loss_bits ^= 1;
  const Prover prover(leaves);
  uint64_t calls = 0;
  const auto honest = Trajectory(64);
  auto r = Bisect(prover.commit.body, prover.Opener(), Recomputer(honest, &calls), 33);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->step, 33u);
  auto verdict = Referee(prover.commit, net::Identity::Generate().public_key(), *r, ToyReplay);
  EXPECT_EQ(verdict->ruling, Ruling::kProverGuilty);
}

TEST(Bisect, ProverThatCannotOpenDefaults) {
  const auto honest = Trajectory(16);
  const Prover prover(Trajectory(16, 5));
  uint64_t calls = 0;
  // Opens a leaf with someone else's proof.
  LeafOpener bad = [&](uint64_t t) -> Result<OpenedLeaf> {
    auto proof = *prover.tree.Prove((t + 1) % 16);
    return OpenedLeaf{prover.leaves[t], proof};
  };
  auto r = Bisect(prover.commit.body, bad, Recomputer(honest, &calls));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->outcome, BisectionOutcome::kProverDefault);
  EXPECT_EQ(calls, 0u) << "no replay is spent on an opening that does not verify";
  auto verdict = Referee(prover.commit, net::Identity::Generate().public_key(), *r, ToyReplay);
  EXPECT_EQ(verdict->ruling, Ruling::kProverGuilty);
  // Withholding (an error) is a default too.
  LeafOpener silent = [](uint64_t) -> Result<OpenedLeaf> { return DeadlineExceeded("no answer"); };
  EXPECT_EQ(Bisect(prover.commit.body, silent, Recomputer(honest, &calls))->outcome,
            BisectionOutcome::kProverDefault);
}

TEST(Referee, ChainBreakConvictsWithoutReplay) {
  // The prover's leaf 9 claims to start from a state its leaf 8 never produced.
  auto leaves = Trajectory(16);
  leaves[9].state_before = Sha256Of("teleported");
  leaves[9].update = Step(leaves[9].state_before, Batch(9));
  const Prover prover(leaves);
  const auto honest = Trajectory(16);
  uint64_t calls = 0;
  auto r = Bisect(prover.commit.body, prover.Opener(), Recomputer(honest, &calls), 9);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->step, 9u);
  bool replayed = false;
  auto verdict =
      Referee(prover.commit, net::Identity::Generate().public_key(), *r, [&](const StepLeaf& l) {
        replayed = true;
        return ToyReplay(l);
      });
  ASSERT_TRUE(verdict.ok());
  EXPECT_EQ(verdict->ruling, Ruling::kProverGuilty);
  EXPECT_FALSE(replayed);
  EXPECT_EQ(verdict->replays, 0u);
}

TEST(Referee, WithheldStateConvictsAndBadEvidenceIsRefused) {
  const Prover prover(Trajectory(8, 3));
  const auto honest = Trajectory(8);
  uint64_t calls = 0;
  auto r = *Bisect(prover.commit.body, prover.Opener(), Recomputer(honest, &calls));
  auto withheld =
      Referee(prover.commit, net::Identity::Generate().public_key(), r,
              [](const StepLeaf&) -> Result<ReplayedStep> { return NotFound("no state"); });
  EXPECT_EQ(withheld->ruling, Ruling::kProverGuilty);
  auto broken = Referee(prover.commit, net::Identity::Generate().public_key(), r,
                        [](const StepLeaf&) -> Result<ReplayedStep> { return IoError("disk"); });
  EXPECT_EQ(broken.status().code(), StatusCode::kIoError) << "the referee failed, nobody is guilty";

  BisectionResult tampered = r;
  tampered.prover->leaf.loss_bits ^= 1;  // evidence that does not match the signed root
  EXPECT_EQ(Referee(prover.commit, {}, tampered, ToyReplay).status().code(),
            StatusCode::kCorruption);
  SignedCommitment forged = prover.commit;
  forged.signature[0] ^= 1;
  EXPECT_FALSE(Referee(forged, {}, r, ToyReplay).ok());
}

TEST(Referee, RoundStartMustMatchThePublicState) {
  auto leaves = Trajectory(4);
  leaves[0].state_before = Sha256Of("private start");
  leaves[0].update = Step(leaves[0].state_before, Batch(0));
  const Prover prover(leaves);
  const auto honest = Trajectory(4);
  uint64_t calls = 0;
  // Only leaf 0 differs (leaf 1 starts from the honest state again), so the dispute starts from
  // the sampled step 0 rather than from the last leaf.
  auto r = *Bisect(prover.commit.body, prover.Opener(), Recomputer(honest, &calls), 0);
  ASSERT_EQ(r.outcome, BisectionOutcome::kDivergence);
  ASSERT_EQ(r.step, 0u);
  auto verdict = Referee(prover.commit, {}, r, ToyReplay, {.round_start_state = Start()});
  EXPECT_EQ(verdict->ruling, Ruling::kProverGuilty);
  EXPECT_EQ(verdict->replays, 0u);
}

}  // namespace
}  // namespace tributary::verifier
