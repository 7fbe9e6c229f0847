#include "runtime/job_spec.h"

#include <gtest/gtest.h>

#include <cmath>

#include <unistd.h>

#include <filesystem>
#include <vector>

#include "core/files.h"
#include "verifier/replay.h"

namespace tributary::runtime {
namespace {

TEST(JobSpecTest, DefaultIsValidAndIdIsStable) {
  v1::JobSpec spec = DefaultJobSpec();
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  EXPECT_EQ(JobIdOf(spec), JobIdOf(DefaultJobSpec()));
  EXPECT_EQ(JobIdOf(spec).size(), 16u);
  spec.set_inner_steps(spec.inner_steps() + 1);
  EXPECT_NE(JobIdOf(spec), JobIdOf(DefaultJobSpec())) << "any field must change the id";
}

TEST(JobSpecTest, TomlOverridesTopLevelOrJobTable) {
  v1::JobSpec spec = DefaultJobSpec();
  ASSERT_TRUE(ApplyTomlString("mode = \"ddp\"\nrounds = 3\ninner_lr = 0.01\n", spec).ok());
  EXPECT_EQ(spec.mode(), v1::MODE_DDP);
  EXPECT_EQ(spec.rounds(), 3u);
  EXPECT_DOUBLE_EQ(spec.inner_lr(), 0.01);
  ASSERT_TRUE(ApplyTomlString("[job]\nmodel = \"mlp\"\nnum_peers = 2\n", spec).ok());
  EXPECT_EQ(spec.model(), "mlp");
  EXPECT_EQ(spec.num_peers(), 2u);
}

TEST(JobSpecTest, BadTomlIsAClearError) {
  v1::JobSpec spec = DefaultJobSpec();
  Status typo = ApplyTomlString("inner_step = 5\n", spec);
  EXPECT_EQ(typo.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(typo.message().find("unknown job key 'inner_step'"), std::string::npos);
  Status type = ApplyTomlString("rounds = \"many\"\n", spec);
  EXPECT_NE(type.message().find("wrong type"), std::string::npos);
  Status syntax = ApplyTomlString("rounds = = 3\n", spec);
  EXPECT_NE(syntax.message().find("line 1"), std::string::npos) << syntax.ToString();
  Status mode = ApplyTomlString("mode = \"gossip\"\n", spec);
  EXPECT_NE(mode.message().find("unknown mode"), std::string::npos);
  Status missing = ApplyTomlFile("/nonexistent/job.toml", spec);
  EXPECT_FALSE(missing.ok());
}

TEST(JobSpecTest, ValidationNamesTheProblem) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_d_model(130);  // not divisible by 4 heads
  EXPECT_NE(ValidateJobSpec(spec).message().find("divisible"), std::string::npos);
  spec = DefaultJobSpec();
  spec.set_rounds(0);
  EXPECT_FALSE(ValidateJobSpec(spec).ok());
  spec = DefaultJobSpec();
  spec.set_mode(v1::MODE_UNSPECIFIED);
  EXPECT_FALSE(ValidateJobSpec(spec).ok());
  // Groups: diloco only, and a group of one would never average with anyone.
  spec = DefaultJobSpec();
  spec.set_mode(v1::MODE_DILOCO);
  spec.set_group_size(3);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec).ToString();
  spec.set_group_size(1);
  EXPECT_NE(ValidateJobSpec(spec).message().find("group_size"), std::string::npos);
  for (v1::Mode mode : {v1::MODE_DDP, v1::MODE_DILOCO_ASYNC}) {
    spec.set_mode(mode);
    spec.set_group_size(4);
    EXPECT_NE(ValidateJobSpec(spec).message().find("group_size needs diloco"), std::string::npos);
  }
}

TEST(JobSpecTest, InitialThetaDigestIsAHexJobKeyOfThirtyTwoBytes) {
  v1::JobSpec spec = DefaultJobSpec();
  const std::string hex(64, 'a');
  ASSERT_TRUE(ApplyTomlString("initial_theta_digest = \"" + hex + "\"", spec).ok());
  EXPECT_EQ(spec.initial_theta_digest(), std::string(32, '\xaa'));
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  for (const std::string bad : {std::string(63, 'a'), std::string(64, 'g'), std::string()}) {
    v1::JobSpec other = DefaultJobSpec();
    Status st = ApplyTomlString("initial_theta_digest = \"" + bad + "\"", other);
    EXPECT_NE(st.message().find("initial_theta_digest"), std::string::npos) << bad << ": " << st.ToString();
  }
  spec.set_initial_theta_digest(std::string(31, '\x01'));
  EXPECT_NE(ValidateJobSpec(spec).message().find("initial_theta_digest must be 32 bytes"), std::string::npos);
}

TEST(JobSpecTest, AsyncApplyStepDefaultsToMidRoundAndBelongsToAsyncJobs) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_mode(v1::MODE_DILOCO_ASYNC);
  spec.set_inner_steps(10);
  EXPECT_EQ(AsyncApplyStep(spec), 5u);
  spec.set_inner_steps(25);
  EXPECT_EQ(AsyncApplyStep(spec), 13u);
  spec.set_inner_steps(1);
  EXPECT_EQ(AsyncApplyStep(spec), 1u);
  spec.set_inner_steps(10);
  ASSERT_TRUE(ApplyTomlString("async_apply_step = 3\n", spec).ok());
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec).ToString();
  EXPECT_EQ(AsyncApplyStep(spec), 3u);
  spec.set_async_apply_step(11);
  EXPECT_NE(ValidateJobSpec(spec).message().find("async_apply_step cannot exceed inner_steps"), std::string::npos);
  spec.set_async_apply_step(10);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << "the end of the round: the one-round delay";
  for (v1::Mode mode : {v1::MODE_DDP, v1::MODE_DILOCO}) {
    spec.set_mode(mode);
    EXPECT_NE(ValidateJobSpec(spec).message().find("async_apply_step applies to diloco-async only"),
              std::string::npos);
  }
}

