// The trainer's verifier hooks and the peer's side of the protocol, on real char-GPT steps:
// every inner step the trainer takes is replayed by a second peer's PeerVerification through
// runtime::StepKernel (the trainer's own step code) from the prover's opening, as in the wire
// protocol (OpenRequest → Opening → VerifyRequest → VerifyResult), minus the sockets.
#include "runtime/verification.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "collectives/butterfly.h"
#include "collectives/codec/codec.h"
#include "collectives/codec_state.h"
#include "net/frame.h"
#include "runtime/job_spec.h"
#include "runtime/step_kernel.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "tests/adversary/policy.h"
#include "tests/common/test_corpus.h"
#include "verifier/commitment.h"
#include "verifier/contribution.h"
#include "verifier/replay.h"
#include "verifier/training_state.h"

namespace tributary::runtime {
namespace {

v1::JobSpec TinySpec(uint64_t seed) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_seed(seed);
  spec.set_mode(v1::MODE_DILOCO);
  spec.set_n_layer(1);
  spec.set_n_head(2);
  spec.set_d_model(32);
  spec.set_context(16);
  spec.set_batch_size(4);
  spec.set_inner_steps(6);
  spec.set_rounds(3);
  spec.set_warmup_steps(2);
  spec.set_eval_batches(1);
  spec.set_num_peers(2);
  spec.set_verify_samples(6);
  return spec;
}

// One worker (prover) training with the observer, and a verifier peer replaying its steps.
class Pair {
 public:
  Pair(const v1::JobSpec& spec, const TrainingData& data, const AdversaryHooks* hooks, uint32_t shard = 0)
      : spec_(spec), shard_(shard) {
    prover_ = std::make_unique<PeerVerification>(spec, JobIdOf(spec), data, &prover_id_, hooks);
    verifier_ = std::make_unique<PeerVerification>(spec, JobIdOf(spec), data, &verifier_id_, nullptr);
    auto trainer = Trainer::Create(spec, data, WorkerPlacement{shard, spec.num_peers(), 0});
    EXPECT_TRUE(trainer.ok()) << trainer.status().ToString();
    trainer_ = std::move(trainer).value();
    trainer_->SetStepObserver(prover_->Observer());
    if (hooks) trainer_->SetStepTamper(hooks->step);
  }

  // Trains one round alone (the averager is the identity) and commits it.
  std::string RunRound() {
    round_start_theta_ = DigestToBytes(trainer_->ThetaDigest());
    auto stats = trainer_->TryRound([](std::span<float>) { return Status::Ok(); });
    EXPECT_TRUE(stats.ok()) << stats.status().ToString();
    auto delta = trainer_->PseudoGradientDigest();
    EXPECT_TRUE(delta.ok());
    auto commitments = prover_->CommitRound(trainer_->completed_rounds(), 0, *delta);
    EXPECT_TRUE(commitments.ok()) << commitments.status().ToString();
    EXPECT_EQ(commitments->before.size(), 1u);
    std::string c = commitments->before.front().step_commitment().commitment();
    EXPECT_TRUE(trainer_->Commit().ok());
    return c;
  }

  // The verifier's verdict on (round, step), opened by the prover as on the wire.
  v1::VerifyResult Check(const std::string& commitment, uint64_t round, uint64_t step,
                         const std::function<void(v1::Opening&)>& tamper = {}) {
    auto opening = prover_->Open(round, step);
    EXPECT_TRUE(opening.ok()) << opening.status().ToString();
    if (tamper) tamper(*opening);
    v1::VerifyRequest q;
    q.set_challenge_id(7);
    q.set_round(round);
    q.set_prover_key(net::KeyToBytes(prover_id_.public_key()));
    q.set_prover_shard(shard_);
    q.set_commitment(commitment);
    *q.mutable_opening() = *opening;
    if (round > 0) q.set_round_start_theta(round_start_theta_);
    return verifier_->Verify(q);
  }

  Trainer& trainer() { return *trainer_; }

