// The tolerance decision between two determinism classes, on the CPU: a prover running torch on
// two threads and a verifier on one are different classes (another reduction order), so the
// verifier cannot demand bit equality; it judges the claimed post-step state against its own
// replay under a calibration fitted from honest pairs of exactly these two classes.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "net/identity.h"
#include "runtime/calibration.h"
#include "runtime/job_spec.h"
#include "runtime/step_kernel.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "runtime/verification.h"
#include "tests/common/test_corpus.h"
#include "verifier/determinism.h"
#include "verifier/replay.h"

namespace tributary::runtime {
namespace {

struct Pair {  // one step as the prover computed it and as the verifier replayed it
  verifier::TrainingState before, claimed, replayed;
  verifier::StepLeaf leaf;
  verifier::ReplayedStep replay;
};

class CrossClassReplayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(::tributary::testing::MakeTempCorpus("cross-class"));
    spec_ = new v1::JobSpec(DefaultJobSpec());
    spec_->set_n_layer(1);
    spec_->set_d_model(64);
    spec_->set_context(32);
    spec_->set_batch_size(16);
    auto data = LoadTrainingData(*dir_, *spec_);
    ASSERT_TRUE(data.ok()) << data.status().ToString();
    auto kernel = StepKernel::Create(*spec_, data->dataset, data->vocab_size);
    ASSERT_TRUE(kernel.ok());
    auto state = (*kernel)->InitialState(spec_->seed());
    ASSERT_TRUE(state.ok());
    pairs_ = new std::vector<Pair>();
    prover_class_ = new std::string(verifier::LocalDeterminismClass(2).Canonical());
    verifier_class_ = new std::string(verifier::LocalDeterminismClass(1).Canonical());
    verifier::TrainingState s = *state;
    for (uint64_t t = 0; t < 16; ++t) {
      const auto batch = InnerBatch(*spec_, 0, 2, 0, 0, t);
      const auto hyper = InnerHyper(*spec_, t);
      Pair p;
      p.before = s;
      PinComputeThreads(2);
      auto claimed = (*kernel)->ReplayLocalStep(s, batch, hyper, &p.claimed);
      PinComputeThreads(1);
      auto replayed = (*kernel)->ReplayLocalStep(s, batch, hyper, &p.replayed);
      ASSERT_TRUE(claimed.ok() && replayed.ok());
      p.leaf = verifier::StepLeaf{"cross-class", 0, t, claimed->state_before, claimed->batch,
                                  claimed->update, claimed->loss_bits, *prover_class_};
      p.replay = *replayed;
      s = p.claimed;  // the prover's own chain
      pairs_->push_back(std::move(p));
    }
  }
  static void TearDownTestSuite() {
    std::filesystem::remove_all(*dir_);
    delete dir_;
    delete spec_;
    delete pairs_;
    delete prover_class_;
    delete verifier_class_;
  }

  // Fitted on the even steps; the odd ones are the honest steps the tests judge.
  static verifier::ToleranceCalibration Calibration() {
    std::vector<verifier::DifferenceSample> samples;
    for (size_t t = 0; t < pairs_->size(); t += 2) {
      const Pair& p = (*pairs_)[t];
      auto d = verifier::MeasureStepDifference(p.before, p.replayed, verifier::LossFromBits(p.replay.loss_bits),
                                               p.claimed, verifier::LossFromBits(p.leaf.loss_bits));
      EXPECT_TRUE(d.ok());
      samples.push_back(*d);
    }
    auto c = verifier::FitTolerance(*prover_class_, *verifier_class_, samples, 10.0, samples.size());
    EXPECT_TRUE(c.ok());
    return *c;
  }

  static Result<verifier::ReplayDecision> Judge(const Pair& p, const verifier::TrainingState& claimed_after,
                                                const verifier::ToleranceCalibration& c) {
    return verifier::CompareStepWithTolerance(p.leaf, p.before, claimed_after, p.replay, p.replayed, c,
                                              *verifier_class_);
  }

  static std::string* dir_;
  static v1::JobSpec* spec_;
  static std::vector<Pair>* pairs_;
  static std::string* prover_class_;
  static std::string* verifier_class_;
};
std::string* CrossClassReplayTest::dir_ = nullptr;
v1::JobSpec* CrossClassReplayTest::spec_ = nullptr;
std::vector<Pair>* CrossClassReplayTest::pairs_ = nullptr;
std::string* CrossClassReplayTest::prover_class_ = nullptr;
std::string* CrossClassReplayTest::verifier_class_ = nullptr;