TEST(JobSpecTest, AsyncEagerFractionDefaultsToThreeQuartersAndBelongsToAsyncJobs) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_mode(v1::MODE_DILOCO_ASYNC);
  EXPECT_EQ(AsyncEagerFraction(spec), 0.75);
  ASSERT_TRUE(ApplyTomlString("async_eager_fraction = 0.5\n", spec).ok());
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec).ToString();
  EXPECT_EQ(AsyncEagerFraction(spec), 0.5);
  spec.set_async_eager_fraction(1.0);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << "1: the whole own Δ";
  for (double bad : {-0.1, 1.01, std::nan("")}) {
    spec.set_async_eager_fraction(bad);
    EXPECT_NE(ValidateJobSpec(spec).message().find("async_eager_fraction must be in (0,1]"), std::string::npos)
        << bad;
  }
  spec.set_async_eager_fraction(0.5);
  for (v1::Mode mode : {v1::MODE_DDP, v1::MODE_DILOCO}) {
    spec.set_mode(mode);
    EXPECT_NE(ValidateJobSpec(spec).message().find("async_eager_fraction applies to diloco-async only"),
              std::string::npos);
  }
}

TEST(JobSpecTest, AsyncApplyWhenReadyIsABooleanOfAsyncJobs) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_mode(v1::MODE_DILOCO_ASYNC);
  EXPECT_FALSE(spec.async_apply_when_ready()) << "off by default: runs repeat bit for bit";
  ASSERT_TRUE(ApplyTomlString("async_apply_when_ready = true\n", spec).ok());
  EXPECT_TRUE(spec.async_apply_when_ready());
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec).ToString();
  v1::JobSpec other = DefaultJobSpec();
  EXPECT_NE(ApplyTomlString("async_apply_when_ready = 1\n", other).message().find("must be true or false"),
            std::string::npos);
  for (v1::Mode mode : {v1::MODE_DDP, v1::MODE_DILOCO}) {
    spec.set_mode(mode);
    EXPECT_NE(ValidateJobSpec(spec).message().find("async_apply_when_ready applies to diloco-async only"),
              std::string::npos);
  }
}

TEST(JobSpecTest, EvalEveryEvaluatesOnItsCadenceAndAfterTheLastRound) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_rounds(7);
  for (uint64_t r = 0; r < 7; ++r) EXPECT_TRUE(EvaluatesAfterRound(spec, r)) << "unset: every round";
  ASSERT_TRUE(ApplyTomlString("eval_every = 3\n", spec).ok());
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  std::vector<uint64_t> evaluated;
  for (uint64_t r = 0; r < 7; ++r) {
    if (EvaluatesAfterRound(spec, r)) evaluated.push_back(r);
  }
  EXPECT_EQ(evaluated, (std::vector<uint64_t>{2, 5, 6}));
}