 private:
  v1::JobSpec spec_;
  uint32_t shard_;
  net::Identity prover_id_ = net::Identity::Generate(), verifier_id_ = net::Identity::Generate();
  std::unique_ptr<PeerVerification> prover_, verifier_;
  std::unique_ptr<Trainer> trainer_;
  std::string round_start_theta_;
};

// Round 0 of `spec` trained by a prover (shard 0) and a verifier (shard 1) from the same θ_0,
// both with their step observers, and the Δ the prover handed to its (identity) averager. What
// a Δ audit needs: the verifier's own θ_start and the prover's committed end state.
struct DeltaAuditRound {
  DeltaAuditRound(const v1::JobSpec& spec, const TrainingData& data)
      : spec(spec),
        job(JobIdOf(spec)),
        prover(spec, job, data, &prover_id, nullptr),
        verifier(spec, job, data, &verifier_id, nullptr) {
    auto prover_trainer = Trainer::Create(spec, data, WorkerPlacement{0, 2, 0});
    auto verifier_trainer = Trainer::Create(spec, data, WorkerPlacement{1, 2, 0});
    EXPECT_TRUE(prover_trainer.ok() && verifier_trainer.ok());
    (*prover_trainer)->SetStepObserver(prover.Observer());
    (*verifier_trainer)->SetStepObserver(verifier.Observer());
    EXPECT_TRUE((*prover_trainer)->TryRound([&](std::span<float> v) {
      delta.assign(v.begin(), v.end());
      return Status::Ok();
    }).ok());
    EXPECT_TRUE((*verifier_trainer)->TryRound([](std::span<float>) { return Status::Ok(); }).ok());
  }

  // The prover's signed step commitment of round 0, stating `sent` as its Δ.
  std::string Commit(const Digest& sent) {
    auto c = prover.CommitRound(0, 0, sent);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? c->before.front().step_commitment().commitment() : std::string();
  }

  // The verifier's Δ audit of the prover's opening (`end_state`: the state after the last step).
  v1::VerifyResult Audit(PeerVerification& by, const std::string& commitment, const std::string& manifest,
                         bool end_state = true) {
    auto opening = prover.Open(0, spec.inner_steps() - 1, end_state);
    EXPECT_TRUE(opening.ok()) << opening.status().ToString();
    opening->set_end_state(true);
    v1::VerifyRequest q;
    q.set_challenge_id(9);
    q.set_round(0);
    q.set_prover_key(net::KeyToBytes(prover_id.public_key()));
    q.set_commitment(commitment);
    *q.mutable_opening() = *opening;
    q.set_delta_audit(true);
    q.set_manifest(manifest);
    return by.Verify(q);
  }
  v1::VerifyResult Audit(const std::string& commitment, const std::string& manifest, bool end_state = true) {
    return Audit(verifier, commitment, manifest, end_state);
  }

  v1::JobSpec spec;
  std::string job;
  net::Identity prover_id = net::Identity::Generate(), verifier_id = net::Identity::Generate();
  PeerVerification prover, verifier;
  std::vector<float> delta;
};

class VerificationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    PinComputeThreads(1);
    corpus_ = new std::string(::tributary::testing::MakeTempCorpus("runtime-verification"));
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*corpus_);
    delete corpus_;
  }
  TrainingData Data(const v1::JobSpec& spec) {
    auto data = LoadTrainingData(*corpus_, spec);
    EXPECT_TRUE(data.ok()) << data.status().ToString();
    return *data;
  }
  static std::string* corpus_;
};
std::string* VerificationTest::corpus_ = nullptr;

// ≥ 100 honest steps, each replayed from its opening by another peer: never a mismatch.
TEST_F(VerificationTest, HonestStepsAreNeverAccused) {
  int replays = 0;
  for (uint64_t seed : {11u, 12u, 13u}) {
    const v1::JobSpec spec = TinySpec(seed);
    const TrainingData data = Data(spec);
    for (uint32_t shard : {0u, 1u}) {
      Pair pair(spec, data, nullptr, shard);
      for (uint64_t round = 0; round < spec.rounds(); ++round) {
        const std::string c = pair.RunRound();
        for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
          v1::VerifyResult r = pair.Check(c, round, step);
          ASSERT_EQ(r.outcome(), v1::VERIFY_MATCH)
              << "seed " << seed << " shard " << shard << " round " << round << " step " << step << ": "
              << r.reason();
          ++replays;
        }
      }
    }
  }
  EXPECT_GE(replays, 100);
}

