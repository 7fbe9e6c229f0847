// Real replays of char-GPT and MLP AdamW steps: what the protocol's bitwise mode relies on.
#include "verifier/step_replay.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "runtime/job_spec.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "tests/common/test_corpus.h"
#include "verifier/determinism.h"
#include "verifier/dispute.h"

namespace tributary::verifier {
namespace {

v1::JobSpec TinySpec(const std::string& kind, v1::Mode mode = v1::MODE_DILOCO) {
  v1::JobSpec spec = runtime::DefaultJobSpec();
  spec.set_model(kind);
  spec.set_mode(mode);
  spec.set_n_layer(1);
  spec.set_n_head(2);
  spec.set_d_model(32);
  spec.set_context(16);
  spec.set_mlp_hidden(64);
  spec.set_batch_size(4);
  spec.set_inner_steps(8);
  spec.set_rounds(2);
  spec.set_warmup_steps(2);
  spec.set_eval_batches(2);
  spec.set_num_peers(1);
  return spec;
}

class StepReplayTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    runtime::PinComputeThreads(1);
    corpus_dir_ = new std::string(::tributary::testing::MakeTempCorpus("verifier-replay"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*corpus_dir_);
    delete corpus_dir_;
  }

  void SetUp() override {
    spec_ = TinySpec(GetParam());
    auto data = runtime::LoadTrainingData(*corpus_dir_, spec_);
    ASSERT_TRUE(data.ok()) << data.status().ToString();
    data_ = *data;
    replayer_ = Make();
    ASSERT_NE(replayer_, nullptr);
    dclass_ = LocalDeterminismClass(1).Canonical();
  }

