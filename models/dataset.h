// Token windows for training and validation.
//
// The token stream is split once: validation = the last floor(n * validation_fraction) tokens,
// train = everything before. Train is cut into `num_shards` contiguous, disjoint, near-equal
// shards (shard s = [s*n/k, (s+1)*n/k) of the train split). A training batch is a pure function of
// its BatchKey (plus batch size and context): the window starts come only from
// SeedStream(DeriveSeed({job_seed, shard, num_shards, round, step})), so any peer or verifier can
// recompute exactly which tokens a worker was supposed to train on.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/digest.h"
#include "core/status.h"

namespace tributary::models {

// int64 tensors of shape [B, T] on the CPU; targets[b][t] = inputs[b][t + 1] in the token stream.
struct Batch {
  torch::Tensor inputs;
  torch::Tensor targets;
};

struct BatchKey {
  uint64_t job_seed = 0;
  uint32_t shard = 0;
  uint32_t num_shards = 1;
  uint64_t round = 0;
  uint64_t step = 0;
};

// Half-open range of absolute token indices.
struct TokenRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

class TokenDataset {
 public:
  // InvalidArgument unless 0 <= validation_fraction < 1 and the train split is non-empty.
  static Result<TokenDataset> Create(std::vector<int64_t> tokens, double validation_fraction);

  // Batch row b is the window of context+1 tokens starting at TrainWindowStarts(...)[b]; every
  // window lies entirely inside the key's shard. InvalidArgument if batch_size or context < 1,
  // num_shards == 0, shard >= num_shards, or the shard is shorter than context + 1 tokens.
  Result<Batch> TrainBatch(const BatchKey& key, int batch_size, int context) const;
  // The absolute window start offsets TrainBatch uses, in row order (the b-th draw of the
  // key's SeedStream, uniform over all window starts inside the shard).
  Result<std::vector<int64_t>> TrainWindowStarts(const BatchKey& key, int batch_size,
                                                 int context) const;

  // `count` batches of fixed windows spread evenly over the validation split (first window at its
  // start, last window ending at its end). Independent of any seed. InvalidArgument on
  // non-positive sizes or a validation split shorter than context + 1 tokens.
  Result<std::vector<Batch>> ValidationBatches(int count, int batch_size, int context) const;

  TokenRange train_range() const { return {0, train_tokens_}; }
  TokenRange validation_range() const { return {train_tokens_, num_tokens()}; }
  Result<TokenRange> ShardRange(uint32_t shard, uint32_t num_shards) const;
  int64_t num_tokens() const { return static_cast<int64_t>(tokens_->size()); }

 private:
  TokenDataset(std::shared_ptr<const std::vector<int64_t>> tokens, int64_t train_tokens)
      : tokens_(std::move(tokens)), train_tokens_(train_tokens) {}
  Batch Gather(const std::vector<int64_t>& starts, int context) const;

  std::shared_ptr<const std::vector<int64_t>> tokens_;  // immutable; copies share it
  int64_t train_tokens_ = 0;
};

// SHA-256 over the batch shape (B, T as u64) followed by the little-endian int64 bytes of inputs
// and then of targets; targets are included because their last column is not part of inputs.
Digest BatchDigest(const Batch& batch);

}  // namespace tributary::models