TEST_F(CrossClassReplayTest, TheClassesDifferAndHonestHeldOutStepsPass) {
  ASSERT_NE(*prover_class_, *verifier_class_) << "threads are part of the class";
  const auto c = Calibration();
  for (size_t t = 1; t < pairs_->size(); t += 2) {
    const Pair& p = (*pairs_)[t];
    auto d = Judge(p, p.claimed, c);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_TRUE(d->match()) << "honest step " << t << ": " << d->reason;
  }
}

TEST_F(CrossClassReplayTest, LiesOutsideTheCalibratedLimitsAreMismatches) {
  const auto c = Calibration();
  const Pair& p = (*pairs_)[5];
  auto scaled = p.claimed;  // the update ×1.01: a thousandfold above honest reassociation error
  for (size_t i = 0; i < scaled.params.size(); ++i) {
    scaled.params[i] = p.before.params[i] + 1.01f * (p.claimed.params[i] - p.before.params[i]);
  }
  auto d = Judge(p, scaled, c);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->match());
  EXPECT_NE(d->reason.find("relative L2"), std::string::npos) << d->reason;

  auto stale = p.claimed;  // honest θ, optimiser moments not advanced
  stale.exp_avg = p.before.exp_avg;
  stale.exp_avg_sq = p.before.exp_avg_sq;
  d = Judge(p, stale, c);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->match());

  auto poisoned = p.claimed;
  poisoned.params[3] = std::numeric_limits<float>::quiet_NaN();
  d = Judge(p, poisoned, c);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->match());
  EXPECT_NE(d->reason.find("non-finite"), std::string::npos) << d->reason;

  auto unstepped = p.claimed;
  unstepped.adam_step = p.before.adam_step;
  d = Judge(p, unstepped, c);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->match());

  auto lying_loss = p.leaf;  // the loss in the leaf must agree with the replay's too
  lying_loss.loss_bits = verifier::LossBits(verifier::LossFromBits(p.leaf.loss_bits) * 0.9);
  auto l = verifier::CompareStepWithTolerance(lying_loss, p.before, p.claimed, p.replay, p.replayed, c,
                                              *verifier_class_);
  ASSERT_TRUE(l.ok());
  EXPECT_FALSE(l->match());

  auto other_batch = p.replay;  // inputs are still compared exactly
  other_batch.batch = (*pairs_)[6].replay.batch;
  l = verifier::CompareStepWithTolerance(p.leaf, p.before, p.claimed, other_batch, p.replayed, c, *verifier_class_);
  ASSERT_TRUE(l.ok());
  EXPECT_FALSE(l->match());
}

TEST_F(CrossClassReplayTest, ACalibrationOfAnotherPairOfClassesIsRefused) {
  auto c = Calibration();
  const Pair& p = (*pairs_)[1];
  auto d = verifier::CompareStepWithTolerance(p.leaf, p.before, p.claimed, p.replay, p.replayed, c, *prover_class_);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition);
  c.prover_class = *verifier_class_;
  d = Judge(p, p.claimed, c);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition);
}

// The same decision wired into the protocol: a job publishes the calibration `tributary
// calibrate` fitted for (2-thread prover, 1-thread verifier); the prover opens the state after a
// challenged step besides the one before; the verifying peer, which cannot reproduce the
// committed post-step digest, judges the opened state against its replay within the limits.
class PeerAcrossClassesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = new std::string(::tributary::testing::MakeTempCorpus("peer-cross-class")); }
  static void TearDownTestSuite() {
    PinComputeThreads(1);
    std::filesystem::remove_all(*dir_);
    delete dir_;
  }

  static v1::JobSpec Spec() {
    v1::JobSpec spec = DefaultJobSpec();
    spec.set_mode(v1::MODE_DILOCO);
    spec.set_n_layer(1);
    spec.set_n_head(2);
    spec.set_d_model(32);
    spec.set_context(16);
    spec.set_batch_size(8);
    spec.set_inner_steps(5);
    spec.set_rounds(2);
    spec.set_num_peers(2);
    spec.set_verify_samples(5);
    return spec;
  }

  struct Round {
    std::string commitment;
    std::vector<v1::Opening> openings;  // each step, with the state after it
  };
  // Round 0 trained and committed by a 2-thread prover (bent by `tamper` if set).
  static Round Prove(const v1::JobSpec& spec, const std::string& job, const TrainingData& data,
                     const net::Identity& id, const StepTamper* tamper = nullptr) {
    PinComputeThreads(2);
    Round out;
    PeerVerification prover(spec, job, data, &id, nullptr);
    auto trainer = Trainer::Create(spec, data, WorkerPlacement{0, spec.num_peers(), 0});
    EXPECT_TRUE(trainer.ok()) << trainer.status().ToString();
    (*trainer)->SetStepObserver(prover.Observer());
    if (tamper) (*trainer)->SetStepTamper(*tamper);
    EXPECT_TRUE((*trainer)->TryRound([](std::span<float>) { return Status::Ok(); }).ok());
    auto delta = (*trainer)->PseudoGradientDigest();
    EXPECT_TRUE(delta.ok());
    auto commitments = prover.CommitRound(0, 0, *delta);
    EXPECT_TRUE(commitments.ok()) << commitments.status().ToString();
    out.commitment = commitments->before.front().step_commitment().commitment();
    for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
      auto o = prover.Open(0, step, false, true);
      EXPECT_TRUE(o.ok()) << o.status().ToString();
      out.openings.push_back(*o);
    }
    PinComputeThreads(1);
    return out;
  }

  static v1::VerifyRequest Request(const Round& r, const net::Identity& prover, uint64_t step) {
    v1::VerifyRequest q;
    q.set_challenge_id(step + 1);
    q.set_round(0);
    q.set_prover_key(net::KeyToBytes(prover.public_key()));
    q.set_prover_shard(0);
    q.set_commitment(r.commitment);
    *q.mutable_opening() = r.openings[step];
    return q;
  }

  static std::string* dir_;
};
std::string* PeerAcrossClassesTest::dir_ = nullptr;