TEST(JobSpecTest, EvalBesideTrainingCoversEveryEvaluationButTheLast) {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_rounds(7);
  for (uint64_t r = 0; r < 7; ++r) EXPECT_FALSE(EvaluatesBesideTraining(spec, r)) << "off by default";
  ASSERT_TRUE(ApplyTomlString("eval_every = 3\neval_beside_training = true\n", spec).ok());
  EXPECT_TRUE(spec.eval_beside_training());
  std::vector<uint64_t> beside;
  for (uint64_t r = 0; r < 7; ++r) {
    if (EvaluatesBesideTraining(spec, r)) beside.push_back(r);
  }
  EXPECT_EQ(beside, (std::vector<uint64_t>{2, 5})) << "the last round's loss ends the job: never beside";
  EXPECT_NE(ApplyTomlString("eval_beside_training = 1\n", spec).message().find("eval_beside_training"),
            std::string::npos);
}

// Openings at least this large go peer to peer (verifier/opening_bulk.h); part of the job id.
TEST(JobSpecTest, OpeningBulkMinBytesIsAJobKeyAndNeverNegative) {
  v1::JobSpec spec = DefaultJobSpec();
  const std::string before = JobIdOf(spec);
  ASSERT_TRUE(ApplyTomlString("opening_bulk_min_bytes = 1\n", spec).ok());
  EXPECT_EQ(spec.opening_bulk_min_bytes(), 1u);
  EXPECT_NE(JobIdOf(spec), before);
  Status negative = ApplyTomlString("opening_bulk_min_bytes = -5\n", spec);
  EXPECT_EQ(negative.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(negative.message().find("opening_bulk_min_bytes"), std::string::npos) << negative.ToString();
  EXPECT_EQ(spec.opening_bulk_min_bytes(), 1u);
}

TEST(JobSpecTest, StreamsPerEdgeNeedTheRingPath) {
  v1::JobSpec spec = DefaultJobSpec();
  EXPECT_EQ(StreamsPerEdge(spec), 1u);
  ASSERT_TRUE(ApplyTomlString("streams = 4\n", spec).ok());
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec).ToString();
  EXPECT_EQ(StreamsPerEdge(spec), 4u);
  spec.set_mode(v1::MODE_DDP);
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << "DDP runs the ring too";
  spec.set_streams(17);
  EXPECT_NE(ValidateJobSpec(spec).message().find("streams must be 0..16"), std::string::npos);
  // Each of these sends the round over the butterfly, which has one connection per pair.
  const auto butterfly = [](v1::JobSpec s, const std::string& why) {
    s.set_streams(2);
    EXPECT_FALSE(UsesRing(s)) << why;
    EXPECT_NE(ValidateJobSpec(s).message().find("streams > 1 needs the ring path"), std::string::npos) << why;
  };
  v1::JobSpec diloco = DefaultJobSpec();
  v1::JobSpec with_codec = diloco;
  with_codec.set_codec("int8");
  butterfly(with_codec, "codec");
  v1::JobSpec robust = diloco;
  robust.set_aggregator("median");
  butterfly(robust, "aggregator");
  v1::JobSpec verified = diloco;
  verified.set_verify_samples(2);
  butterfly(verified, "verifying diloco binds contributions");
  verified.set_mode(v1::MODE_DDP);
  EXPECT_TRUE(UsesRing(verified)) << "a verifying DDP job binds nothing: the ring";
}

}  // namespace
}  // namespace tributary::runtime

namespace tributary::runtime {
namespace {

TEST(JobSpecTest, ShippedDemoTomlMatchesBuiltInDefaults) {
  v1::JobSpec from_file;  // every field empty: the file must set each one
  Status st = ApplyTomlFile(std::string(TRIBUTARY_SOURCE_DIR) + "/jobs/demo.toml", from_file);
  ASSERT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(JobIdOf(from_file), JobIdOf(DefaultJobSpec()))
      << DescribeJobSpec(from_file) << "\nvs\n" << DescribeJobSpec(DefaultJobSpec());
}

}  // namespace
}  // namespace tributary::runtime

