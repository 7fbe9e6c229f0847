// Replaying one training step exactly: the verifier's API over runtime::StepKernel, which runs
// the trainer's own step code (runtime/step_kernel_internal.h), so a replay cannot drift from
// training. This layer adds the determinism-class thread check.
//
// The header is free of torch: states travel as flat float32 vectors in named_parameters()
// order, so the coordinator, referees and tests can hold them without torch's headers.
//
// Bitwise contract: on one determinism class (same libtorch build, same pinned thread count,
// same kernels) LocalStep and Gradient are pure functions of their inputs; two calls, in one
// process or in two, give identical bits. Not thread-safe: one StepReplayer per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/digest.h"
#include "core/status.h"
#include "proto/tributary.pb.h"
#include "verifier/replay.h"
#include "verifier/training_state.h"

namespace tributary::models {
class TokenDataset;
}

namespace tributary::verifier {

struct ReplayModelConfig {  // mirrors models::ModelConfig
  std::string kind = "gpt";
  int vocab_size = 0;
  int n_layer = 2;
  int n_head = 4;
  int d_model = 128;
  int context = 64;
  int mlp_hidden = 256;
};

class StepReplayer {
 public:
  // FailedPrecondition unless torch runs exactly `threads` intra-op threads (a replay at another
  // thread count is another determinism class); InvalidArgument for a bad model config.
  static Result<std::unique_ptr<StepReplayer>> Create(
      const ReplayModelConfig& config, std::shared_ptr<const models::TokenDataset> dataset,
      int threads);
  ~StepReplayer();

  // The model's initial parameters for `init_seed` (= the trainer's θ_0) and a fresh optimiser.
  Result<TrainingState> InitialState(uint64_t init_seed);
  int64_t num_parameters() const;

  // models::ParameterDigest of the model holding `params` (= Trainer::ThetaDigest for the same
  // θ). InvalidArgument for a wrong length.
  Result<Digest> ParametersDigest(const std::vector<float>& params);
  // StepStateDigest(ParametersDigest, OptimizerDigest).
  Result<Digest> StateDigest(const TrainingState& state);

  // One local (DiLoCo inner) step: forward, backward, clip, AdamW. InvalidArgument for a
  // malformed state or batch coordinates the dataset cannot serve; FailedPrecondition if the
  // loss is non-finite.
  Result<StepResult> LocalStep(const TrainingState& before, const BatchCoordinates& batch,
                               const AdamWHyper& hyper);
  // A data-parallel worker's contribution: the raw gradient of the loss at `params`.
  Result<GradientResult> Gradient(const std::vector<float>& params, const BatchCoordinates& batch);

  // LocalStep as leaf fields: state_before = StateDigest(before), batch, update =
  // StateDigest(after), loss bits. `after` (optional) receives the post-step state.
  Result<ReplayedStep> ReplayLocalStep(const TrainingState& before, const BatchCoordinates& batch,
                                       const AdamWHyper& hyper, TrainingState* after = nullptr);

 private:
  struct Impl;
  explicit StepReplayer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- job-spec adapters (delegating to runtime/step_kernel.h) -----------------------------------

ReplayModelConfig ReplayModelConfigOf(const v1::JobSpec& spec, int vocab_size);
// The trainer's inner learning rate for a global step: linear warm-up, then cosine decay to 10%
// of the peak over rounds × inner_steps.
double InnerLearningRate(const v1::JobSpec& spec, uint64_t global_step);
AdamWHyper HyperFor(const v1::JobSpec& spec, uint64_t round, uint64_t step);
BatchCoordinates BatchFor(const v1::JobSpec& spec, uint32_t shard, uint32_t num_shards,
                          uint32_t batch_size, uint64_t round, uint64_t step);

}  // namespace tributary::verifier
