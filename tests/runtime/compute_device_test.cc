// The compute device: parsing, and (on a machine with a CUDA device; skipped elsewhere) that the
// trainer and the step kernel run there, hand everything back on the CPU, and land where a CPU
// run lands up to floating-point reassociation.
#include "runtime/compute_device.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "runtime/job_spec.h"
#include "runtime/step_kernel.h"
#include "runtime/trainer.h"
#include "runtime/training_data.h"
#include "tests/common/test_corpus.h"
#include "verifier/determinism.h"
#include "verifier/replay.h"

namespace tributary::runtime {
namespace {

v1::JobSpec SmallSpec() {
  v1::JobSpec spec = DefaultJobSpec();
  spec.set_n_layer(1);
  spec.set_n_head(2);
  spec.set_d_model(32);
  spec.set_context(16);
  spec.set_batch_size(8);
  spec.set_inner_steps(4);
  spec.set_rounds(6);
  spec.set_warmup_steps(2);
  spec.set_eval_batches(2);
  spec.set_num_peers(1);
  return spec;
}

TEST(ComputeDeviceTest, ParsesCpuAndRejectsNonsense) {
  EXPECT_EQ(*ResolveComputeDevice("cpu"), "cpu");
  for (const char* bad : {"", "gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda0", "cuda:1x"}) {
    auto r = ResolveComputeDevice(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ComputeDeviceTest, CudaIsRefusedClearlyWhereAbsentAndResolvedWherePresent) {
  auto r = ResolveComputeDevice("cuda");
  if (!CudaAvailable()) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(r.status().message().find("no CUDA device"), std::string::npos) << r.status().message();
    return;
  }
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "cuda:0");
  auto beyond = ResolveComputeDevice("cuda:4096");
  ASSERT_FALSE(beyond.ok());
  EXPECT_EQ(beyond.status().code(), StatusCode::kFailedPrecondition);
}

TEST(ComputeDeviceTest, TrainerRefusesADeviceThisMachineLacks) {
  if (CudaAvailable()) GTEST_SKIP() << "this machine has CUDA";
  const std::string dir = ::tributary::testing::MakeTempCorpus("device-refuse");
  const v1::JobSpec spec = SmallSpec();
  auto data = LoadTrainingData(dir, spec);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  auto trainer = Trainer::Create(spec, *data, WorkerPlacement{}, "cuda");
  ASSERT_FALSE(trainer.ok());
  EXPECT_EQ(trainer.status().code(), StatusCode::kFailedPrecondition);
  auto kernel = StepKernel::Create(spec, data->dataset, data->vocab_size, "cuda:0");
  ASSERT_FALSE(kernel.ok());
  EXPECT_EQ(kernel.status().code(), StatusCode::kFailedPrecondition);
  std::filesystem::remove_all(dir);
}

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!CudaAvailable()) GTEST_SKIP() << "no CUDA device on this machine";
    PinComputeThreads(1);
    dir_ = ::tributary::testing::MakeTempCorpus("cuda");
    spec_ = SmallSpec();
    auto data = LoadTrainingData(dir_, spec_);
    ASSERT_TRUE(data.ok()) << data.status().ToString();
    data_ = *data;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::string dir_;
  v1::JobSpec spec_;
  TrainingData data_;
};

TEST_F(CudaTest, DeterminismClassNamesTheGpuAndIsNotBitwise) {
  const auto c = verifier::LocalDeterminismClass(1, "cuda:0");
  EXPECT_EQ(c.device.rfind("cuda:", 0), 0u) << c.device;
  EXPECT_EQ(c.device.find("unknown"), std::string::npos) << c.device;
  EXPECT_FALSE(c.bitwise());
  auto parsed = verifier::DeterminismClass::Parse(c.Canonical());
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->Canonical(), c.Canonical());
}

TEST_F(CudaTest, TrainerOnTheGpuTrainsAndLandsNearTheCpuRun) {
  for (v1::Mode mode : {v1::MODE_DILOCO, v1::MODE_DDP}) {
    v1::JobSpec spec = spec_;
    spec.set_mode(mode);
    auto gpu = Trainer::Create(spec, data_, WorkerPlacement{}, "cuda");
    auto cpu = Trainer::Create(spec, data_, WorkerPlacement{}, "cpu");
    ASSERT_TRUE(gpu.ok() && cpu.ok());
    EXPECT_EQ((*gpu)->ThetaDigest(), (*cpu)->ThetaDigest()) << "θ_0 is built on the CPU from the seed";
    auto before = (*gpu)->EvalLoss();
    ASSERT_TRUE(before.ok()) << before.status().ToString();
    const Averager alone = [](std::span<float>) { return Status::Ok(); };
    for (uint32_t r = 0; r < spec.rounds(); ++r) {
      auto g = (*gpu)->RunRound(alone);
      auto c = (*cpu)->RunRound(alone);
      ASSERT_TRUE(g.ok()) << g.status().ToString();
      ASSERT_TRUE(c.ok()) << c.status().ToString();
      EXPECT_TRUE(std::isfinite(g->train_loss));
    }
    auto gpu_loss = (*gpu)->EvalLoss();
    auto cpu_loss = (*cpu)->EvalLoss();
    ASSERT_TRUE(gpu_loss.ok() && cpu_loss.ok());
    EXPECT_LT(*gpu_loss, *before) << "mode " << mode;
    // Same arithmetic, another summation order: the runs agree to well under 1 %.
    EXPECT_LT(std::fabs(*gpu_loss - *cpu_loss) / *cpu_loss, 0.01) << *gpu_loss << " vs " << *cpu_loss;
  }
}

TEST_F(CudaTest, StepKernelOnTheGpuReplaysACpuStepWithinReassociationError) {
  auto gpu = StepKernel::Create(spec_, data_.dataset, data_.vocab_size, "cuda:0");
  auto cpu = StepKernel::Create(spec_, data_.dataset, data_.vocab_size, "cpu");
  ASSERT_TRUE(gpu.ok() && cpu.ok());
  auto state = (*cpu)->InitialState(spec_.seed());
  ASSERT_TRUE(state.ok());
  verifier::TrainingState s = *state;
  for (uint64_t t = 0; t < 3; ++t) {
    const auto batch = InnerBatch(spec_, 0, 1, 0, 0, t);
    const auto hyper = InnerHyper(spec_, t);
    auto c = (*cpu)->LocalStep(s, batch, hyper);
    auto g = (*gpu)->LocalStep(s, batch, hyper);
    ASSERT_TRUE(c.ok() && g.ok());
    EXPECT_EQ(c->batch, g->batch);
    auto d = verifier::MeasureStepDifference(s, c->after, c->loss, g->after, g->loss);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_LT(d->relative_l2, 1e-3) << "step " << t;
    EXPECT_LT(d->loss_relative, 1e-4) << "step " << t;
    // The state digest of the same state is the same on either device (it is hashed on the CPU).
    EXPECT_EQ(*(*gpu)->StateDigest(c->after), *(*cpu)->StateDigest(c->after));
    s = c->after;
  }
}

}  // namespace
}  // namespace tributary::runtime