namespace tributary::runtime {
namespace {

TEST(JobSpecTest, AdmissionKeysParseAndInviteTokensAreHashed) {
  v1::JobSpec spec = DefaultJobSpec();
  ASSERT_TRUE(ApplyTomlString("admission = \"invite\"\ninvite_tokens = [\"s3cret\"]\nmin_peers = 2\n", spec).ok());
  EXPECT_EQ(spec.admission(), v1::ADMISSION_INVITE);
  ASSERT_EQ(spec.invite_tokens_size(), 1);
  EXPECT_EQ(spec.invite_tokens(0).size(), 64u);
  EXPECT_EQ(spec.invite_tokens(0).find("s3cret"), std::string::npos) << "token must not travel";
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  EXPECT_FALSE(ApplyTomlString("admission = \"vip\"\n", spec).ok());
  EXPECT_FALSE(ApplyTomlString("allowed_keys = [\"abc\"]\n", spec).ok());
  v1::JobSpec allow = DefaultJobSpec();
  allow.set_admission(v1::ADMISSION_ALLOWLIST);
  EXPECT_NE(ValidateJobSpec(allow).message().find("allowed_keys"), std::string::npos);
  allow.set_min_peers(allow.num_peers() + 1);
  EXPECT_FALSE(ValidateJobSpec(allow).ok());
}

// Calibration files (tributary calibrate --out) go into the signed spec, from a flag or from
// the TOML file's `tolerance_calibrations` (relative to the file); a file that is not a
// calibration, two for one pair, or calibrations in a job whose steps are not local are refused.
TEST(JobSpecTest, ToleranceCalibrationsComeFromFilesAndAreValidated) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("tributary-calibrations-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto fitted = verifier::FitTolerance("gpu-class", "cpu-class", std::vector<verifier::DifferenceSample>{{1e-5, 1e-6}},
                                       4.0, 1);
  ASSERT_TRUE(fitted.ok());
  ASSERT_TRUE(WriteFileAtomically((dir / "gpu-on-cpu.calibration").string(), verifier::EncodeCalibration(*fitted)).ok());
  ASSERT_TRUE(WriteFileAtomically((dir / "junk.calibration").string(), "not a calibration").ok());

  v1::JobSpec spec = DefaultJobSpec();
  spec.set_mode(v1::MODE_DILOCO);
  ASSERT_TRUE(AddCalibrationFile((dir / "gpu-on-cpu.calibration").string(), spec).ok());
  EXPECT_EQ(spec.tolerance_calibrations_size(), 1);
  EXPECT_TRUE(ValidateJobSpec(spec).ok());
  EXPECT_NE(JobIdOf(spec), JobIdOf(DefaultJobSpec())) << "the calibrations are part of what peers sign up for";

  v1::JobSpec junk = DefaultJobSpec();
  Status st = AddCalibrationFile((dir / "junk.calibration").string(), junk);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(junk.tolerance_calibrations_size(), 0);
  EXPECT_FALSE(AddCalibrationFile((dir / "missing.calibration").string(), junk).ok());

  v1::JobSpec twice = spec;
  ASSERT_TRUE(AddCalibrationFile((dir / "gpu-on-cpu.calibration").string(), twice).ok());
  EXPECT_NE(ValidateJobSpec(twice).message().find("two tolerance calibrations"), std::string::npos);
  v1::JobSpec ddp = spec;
  ddp.set_mode(v1::MODE_DDP);
  EXPECT_NE(ValidateJobSpec(ddp).message().find("tolerance_calibrations need diloco"), std::string::npos);

  ASSERT_TRUE(WriteFileAtomically((dir / "job.toml").string(),
                                  "mode = \"diloco\"\ntolerance_calibrations = [\"gpu-on-cpu.calibration\"]\n").ok());
  v1::JobSpec from_toml = DefaultJobSpec();
  ASSERT_TRUE(ApplyTomlFile((dir / "job.toml").string(), from_toml).ok());
  EXPECT_EQ(JobIdOf(from_toml), JobIdOf(spec));
  v1::JobSpec bad_toml = DefaultJobSpec();
  EXPECT_FALSE(ApplyTomlString("tolerance_calibrations = [\"junk.calibration\"]", bad_toml, dir.string()).ok());
  EXPECT_FALSE(ApplyTomlString("tolerance_calibrations = \"gpu-on-cpu.calibration\"", bad_toml, dir.string()).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace tributary::runtime