// The observer's leaves are the trainer's steps: the kernel, fed the opened state, reproduces
// the post-step state digest the next leaf starts from.
TEST_F(VerificationTest, LeavesChainAndKernelReproducesTrainerSteps) {
  const v1::JobSpec spec = TinySpec(5);
  const TrainingData data = Data(spec);
  std::vector<StepRecord> records;
  auto trainer = Trainer::Create(spec, data, WorkerPlacement{0, 2, 0});
  ASSERT_TRUE(trainer.ok());
  (*trainer)->SetStepObserver([&](StepRecord r) { records.push_back(std::move(r)); });
  ASSERT_TRUE((*trainer)->RunRound([](std::span<float>) { return Status::Ok(); }).ok());
  ASSERT_EQ(records.size(), spec.inner_steps());
  auto kernel = StepKernel::Create(spec, data.dataset, data.vocab_size);
  ASSERT_TRUE(kernel.ok());
  for (size_t t = 0; t < records.size(); ++t) {
    if (t > 0) EXPECT_EQ(records[t].state_before, records[t - 1].update);
    auto r = (*kernel)->ReplayLocalStep(records[t].before, InnerBatch(spec, 0, 2, 0, 0, t),
                                        InnerHyper(spec, t));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->state_before, records[t].state_before);
    EXPECT_EQ(r->update, records[t].update);
    EXPECT_EQ(r->loss_bits, verifier::LossBits(records[t].loss));
  }
  // Step 0 starts from θ_0, which every verifier can build from the seed.
  auto initial = (*kernel)->InitialState(spec.seed());
  ASSERT_TRUE(initial.ok());
  EXPECT_EQ(initial->params, records[0].before.params);
  // Unobserved training gives the same θ (the hook computes digests, never changes the step).
  auto plain = Trainer::Create(spec, data, WorkerPlacement{0, 2, 0});
  ASSERT_TRUE((*plain)->RunRound([](std::span<float>) { return Status::Ok(); }).ok());
  EXPECT_EQ((*plain)->ThetaDigest(), (*trainer)->ThetaDigest());
}

// Every step-level attack of the harness is a mismatch on each step it fakes, and an honest
// step of the same cheater still matches (the verdict is per step, not per peer).
class StepAttackTest : public VerificationTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(StepAttackTest, FakedStepsAreMismatches) {
  const v1::JobSpec spec = TinySpec(21);
  const TrainingData data = Data(spec);
  adversary::PolicyOptions options;
  options.attack = GetParam();
  if (options.attack == "partial") options.rate = 0.5;
  auto hooks = adversary::MakePolicy(options);
  ASSERT_TRUE(hooks.ok());
  Pair pair(spec, data, &*hooks);
  const std::string c0 = pair.RunRound();
  const std::string c1 = pair.RunRound();
  int mismatches = 0, steps = 0;
  for (uint64_t round : {0u, 1u}) {
    for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
      v1::VerifyResult r = pair.Check(round == 0 ? c0 : c1, round, step);
      ASSERT_NE(r.outcome(), v1::VERIFY_CANNOT_REPLAY) << r.reason();
      mismatches += r.outcome() == v1::VERIFY_MISMATCH;
      ++steps;
    }
  }
  if (options.attack == "skip" || options.attack == "partial") {
    EXPECT_GT(mismatches, 0);
    EXPECT_LT(mismatches, steps);
  } else {
    EXPECT_EQ(mismatches, steps);
  }
}

INSTANTIATE_TEST_SUITE_P(Attacks, StepAttackTest,
                         ::testing::Values("zero", "random", "skip", "partial", "shard", "sign_flip", "scale",
                                           "subnormal"),
                         [](const auto& info) { return info.param; });

// A doctored opening is caught by the verifier's own checks, before or instead of a replay.
TEST_F(VerificationTest, DoctoredOpeningsAreMismatches) {
  const v1::JobSpec spec = TinySpec(31);
  const TrainingData data = Data(spec);
  Pair pair(spec, data, nullptr);
  const std::string c = pair.RunRound();
  ASSERT_EQ(pair.Check(c, 0, 3).outcome(), v1::VERIFY_MATCH);
  auto state_flip = [](v1::Opening& o) {
    auto s = verifier::DecodeTrainingState(o.state(), 1u << 30);
    ASSERT_TRUE(s.ok());
    s->params[5] += 1e-3f;
    o.set_state(verifier::EncodeTrainingState(*s));
  };
  EXPECT_EQ(pair.Check(c, 0, 3, state_flip).outcome(), v1::VERIFY_MISMATCH);
  auto other_leaf = [&](v1::Opening& o) { o.set_step(2); };  // leaf 3 claimed as step 2
  EXPECT_EQ(pair.Check(c, 0, 3, other_leaf).outcome(), v1::VERIFY_MISMATCH);
  auto bad_proof = [](v1::Opening& o) {
    std::string p = o.proof();
    p[p.size() - 1] ^= 1;
    o.set_proof(p);
  };
  EXPECT_EQ(pair.Check(c, 0, 3, bad_proof).outcome(), v1::VERIFY_MISMATCH);
  auto truncated = [](v1::Opening& o) { o.set_state(o.state().substr(0, o.state().size() - 4)); };
  EXPECT_EQ(pair.Check(c, 0, 3, truncated).outcome(), v1::VERIFY_MISMATCH);
  // A forged commitment is not the prover's: the verifier cannot even start.
  std::string forged = c;
  forged[forged.size() - 1] ^= 1;
  EXPECT_EQ(pair.Check(forged, 0, 3).outcome(), v1::VERIFY_CANNOT_REPLAY);
}

