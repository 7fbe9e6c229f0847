#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/seed.h"
#include "verifier/replay.h"

namespace tributary::verifier {
namespace {

const std::string kGpu =
    "tributary.dclass.v1;device=cuda:A100:550:12.4;torch=t;threads=1;blas=b;core=c;isa=i;env=";

std::vector<float> Vector(uint64_t seed, size_t n = 4096) {
  SeedStream rng(seed);
  std::vector<float> v(n);
  for (auto& x : v)
    x = static_cast<float>(static_cast<double>(rng.Next() >> 11) / 9007199254740992.0 - 0.5);
  return v;
}

// An "honest GPU replay": the same vector with relative noise of about `eps` per element.
std::vector<float> Perturbed(const std::vector<float>& v, double eps, uint64_t seed) {
  SeedStream rng(seed);
  std::vector<float> out(v);
  for (auto& x : out) {
    const double u = static_cast<double>(rng.Next() >> 11) / 9007199254740992.0 - 0.5;
    x = static_cast<float>(x * (1.0 + 2 * eps * u));
  }
  return out;
}

StepLeaf Claimed(const std::vector<float>& update, double loss, const std::string& cls) {
  StepLeaf leaf;
  leaf.job_id = "job";
  leaf.state_before = Sha256Of("state");
  leaf.batch = Sha256Of("batch");
  leaf.update = FloatsDigest(update);
  leaf.loss_bits = LossBits(loss);
  leaf.determinism_class = cls;
  return leaf;
}

ReplayedStep Replayed(const std::vector<float>& update, double loss) {
  return {Sha256Of("state"), Sha256Of("batch"), FloatsDigest(update), LossBits(loss)};
}

TEST(CompareBitwise, MatchesOnlyIdenticalFields) {
  const auto u = Vector(1);
  const StepLeaf leaf = Claimed(u, 2.5, "cpu");
  EXPECT_TRUE(CompareBitwise(leaf, Replayed(u, 2.5)).match());
  auto one_bit = u;
  one_bit[17] = std::nextafter(one_bit[17], 1.0f);
  EXPECT_FALSE(CompareBitwise(leaf, Replayed(one_bit, 2.5)).match()) << "no tolerance on the CPU";
  EXPECT_FALSE(CompareBitwise(leaf, Replayed(u, std::nextafter(2.5, 3.0))).match());
  ReplayedStep other_batch = Replayed(u, 2.5);
  other_batch.batch = Sha256Of("another batch");
  auto d = CompareBitwise(leaf, other_batch);
  EXPECT_FALSE(d.match());
  EXPECT_NE(d.reason.find("batch"), std::string::npos) << d.reason;
  ReplayedStep other_state = Replayed(u, 2.5);
  other_state.state_before[0] ^= 1;
  EXPECT_FALSE(CompareBitwise(leaf, other_state).match());
}

TEST(FloatsDigest, IsTheRawLittleEndianBytes) {
  const std::vector<float> v = {1.0f, -2.5f};
  EXPECT_EQ(FloatsDigest(v), Sha256Of(std::as_bytes(std::span<const float>(v))));
}

TEST(Tolerance, FittedFromHonestPairsNotGuessed) {
  const auto base = Vector(7);
  std::vector<DifferenceSample> samples;
  double max_seen = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    auto s =
        MeasureDifference(base, Perturbed(base, 1e-6, 100 + i), 2.0, 2.0 * (1 + 1e-7 * (i % 3)));
    ASSERT_TRUE(s.ok());
    max_seen = std::max(max_seen, s->relative_l2);
    samples.push_back(*s);
  }
  auto cal = FitTolerance(kGpu, kGpu, samples, 4.0, 30);
  ASSERT_TRUE(cal.ok()) << cal.status().ToString();
  EXPECT_EQ(cal->samples, 50u);
  EXPECT_DOUBLE_EQ(cal->max_relative_l2, max_seen);
  EXPECT_DOUBLE_EQ(cal->relative_l2_limit(), 4.0 * max_seen);
  EXPECT_GT(cal->max_loss_relative, 0);

  EXPECT_FALSE(FitTolerance(kGpu, kGpu, std::span(samples).first(10), 4.0, 30).ok()) << "too few";
  EXPECT_FALSE(FitTolerance(kGpu, kGpu, samples, 0.5, 30).ok())
      << "a factor below 1 shrinks honest noise";
  std::vector<DifferenceSample> poisoned = samples;
  poisoned.push_back({NAN, 0});
  EXPECT_FALSE(FitTolerance(kGpu, kGpu, poisoned, 4.0, 30).ok());