  std::unique_ptr<StepReplayer> Make() {
    auto r = StepReplayer::Create(ReplayModelConfigOf(spec_, data_.vocab_size), data_.dataset, 1);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  BatchCoordinates Batch(uint64_t step, uint32_t shard = 0) const {
    return BatchFor(spec_, shard, 2, 0, 0, step);
  }

  // The prover's side: runs `steps` honest steps and returns every state and leaf.
  void Train(StepReplayer& r, uint64_t steps, std::vector<TrainingState>& states,
             std::vector<StepLeaf>& leaves) {
    states = {*r.InitialState(spec_.seed())};
    leaves.clear();
    for (uint64_t t = 0; t < steps; ++t) {
      TrainingState after;
      auto replayed = r.ReplayLocalStep(states.back(), Batch(t), HyperFor(spec_, 0, t), &after);
      ASSERT_TRUE(replayed.ok()) << replayed.status().ToString();
      leaves.push_back(Leaf(t, *replayed));
      states.push_back(std::move(after));
    }
  }

  StepLeaf Leaf(uint64_t t, const ReplayedStep& r) const {
    return StepLeaf{"job", 0, t, r.state_before, r.batch, r.update, r.loss_bits, dclass_};
  }

  static std::string* corpus_dir_;
  v1::JobSpec spec_;
  runtime::TrainingData data_;
  std::unique_ptr<StepReplayer> replayer_;
  std::string dclass_;
};
std::string* StepReplayTest::corpus_dir_ = nullptr;

TEST_P(StepReplayTest, SameStateAndBatchReplayBitIdentically) {
  auto other = Make();
  std::vector<TrainingState> states_a, states_b;
  std::vector<StepLeaf> leaves_a, leaves_b;
  Train(*replayer_, 4, states_a, leaves_a);
  Train(*other, 4, states_b, leaves_b);
  ASSERT_EQ(leaves_a.size(), 4u);
  for (size_t t = 0; t < leaves_a.size(); ++t) {
    EXPECT_EQ(LeafHash(leaves_a[t]), LeafHash(leaves_b[t])) << "step " << t;
    EXPECT_EQ(states_a[t + 1].params, states_b[t + 1].params);
    EXPECT_EQ(states_a[t + 1].exp_avg_sq, states_b[t + 1].exp_avg_sq);
    if (t > 0) EXPECT_EQ(leaves_a[t].state_before, leaves_a[t - 1].update) << "leaves chain";
    // A verifier replays step t alone, from the opened state, in a fresh replayer.
    auto fresh = Make();
    auto replayed = fresh->ReplayLocalStep(states_a[t], Batch(t), HyperFor(spec_, 0, t));
    ASSERT_TRUE(replayed.ok());
    EXPECT_TRUE(CompareBitwise(leaves_a[t], *replayed).match()) << t;
  }
  EXPECT_GT(states_a[1].adam_step, 0);
  EXPECT_NE(states_a[1].params, states_a[0].params) << "the step changed the parameters";
}

TEST_P(StepReplayTest, FakedStepsAreMismatches) {
  std::vector<TrainingState> states;
  std::vector<StepLeaf> leaves;
  Train(*replayer_, 3, states, leaves);
  const uint64_t t = 2;
  auto verify = [&](const StepLeaf& claimed) {
    auto replayed = replayer_->ReplayLocalStep(states[t], Batch(t), HyperFor(spec_, 0, t));
    EXPECT_TRUE(replayed.ok());
    return CompareBitwise(claimed, *replayed);
  };
  ASSERT_TRUE(verify(leaves[t]).match());

  // Trained on a batch it was not assigned (another step's batch, honestly computed): the batch
  // digest, the update and the loss all give it away.
  TrainingState wrong_after;
  auto wrong_batch =
      replayer_->ReplayLocalStep(states[t], Batch(t + 5), HyperFor(spec_, 0, t), &wrong_after);
  ASSERT_TRUE(wrong_batch.ok());
  EXPECT_FALSE(verify(Leaf(t, *wrong_batch)).match());
  // Same, but lying about the batch digest: the update still differs.
  StepLeaf lying = Leaf(t, *wrong_batch);
  lying.batch = leaves[t].batch;
  const ReplayDecision d = verify(lying);
  EXPECT_FALSE(d.match());
  EXPECT_NE(d.reason.find("update"), std::string::npos) << d.reason;
  // Another shard's data.
  auto other_shard = replayer_->ReplayLocalStep(states[t], Batch(t, 1), HyperFor(spec_, 0, t));
  EXPECT_FALSE(verify(Leaf(t, *other_shard)).match());

  // Skipped the step: claims the state did not move (or only the optimiser step counter did).
  StepLeaf skipped = leaves[t];
  skipped.update = skipped.state_before;
  EXPECT_FALSE(verify(skipped).match());

  // Scaled update θ + 2(θ' − θ) (attack A7) and sign flip θ − (θ' − θ) (A6).
  TrainingState honest_after = states[t + 1];
  for (float scale : {2.0f, -1.0f, 1.0f + 1e-6f}) {
    TrainingState forged = honest_after;
    for (size_t i = 0; i < forged.params.size(); ++i) {
      forged.params[i] =
          states[t].params[i] + scale * (honest_after.params[i] - states[t].params[i]);
    }
    StepLeaf claim = leaves[t];
    claim.update = *replayer_->StateDigest(forged);
    EXPECT_FALSE(verify(claim).match()) << "scale " << scale;
  }
  // A loss reported one ulp off.
  StepLeaf loss = leaves[t];
  loss.loss_bits += 1;
  EXPECT_FALSE(verify(loss).match());
  // Wrong learning rate (a prover that trains with its own schedule).
  AdamWHyper hyper = HyperFor(spec_, 0, t);
  hyper.lr *= 0.5;
  auto slow = replayer_->ReplayLocalStep(states[t], Batch(t), hyper);
  EXPECT_FALSE(verify(Leaf(t, *slow)).match());
}

TEST_P(StepReplayTest, DataParallelGradientIsBitReproducible) {
  const TrainingState init = *replayer_->InitialState(spec_.seed());
  auto a = replayer_->Gradient(init.params, Batch(0));
  auto b = Make()->Gradient(init.params, Batch(0));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(FloatsDigest(a->gradient), FloatsDigest(b->gradient));
  EXPECT_EQ(LossBits(a->loss), LossBits(b->loss));
  EXPECT_EQ(a->batch, b->batch);
  auto c = replayer_->Gradient(init.params, Batch(1));
  EXPECT_NE(FloatsDigest(a->gradient), FloatsDigest(c->gradient));
}

TEST_P(StepReplayTest, ReplayReproducesTheRealTrainerBitForBit) {
  // A one-worker DDP round of H steps is exactly H AdamW steps; the trainer's θ digest after the
  // round must equal the replayed chain's (same model, batches, clipping, schedule, AdamW).
  v1::JobSpec ddp = spec_;
  ddp.set_mode(v1::MODE_DDP);
  ddp.set_inner_steps(3);
  auto trainer = runtime::Trainer::Create(ddp, data_, runtime::WorkerPlacement{0, 1, 0});
  ASSERT_TRUE(trainer.ok()) << trainer.status().ToString();
  EXPECT_EQ((*trainer)->ThetaDigest(),
            *replayer_->ParametersDigest(replayer_->InitialState(ddp.seed())->params));
  ASSERT_TRUE((*trainer)->RunRound([](std::span<float>) { return Status::Ok(); }).ok());
  TrainingState state = *replayer_->InitialState(ddp.seed());
  for (uint64_t t = 0; t < 3; ++t) {
    auto step = replayer_->LocalStep(state, BatchFor(ddp, 0, 1, 0, 0, t), HyperFor(ddp, 0, t));
    ASSERT_TRUE(step.ok()) << step.status().ToString();
    state = std::move(step->after);
  }
  EXPECT_EQ((*trainer)->ThetaDigest(), *replayer_->ParametersDigest(state.params));
}

TEST_P(StepReplayTest, DisputeOverRealStepsConvictsTheFaker) {
  // The prover scales its update at step 5 and trains on from there; the verifier's sampled
  // replay of step 6 mismatches, bisection finds step 5, and the referee's single replay rules.
  const uint64_t T = 8;
  std::vector<TrainingState> honest_states, states;
  std::vector<StepLeaf> honest, leaves;
  Train(*replayer_, T, honest_states, honest);
  states = {honest_states[0]};
  for (uint64_t t = 0; t < T; ++t) {
    TrainingState after;
    auto r = replayer_->ReplayLocalStep(states.back(), Batch(t), HyperFor(spec_, 0, t), &after);
    ASSERT_TRUE(r.ok());
    if (t == 5) {
      for (size_t i = 0; i < after.params.size(); ++i) {
        after.params[i] =
            states.back().params[i] + 3.0f * (after.params[i] - states.back().params[i]);
      }
      r->update = *replayer_->StateDigest(after);
    }
    leaves.push_back(Leaf(t, *r));
    states.push_back(std::move(after));
  }
  const net::Identity prover = net::Identity::Generate();
  auto tree = BuildRoundTree(leaves);
  ASSERT_TRUE(tree.ok());
  auto commit = SignCommitment(
      {"job", prover.public_key(), 0, tree->root(), T, dclass_, Sha256Of("Δ")}, prover);
  ASSERT_TRUE(commit.ok());

  LeafOpener opener = [&](uint64_t t) -> Result<OpenedLeaf> {
    return OpenedLeaf{leaves[t], *tree->Prove(t)};
  };
  uint64_t replays = 0;
  LeafRecomputer verifier = [&](uint64_t t) -> Result<StepLeaf> {
    ++replays;
    return honest[t];  // the verifier's own honest trajectory
  };
  auto bisection = Bisect(commit->body, opener, verifier, 6);
  ASSERT_TRUE(bisection.ok());
  ASSERT_EQ(bisection->outcome, BisectionOutcome::kDivergence);
  EXPECT_EQ(bisection->step, 5u);

  // The referee fetches the prover's state for the step (checked against the leaf's digest).
  auto referee_replay = [&](const StepLeaf& leaf) -> Result<ReplayedStep> {
    const TrainingState& opened = states[leaf.step];
    TRIB_ASSIGN_OR_RETURN(Digest digest, replayer_->StateDigest(opened));
    if (digest != leaf.state_before) return NotFound("prover's state does not match its leaf");
    return replayer_->ReplayLocalStep(opened, Batch(leaf.step), HyperFor(spec_, 0, leaf.step));
  };
  auto verdict = Referee(*commit, net::Identity::Generate().public_key(), *bisection,
                         referee_replay, {.round_start_state = honest[0].state_before});
  ASSERT_TRUE(verdict.ok()) << verdict.status().ToString();
  EXPECT_EQ(verdict->ruling, Ruling::kProverGuilty) << verdict->reason;
  EXPECT_EQ(verdict->replays, 1u);
}

INSTANTIATE_TEST_SUITE_P(Models, StepReplayTest, ::testing::Values("gpt", "mlp"));

TEST(StepReplayer, RefusesAnotherThreadCountAndMalformedStates) {
  runtime::PinComputeThreads(1);
  const std::string dir = ::tributary::testing::MakeTempCorpus("verifier-threads", 1, 20000);
  v1::JobSpec spec = TinySpec("gpt");
  auto data = runtime::LoadTrainingData(dir, spec);
  ASSERT_TRUE(data.ok());
  auto wrong = StepReplayer::Create(ReplayModelConfigOf(spec, data->vocab_size), data->dataset, 2);
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition);
  auto r = StepReplayer::Create(ReplayModelConfigOf(spec, data->vocab_size), data->dataset, 1);
  ASSERT_TRUE(r.ok());
  TrainingState bad = *(*r)->InitialState(1);
  bad.params.pop_back();
  EXPECT_EQ(
      (*r)->LocalStep(bad, BatchFor(spec, 0, 1, 0, 0, 0), HyperFor(spec, 0, 0)).status().code(),
      StatusCode::kInvalidArgument);
  TrainingState half = *(*r)->InitialState(1);
  half.adam_step = 3;  // moments missing
  EXPECT_EQ((*r)->StateDigest(half).status().code(), StatusCode::kInvalidArgument);
  const DeterminismClass local = LocalDeterminismClass(1);
  std::printf("determinism class of this process: %s\n", local.Canonical().c_str());
  EXPECT_NE(local.blas, "unknown") << "libtorch loads a BLAS into this process";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tributary::verifier