TEST(TrainingStateCodec, RoundTripsAndRejectsMalformedBytes) {
  verifier::TrainingState s{{1, 2, 3}, 4, {0.5f, 0.25f, 0.125f}, {1e-3f, 2e-3f, 3e-3f}};
  const std::string bytes = verifier::EncodeTrainingState(s);
  auto back = verifier::DecodeTrainingState(bytes, 3);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->params, s.params);
  EXPECT_EQ(back->adam_step, 4);
  EXPECT_EQ(verifier::OptimizerDigest(*back), verifier::OptimizerDigest(s));
  EXPECT_FALSE(verifier::DecodeTrainingState(bytes, 2).ok());  // more values than the model has
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(verifier::DecodeTrainingState(bytes.substr(0, n), 3).ok()) << n;
  }
  EXPECT_FALSE(verifier::DecodeTrainingState(bytes + "x", 3).ok());
  verifier::TrainingState fresh{{1, 2, 3}, 0, {1, 2, 3}, {1, 2, 3}};  // moments at step 0
  EXPECT_FALSE(verifier::DecodeTrainingState(verifier::EncodeTrainingState(fresh), 3).ok());
}

// The Δ audit (docs/VERIFIER.md, "Sent Δ") on real steps: a verifier that trained the same round
// from the same θ_start checks the prover's signed manifest against θ_start − θ_end of the
// prover's committed end state. The manifest's shard digests follow the wire contract: SHA-256 of
// the fp32 payload of each butterfly shard of Δ.
TEST_F(VerificationTest, DeltaAuditBindsTheSentDeltaToTheCommittedSteps) {
  const v1::JobSpec spec = TinySpec(21);
  const TrainingData data = Data(spec);
  DeltaAuditRound round(spec, data);
  const std::vector<float>& delta = round.delta;
  auto manifest_of = [&](std::span<const float> d, uint32_t world, int lie_about_shard = -1, uint64_t numel = 0) {
    verifier::ContributionManifest m;
    m.job_id = round.job;
    m.peer = round.prover_id.public_key();
    m.numel = numel ? numel : d.size();
    m.pseudo_gradient = verifier::FloatsDigest(d);
    for (uint32_t s = 0; s < world; ++s) {
      const uint64_t begin = collectives::ButterflyShardBegin(d.size(), world, s);
      const uint64_t end = collectives::ButterflyShardBegin(d.size(), world, s + 1);
      auto fp32 = collectives::codec::MakeCodec("fp32");
      auto payload = (*fp32)->Encode(d.subspan(begin, end - begin));
      EXPECT_TRUE(payload.ok());
      m.shard_digests.push_back(Sha256Of(*payload + (static_cast<int>(s) == lie_about_shard ? "x" : "")));
    }
    return verifier::EncodeManifest(*verifier::SignManifest(m, round.prover_id));
  };

  const std::string honest = round.Commit(verifier::FloatsDigest(delta));
  for (uint32_t world : {1u, 2u, 3u}) {
    v1::VerifyResult r = round.Audit(honest, manifest_of(delta, world));
    EXPECT_EQ(r.outcome(), v1::VERIFY_MATCH) << world << ": " << r.reason();
  }
  // The manifest states a payload that is not the encoding of Δ.
  v1::VerifyResult r = round.Audit(honest, manifest_of(delta, 3, /*lie_about_shard=*/1));
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("shard 1"), std::string::npos) << r.reason();
  // The manifest states another tensor size than the model's (it fixes the shard sizes a
  // bad-payload proof is checked with).
  r = round.Audit(honest, manifest_of(delta, 3, -1, delta.size() + 1));
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("elements"), std::string::npos) << r.reason();
  // The end state opened is the one before the last step.
  r = round.Audit(honest, manifest_of(delta, 2), /*end_state=*/false);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  // Another Δ sent (scaled, or any other), with manifest and commitment consistently stating it.
  std::vector<float> scaled = delta;
  for (float& v : scaled) v *= 1000.0f;
  const std::string lie = round.Commit(verifier::FloatsDigest(scaled));
  r = round.Audit(lie, manifest_of(scaled, 2));
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("θ_start − θ_end"), std::string::npos) << r.reason();
  // A manifest that contradicts the commitment.
  r = round.Audit(honest, manifest_of(scaled, 2));
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  // A verifier that did not train the round has no θ_start: it cannot audit (no accusation).
  net::Identity outsider_id = net::Identity::Generate();
  PeerVerification outsider(spec, round.job, data, &outsider_id, nullptr);
  EXPECT_EQ(round.Audit(outsider, honest, manifest_of(delta, 2)).outcome(), v1::VERIFY_CANNOT_REPLAY);
}