  auto bytes = EncodeCalibration(*cal);
  auto back = DecodeCalibration(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(EncodeCalibration(*back), bytes);
  EXPECT_FALSE(DecodeCalibration(bytes + "x").ok());
}

TEST(Tolerance, AcceptsHonestNoiseRejectsScaledFakedAndNonFinite) {
  const auto honest = Vector(9);
  std::vector<DifferenceSample> samples;
  for (uint64_t i = 0; i < 40; ++i) {
    samples.push_back(*MeasureDifference(honest, Perturbed(honest, 1e-6, i), 3.0, 3.0));
  }
  const ToleranceCalibration cal = *FitTolerance(kGpu, kGpu, samples, 4.0, 30);

  const ReplayedStep replay = Replayed(honest, 3.0);
  // A fresh honest run (new noise) passes.
  const auto other_honest = Perturbed(honest, 1e-6, 999);
  auto ok =
      CompareWithTolerance(Claimed(other_honest, 3.0, kGpu), other_honest, replay, honest, cal);
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->match()) << ok->reason;

  // Scaled update (attack A7), sign flip (A6), random update (A1), NaN (A11) all fail.
  auto scaled = honest;
  for (auto& x : scaled) x *= 1.01f;
  EXPECT_FALSE(
      CompareWithTolerance(Claimed(scaled, 3.0, kGpu), scaled, replay, honest, cal)->match());
  auto flipped = honest;
  for (auto& x : flipped) x = -x;
  EXPECT_FALSE(
      CompareWithTolerance(Claimed(flipped, 3.0, kGpu), flipped, replay, honest, cal)->match());
  const auto random = Vector(12345);
  EXPECT_FALSE(
      CompareWithTolerance(Claimed(random, 3.0, kGpu), random, replay, honest, cal)->match());
  auto nan = other_honest;
  nan[5] = NAN;
  EXPECT_FALSE(CompareWithTolerance(Claimed(nan, 3.0, kGpu), nan, replay, honest, cal)->match());
  // A wrong loss, another batch.
  EXPECT_FALSE(
      CompareWithTolerance(Claimed(other_honest, 3.3, kGpu), other_honest, replay, honest, cal)
          ->match());
  StepLeaf wrong_batch = Claimed(other_honest, 3.0, kGpu);
  wrong_batch.batch = Sha256Of("self-chosen batch");
  EXPECT_FALSE(CompareWithTolerance(wrong_batch, other_honest, replay, honest, cal)->match());
  // A calibration of another class does not apply.
  EXPECT_EQ(CompareWithTolerance(Claimed(honest, 3.0, "cpu"), honest, replay, honest, cal)
                .status()
                .code(),
            StatusCode::kFailedPrecondition);
}

// The job's published calibrations: one per pair, strictly decoded, and the judge each pair
// gets (bitwise within a class, tolerance where calibrated, none otherwise).
TEST(CalibrationTable, OnePerPairAndTheJudgeOfEachPair) {
  std::vector<DifferenceSample> samples = {{1e-6, 1e-7}, {2e-6, 0}};
  auto gpu_on_cpu = FitTolerance(kGpu, "cpu-class", samples, 4.0, 2);
  auto gpu_on_gpu = FitTolerance(kGpu, kGpu, samples, 4.0, 2);
  ASSERT_TRUE(gpu_on_cpu.ok() && gpu_on_gpu.ok());
  auto table = CalibrationTable::Decode({EncodeCalibration(*gpu_on_cpu), EncodeCalibration(*gpu_on_gpu)});
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  EXPECT_EQ(table->size(), 2u);
  ASSERT_NE(table->Find(kGpu, "cpu-class"), nullptr);
  EXPECT_DOUBLE_EQ(table->Find(kGpu, "cpu-class")->relative_l2_limit(), 8e-6);
  EXPECT_EQ(table->Find("cpu-class", kGpu), nullptr) << "a pair is directed: prover, then verifier";
  EXPECT_TRUE(table->CoversProver(kGpu));
  EXPECT_FALSE(table->CoversProver("cpu-class"));
  EXPECT_EQ(table->Judge(kGpu, "cpu-class"), JudgeKind::kTolerance);
  EXPECT_EQ(table->Judge(kGpu, kGpu), JudgeKind::kTolerance) << "a calibrated class judges itself within limits";
  EXPECT_EQ(table->Judge("cpu-class", "cpu-class"), JudgeKind::kBitwise);
  EXPECT_EQ(table->Judge("cpu-class", kGpu), JudgeKind::kNone);
  EXPECT_EQ(CalibrationTable().Judge(kGpu, "cpu-class"), JudgeKind::kNone);

  auto twice = CalibrationTable::Decode({EncodeCalibration(*gpu_on_cpu), EncodeCalibration(*gpu_on_cpu)});
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("two tolerance calibrations"), std::string::npos);
  auto garbage = CalibrationTable::Decode({EncodeCalibration(*gpu_on_cpu), "not a calibration"});
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.status().message().find("calibration 1"), std::string::npos) << garbage.status().ToString();
}

TEST(MeasureDifference, RefusesNonFiniteAndLengthMismatch) {
  std::vector<float> a = {1, 2, 3}, b = {1, 2};
  EXPECT_FALSE(MeasureDifference(a, b, 1, 1).ok());
  std::vector<float> inf = {1, INFINITY, 3};
  EXPECT_FALSE(MeasureDifference(a, inf, 1, 1).ok());
  EXPECT_EQ(MeasureDifference(a, a, 1, 1)->relative_l2, 0.0);
}

}  // namespace
}  // namespace tributary::verifier