TEST_F(PeerAcrossClassesTest, ACalibratedVerifierOfAnotherClassJudgesHonestStepsAndCatchesLies) {
  const v1::JobSpec plain = Spec();
  auto data = LoadTrainingData(*dir_, plain);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  auto report = CalibrateTolerance(plain, *data, {"cpu", 2}, {"cpu", 1}, 12, 4.0);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_LT(report->bit_identical, 12u) << "two and one threads must give another reduction order here";
  EXPECT_GT(report->calibration.relative_l2_limit(), 0);
  v1::JobSpec spec = plain;
  spec.add_tolerance_calibrations(verifier::EncodeCalibration(report->calibration));
  ASSERT_TRUE(ValidateJobSpec(spec).ok());
  const std::string job = JobIdOf(spec);
  const net::Identity prover_id = net::Identity::Generate(), verifier_id = net::Identity::Generate();

  const Round honest = Prove(spec, job, *data, prover_id);
  PeerVerification verifier(spec, job, *data, &verifier_id, nullptr);
  PeerVerification uncalibrated(plain, job, *data, &verifier_id, nullptr);  // the same job, no table
  ASSERT_NE(verifier.determinism_class(), report->calibration.prover_class);
  int inexact = 0;
  for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
    const v1::VerifyRequest q = Request(honest, prover_id, step);
    const v1::VerifyResult r = verifier.Verify(q);
    EXPECT_EQ(r.outcome(), v1::VERIFY_MATCH) << "honest step " << step << ": " << r.reason();
    auto leaf = verifier::DecodeLeaf(q.opening().leaf());
    ASSERT_TRUE(leaf.ok());
    inexact += r.update() != DigestToBytes(leaf->update);
    EXPECT_EQ(uncalibrated.Verify(q).outcome(), v1::VERIFY_CANNOT_REPLAY);
  }
  EXPECT_GT(inexact, 0) << "the replays must not be bit-identical, or the tolerance went untested";

  // The post-step state is the prover's evidence: missing, or another than the leaf commits to.
  v1::VerifyRequest q = Request(honest, prover_id, 2);
  q.mutable_opening()->clear_state_after();
  v1::VerifyResult r = verifier.Verify(q);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("lacks the state after"), std::string::npos) << r.reason();
  q.mutable_opening()->set_state_after(honest.openings[3].state_after());
  r = verifier.Verify(q);
  EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH);
  EXPECT_NE(r.reason().find("not the one the leaf commits to"), std::string::npos) << r.reason();

  // A prover whose every update is 1 % longer than honest, committed consistently.
  StepTamper longer;
  longer.after = [](uint64_t, uint64_t, std::span<const float> before, std::span<float> after) {
    for (size_t i = 0; i < after.size(); ++i) after[i] = before[i] + 1.01f * (after[i] - before[i]);
  };
  const Round lying = Prove(spec, job, *data, prover_id, &longer);
  for (uint64_t step = 0; step < spec.inner_steps(); ++step) {
    r = verifier.Verify(Request(lying, prover_id, step));
    EXPECT_EQ(r.outcome(), v1::VERIFY_MISMATCH) << "step " << step;
    EXPECT_NE(r.reason().find("relative L2"), std::string::npos) << r.reason();
  }
}

}  // namespace
}  // namespace tributary::runtime