// The Δ audit under an error-feedback codec (int8): the payloads encode Δ plus the residual the
// prover still owed, which it opens with its end state and its manifest states. The audit
// re-encodes them through the butterfly's own CodecState and checks the payload digests and the
// residual they leave; a made-up residual is caught whichever way it is stated.
TEST_F(VerificationTest, DeltaAuditWithErrorFeedbackReencodesDeltaPlusTheOpenedResidual) {
  v1::JobSpec spec = TinySpec(22);
  spec.set_codec("int8");
  const TrainingData data = Data(spec);
  DeltaAuditRound round(spec, data);
  const std::vector<float>& delta = round.delta;
  const std::string commitment = round.Commit(verifier::FloatsDigest(delta));
  const uint32_t world = 3;
  const size_t n = delta.size();
  std::vector<float> owed(n);
  for (size_t i = 0; i < n; ++i) owed[i] = 1e-4f * static_cast<float>(static_cast<int>(i % 13) - 6);

  // What an honest sender signs: payloads of Δ + `encoded_with`; the manifest states `stated_in`.
  struct Signed {
    std::string manifest;
    std::vector<float> left;
  };
  auto sign = [&](const std::vector<float>& encoded_with, const std::vector<float>& stated_in,
                  std::optional<Digest> stated_out = std::nullopt) {
    auto reencoded = collectives::ReencodeContributions("int8", world, delta, encoded_with);
    EXPECT_TRUE(reencoded.ok()) << reencoded.status().ToString();
    verifier::ContributionManifest m;
    m.job_id = round.job;
    m.peer = round.prover_id.public_key();
    m.numel = n;
    m.pseudo_gradient = verifier::FloatsDigest(delta);
    m.shard_digests = reencoded->shard_digests;
    Signed out;
    out.left = reencoded->residual_left;
    m.residual_in = verifier::ResidualDigest(stated_in);
    m.residual_out = stated_out ? *stated_out : verifier::ResidualDigest(out.left);
    out.manifest = verifier::EncodeManifest(*verifier::SignManifest(m, round.prover_id));
    return out;
  };
  auto audit = [&](const std::string& manifest, const std::vector<float>& opened) {
    round.prover.KeepSentResidual(0, opened);
    return round.Audit(commitment, manifest);
  };

  const std::vector<float> zero(n, 0.0f);
  v1::VerifyResult r = audit(sign(zero, zero).manifest, zero);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MATCH) << r.reason();
  const Signed honest = sign(owed, owed);
  EXPECT_NE(verifier::ResidualDigest(honest.left), Digest{});
  r = audit(honest.manifest, owed);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MATCH) << r.reason();
  // The opening carries another residual than the manifest states.
  r = audit(honest.manifest, zero);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("opened residual"), std::string::npos) << r.reason();
  // Encoded with a made-up residual, the honest one stated and opened: the payloads give it away.
  std::vector<float> made_up = owed;
  for (float& v : made_up) v += 0.01f;
  r = audit(sign(made_up, owed).manifest, owed);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("encoding of Δ plus the opened residual"), std::string::npos) << r.reason();
  // The residual the encoding leaves is not the one stated (what the next round must continue).
  r = audit(sign(owed, owed, Sha256Of("another residual")).manifest, owed);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("residual its encoding leaves"), std::string::npos) << r.reason();
}

}  // namespace
}  // namespace tributary::runtime
