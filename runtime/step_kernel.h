// One inner training step, exactly as runtime::Trainer runs it, from an explicit state: the
// single implementation that training, the verifier's replays and referees share (so a replay
// cannot drift from training). Trainer's own steps call the same internal functions
// (runtime/step_kernel_internal.h).
//
// Torch-free header: states are flat float32 vectors (verifier/training_state.h). Bitwise
// contract: on one determinism class (same libtorch build, same pinned thread count, same
// kernels) every call is a pure function of its inputs. Not thread-safe: one kernel per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "proto/tributary.pb.h"
#include "verifier/replay.h"
#include "verifier/training_state.h"

namespace tributary::models {
class TokenDataset;
}

namespace tributary::runtime {

// The inner learning rate for a global step (round × inner_steps + step): linear warm-up, then
// cosine decay to 10 % of the peak over rounds × inner_steps.
double InnerLearningRate(const v1::JobSpec& spec, uint64_t global_step);
// The optimiser settings of inner step `global_step` of `spec` (lr above, the spec's weight
// decay and clip, AdamW β = (0.9, 0.95), eps 1e-8).
verifier::AdamWHyper InnerHyper(const v1::JobSpec& spec, uint64_t global_step);
// The batch of (round, step) for a worker of shard `shard` of `num_shards` (batch_size 0 = the
// spec's).
verifier::BatchCoordinates InnerBatch(const v1::JobSpec& spec, uint32_t shard, uint32_t num_shards,
                                      uint32_t batch_size, uint64_t round, uint64_t step);

// Digest (models::ParameterDigest) of θ_0 for `spec` with `vocab_size` tokens: the model its
// seed initialises on the CPU, which every peer's Trainer starts from whatever its device.
Result<Digest> InitialThetaDigest(const v1::JobSpec& spec, int vocab_size);

// The intra-op thread count torch runs with in this process (part of the determinism class).
int ComputeThreads();

class StepKernel {
 public:
  // The spec's model with `vocab_size` tokens over `dataset`, stepping on `device`
  // (runtime/compute_device.h). InvalidArgument for a bad model config or a missing dataset;
  // FailedPrecondition for a device this machine lacks.
  static Result<std::unique_ptr<StepKernel>> Create(const v1::JobSpec& spec,
                                                    std::shared_ptr<const models::TokenDataset> dataset,
                                                    int vocab_size, std::string_view device = "cpu");
  ~StepKernel();

  int64_t num_parameters() const;
  // θ_0 of the model for `init_seed` (= a fresh Trainer's θ) and a fresh optimiser.
  Result<verifier::TrainingState> InitialState(uint64_t init_seed);
  // models::ParameterDigest of the model holding `params` (= Trainer::ThetaDigest for the same
  // θ). InvalidArgument for a wrong length.
  Result<Digest> ParametersDigest(const std::vector<float>& params);
  // verifier::StepStateDigest(ParametersDigest, verifier::OptimizerDigest).
  Result<Digest> StateDigest(const verifier::TrainingState& state);

  // One local (DiLoCo inner) step: forward, backward, clip, AdamW. InvalidArgument for a
  // malformed state or batch coordinates the dataset cannot serve; FailedPrecondition if the
  // loss is non-finite.
  Result<verifier::StepResult> LocalStep(const verifier::TrainingState& before,
                                         const verifier::BatchCoordinates& batch,
                                         const verifier::AdamWHyper& hyper);
  // A data-parallel worker's contribution: the raw (unclipped) gradient at `params`.
  Result<verifier::GradientResult> Gradient(const std::vector<float>& params,
                                            const verifier::BatchCoordinates& batch);
  // LocalStep as leaf fields: state_before = StateDigest(before), batch, update =
  // StateDigest(after), loss bits. `after` (optional) receives the post-step state.
  Result<verifier::ReplayedStep> ReplayLocalStep(const verifier::TrainingState& before,
                                                 const verifier::BatchCoordinates& batch,
                                                 const verifier::AdamWHyper& hyper,
                                                 verifier::TrainingState* after = nullptr);
  // A DDP leaf: state_before = StateDigest(before), batch, update = FloatsDigest(raw gradient).
  Result<verifier::ReplayedStep> ReplayGradientStep(const verifier::TrainingState& before,
                                                    const verifier::BatchCoordinates& batch);

 private:
  struct Impl;
  explicit StepKernel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tributary::runtime
