// A worker's training state as flat float32 vectors, and the per-step inputs a replay needs,
// free of torch: the trainer (runtime/), the verifier library, the coordinator and tests share
// these types without libtorch's headers.
//
// Parameters and AdamW moments are in named_parameters() order. adam_step == 0 means a fresh
// optimiser, and then both moment vectors are empty; otherwise both hold one value per parameter.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/digest.h"
#include "core/status.h"

namespace tributary::verifier {

struct TrainingState {
  std::vector<float> params;
  int64_t adam_step = 0;
  std::vector<float> exp_avg;
  std::vector<float> exp_avg_sq;
};

// SHA-256("tributary.verifier.adamw.v1" ‖ u64 step ‖ u64 n ‖ exp_avg bytes ‖ u64 n ‖
// exp_avg_sq bytes).
Digest OptimizerDigest(const TrainingState& state);

// Canonical bytes ("TRIBTSTATE1" ‖ u64 n ‖ θ ‖ u64 step ‖ u64 m ‖ exp_avg ‖ u64 m ‖ exp_avg_sq),
// the form an opening carries. Decode is strict: at most `max_params` values per vector, moments
// empty iff step == 0 and otherwise as long as θ, no trailing bytes. It does not check finiteness
// (a replay of non-finite values fails on its own; the state digest is what is compared).
std::string EncodeTrainingState(const TrainingState& state);
Result<TrainingState> DecodeTrainingState(std::string_view bytes, uint64_t max_params);

struct AdamWHyper {  // one step's optimiser settings; the trainer's betas and default eps
  double lr = 0;
  double weight_decay = 0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 0;  // 0 = no clipping
};

struct BatchCoordinates {  // mirrors models::BatchKey plus the batch shape
  uint64_t job_seed = 0;
  uint32_t shard = 0;
  uint32_t num_shards = 1;
  uint64_t round = 0;
  uint64_t step = 0;
  int batch_size = 0;
  int context = 0;
};

struct StepResult {
  TrainingState after;
  double loss = 0;
  Digest batch{};
};

struct GradientResult {
  std::vector<float> gradient;  // raw (unclipped), named_parameters() order
  double loss = 0;
  Digest batch{};
};

}  // namespace tributary::verifier
